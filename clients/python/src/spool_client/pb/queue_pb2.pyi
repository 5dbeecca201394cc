import datetime

from google.protobuf import empty_pb2 as _empty_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FilterType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FILTER_TYPE_UNSPECIFIED: _ClassVar[FilterType]
    FILTER_TYPE_TAGS: _ClassVar[FilterType]
    FILTER_TYPE_ROUTING_KEYS: _ClassVar[FilterType]
FILTER_TYPE_UNSPECIFIED: FilterType
FILTER_TYPE_TAGS: FilterType
FILTER_TYPE_ROUTING_KEYS: FilterType

class DeadLetterPolicy(_message.Message):
    __slots__ = ("dead_letter_queue", "max_receive_count", "max_time_to_live_seconds")
    DEAD_LETTER_QUEUE_FIELD_NUMBER: _ClassVar[int]
    MAX_RECEIVE_COUNT_FIELD_NUMBER: _ClassVar[int]
    MAX_TIME_TO_LIVE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    dead_letter_queue: str
    max_receive_count: int
    max_time_to_live_seconds: int
    def __init__(self, dead_letter_queue: _Optional[str] = ..., max_receive_count: _Optional[int] = ..., max_time_to_live_seconds: _Optional[int] = ...) -> None: ...

class QueueAttributes(_message.Message):
    __slots__ = ("visibility_timeout_seconds", "polling_wait_seconds", "max_message_size", "message_retention_seconds", "rewind_seconds", "max_backlog", "deduplication_window_seconds", "dead_letter_policy", "max_bytes")
    VISIBILITY_TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    POLLING_WAIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_RETENTION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    REWIND_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MAX_BACKLOG_FIELD_NUMBER: _ClassVar[int]
    DEDUPLICATION_WINDOW_SECONDS_FIELD_NUMBER: _ClassVar[int]
    DEAD_LETTER_POLICY_FIELD_NUMBER: _ClassVar[int]
    MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    visibility_timeout_seconds: int
    polling_wait_seconds: int
    max_message_size: int
    message_retention_seconds: int
    rewind_seconds: int
    max_backlog: int
    deduplication_window_seconds: int
    dead_letter_policy: DeadLetterPolicy
    max_bytes: int
    def __init__(self, visibility_timeout_seconds: _Optional[int] = ..., polling_wait_seconds: _Optional[int] = ..., max_message_size: _Optional[int] = ..., message_retention_seconds: _Optional[int] = ..., rewind_seconds: _Optional[int] = ..., max_backlog: _Optional[int] = ..., deduplication_window_seconds: _Optional[int] = ..., dead_letter_policy: _Optional[_Union[DeadLetterPolicy, _Mapping]] = ..., max_bytes: _Optional[int] = ...) -> None: ...

class QueueStats(_message.Message):
    __slots__ = ("active_messages", "inactive_messages", "delayed_messages", "rewindable_messages", "oldest_message_time", "backlog_bytes")
    ACTIVE_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    INACTIVE_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    DELAYED_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    REWINDABLE_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    OLDEST_MESSAGE_TIME_FIELD_NUMBER: _ClassVar[int]
    BACKLOG_BYTES_FIELD_NUMBER: _ClassVar[int]
    active_messages: int
    inactive_messages: int
    delayed_messages: int
    rewindable_messages: int
    oldest_message_time: _timestamp_pb2.Timestamp
    backlog_bytes: int
    def __init__(self, active_messages: _Optional[int] = ..., inactive_messages: _Optional[int] = ..., delayed_messages: _Optional[int] = ..., rewindable_messages: _Optional[int] = ..., oldest_message_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., backlog_bytes: _Optional[int] = ...) -> None: ...

class Queue(_message.Message):
    __slots__ = ("name", "attributes", "stats", "create_time", "update_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    attributes: QueueAttributes
    stats: QueueStats
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., attributes: _Optional[_Union[QueueAttributes, _Mapping]] = ..., stats: _Optional[_Union[QueueStats, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateQueueRequest(_message.Message):
    __slots__ = ("queue_name", "attributes")
    QUEUE_NAME_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    queue_name: str
    attributes: QueueAttributes
    def __init__(self, queue_name: _Optional[str] = ..., attributes: _Optional[_Union[QueueAttributes, _Mapping]] = ...) -> None: ...

class GetQueueRequest(_message.Message):
    __slots__ = ("queue_name",)
    QUEUE_NAME_FIELD_NUMBER: _ClassVar[int]
    queue_name: str
    def __init__(self, queue_name: _Optional[str] = ...) -> None: ...

class UpdateQueueRequest(_message.Message):
    __slots__ = ("queue_name", "attributes")
    QUEUE_NAME_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    queue_name: str
    attributes: QueueAttributes
    def __init__(self, queue_name: _Optional[str] = ..., attributes: _Optional[_Union[QueueAttributes, _Mapping]] = ...) -> None: ...

class DeleteQueueRequest(_message.Message):
    __slots__ = ("queue_name",)
    QUEUE_NAME_FIELD_NUMBER: _ClassVar[int]
    queue_name: str
    def __init__(self, queue_name: _Optional[str] = ...) -> None: ...

class ListQueuesRequest(_message.Message):
    __slots__ = ("prefix", "page_size", "page_token")
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    prefix: str
    page_size: int
    page_token: str
    def __init__(self, prefix: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListQueuesResponse(_message.Message):
    __slots__ = ("queues", "next_page_token", "total_count")
    QUEUES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_COUNT_FIELD_NUMBER: _ClassVar[int]
    queues: _containers.RepeatedCompositeFieldContainer[Queue]
    next_page_token: str
    total_count: int
    def __init__(self, queues: _Optional[_Iterable[_Union[Queue, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., total_count: _Optional[int] = ...) -> None: ...

class RewindQueueRequest(_message.Message):
    __slots__ = ("queue_name", "start_time")
    QUEUE_NAME_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    queue_name: str
    start_time: _timestamp_pb2.Timestamp
    def __init__(self, queue_name: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RewindQueueResponse(_message.Message):
    __slots__ = ("restored_messages",)
    RESTORED_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    restored_messages: int
    def __init__(self, restored_messages: _Optional[int] = ...) -> None: ...

class SendMessageRequest(_message.Message):
    __slots__ = ("queue_name", "body", "delay_seconds", "attributes", "deduplication_id")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    QUEUE_NAME_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    DELAY_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    DEDUPLICATION_ID_FIELD_NUMBER: _ClassVar[int]
    queue_name: str
    body: bytes
    delay_seconds: int
    attributes: _containers.ScalarMap[str, str]
    deduplication_id: str
    def __init__(self, queue_name: _Optional[str] = ..., body: _Optional[bytes] = ..., delay_seconds: _Optional[int] = ..., attributes: _Optional[_Mapping[str, str]] = ..., deduplication_id: _Optional[str] = ...) -> None: ...

class SendMessageResponse(_message.Message):
    __slots__ = ("message_id",)
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    message_id: str
    def __init__(self, message_id: _Optional[str] = ...) -> None: ...

class BatchSendEntry(_message.Message):
    __slots__ = ("body", "delay_seconds", "attributes", "deduplication_id")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    BODY_FIELD_NUMBER: _ClassVar[int]
    DELAY_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    DEDUPLICATION_ID_FIELD_NUMBER: _ClassVar[int]
    body: bytes
    delay_seconds: int
    attributes: _containers.ScalarMap[str, str]
    deduplication_id: str
    def __init__(self, body: _Optional[bytes] = ..., delay_seconds: _Optional[int] = ..., attributes: _Optional[_Mapping[str, str]] = ..., deduplication_id: _Optional[str] = ...) -> None: ...

class BatchSendMessagesRequest(_message.Message):
    __slots__ = ("queue_name", "entries")
    QUEUE_NAME_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    queue_name: str
    entries: _containers.RepeatedCompositeFieldContainer[BatchSendEntry]
    def __init__(self, queue_name: _Optional[str] = ..., entries: _Optional[_Iterable[_Union[BatchSendEntry, _Mapping]]] = ...) -> None: ...

class BatchSendMessagesResponse(_message.Message):
    __slots__ = ("message_ids",)
    MESSAGE_IDS_FIELD_NUMBER: _ClassVar[int]
    message_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, message_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class ReceiveMessagesRequest(_message.Message):
    __slots__ = ("queue_name", "max_messages", "wait_seconds", "visibility_timeout_seconds")
    QUEUE_NAME_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    WAIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    VISIBILITY_TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    queue_name: str
    max_messages: int
    wait_seconds: int
    visibility_timeout_seconds: int
    def __init__(self, queue_name: _Optional[str] = ..., max_messages: _Optional[int] = ..., wait_seconds: _Optional[int] = ..., visibility_timeout_seconds: _Optional[int] = ...) -> None: ...

class ReceivedMessage(_message.Message):
    __slots__ = ("message_id", "receipt_handle", "body", "enqueue_time", "first_dequeue_time", "next_visible_time", "dequeue_count", "attributes", "dead_letter_source_queue", "dead_letter_receive_count", "source_topic")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_HANDLE_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    ENQUEUE_TIME_FIELD_NUMBER: _ClassVar[int]
    FIRST_DEQUEUE_TIME_FIELD_NUMBER: _ClassVar[int]
    NEXT_VISIBLE_TIME_FIELD_NUMBER: _ClassVar[int]
    DEQUEUE_COUNT_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    DEAD_LETTER_SOURCE_QUEUE_FIELD_NUMBER: _ClassVar[int]
    DEAD_LETTER_RECEIVE_COUNT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_TOPIC_FIELD_NUMBER: _ClassVar[int]
    message_id: str
    receipt_handle: str
    body: bytes
    enqueue_time: _timestamp_pb2.Timestamp
    first_dequeue_time: _timestamp_pb2.Timestamp
    next_visible_time: _timestamp_pb2.Timestamp
    dequeue_count: int
    attributes: _containers.ScalarMap[str, str]
    dead_letter_source_queue: str
    dead_letter_receive_count: int
    source_topic: str
    def __init__(self, message_id: _Optional[str] = ..., receipt_handle: _Optional[str] = ..., body: _Optional[bytes] = ..., enqueue_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., first_dequeue_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., next_visible_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., dequeue_count: _Optional[int] = ..., attributes: _Optional[_Mapping[str, str]] = ..., dead_letter_source_queue: _Optional[str] = ..., dead_letter_receive_count: _Optional[int] = ..., source_topic: _Optional[str] = ...) -> None: ...

class DeleteMessageRequest(_message.Message):
    __slots__ = ("queue_name", "receipt_handle")
    QUEUE_NAME_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_HANDLE_FIELD_NUMBER: _ClassVar[int]
    queue_name: str
    receipt_handle: str
    def __init__(self, queue_name: _Optional[str] = ..., receipt_handle: _Optional[str] = ...) -> None: ...

class BatchDeleteMessagesRequest(_message.Message):
    __slots__ = ("queue_name", "receipt_handles")
    QUEUE_NAME_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_HANDLES_FIELD_NUMBER: _ClassVar[int]
    queue_name: str
    receipt_handles: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, queue_name: _Optional[str] = ..., receipt_handles: _Optional[_Iterable[str]] = ...) -> None: ...

class DeleteFailure(_message.Message):
    __slots__ = ("receipt_handle", "code", "message", "cmq_code")
    RECEIPT_HANDLE_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CMQ_CODE_FIELD_NUMBER: _ClassVar[int]
    receipt_handle: str
    code: int
    message: str
    cmq_code: int
    def __init__(self, receipt_handle: _Optional[str] = ..., code: _Optional[int] = ..., message: _Optional[str] = ..., cmq_code: _Optional[int] = ...) -> None: ...

class BatchDeleteMessagesResponse(_message.Message):
    __slots__ = ("failures",)
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    failures: _containers.RepeatedCompositeFieldContainer[DeleteFailure]
    def __init__(self, failures: _Optional[_Iterable[_Union[DeleteFailure, _Mapping]]] = ...) -> None: ...

class ChangeMessageVisibilityRequest(_message.Message):
    __slots__ = ("queue_name", "receipt_handle", "visibility_timeout_seconds")
    QUEUE_NAME_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_HANDLE_FIELD_NUMBER: _ClassVar[int]
    VISIBILITY_TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    queue_name: str
    receipt_handle: str
    visibility_timeout_seconds: int
    def __init__(self, queue_name: _Optional[str] = ..., receipt_handle: _Optional[str] = ..., visibility_timeout_seconds: _Optional[int] = ...) -> None: ...

class ChangeMessageVisibilityResponse(_message.Message):
    __slots__ = ("next_visible_time",)
    NEXT_VISIBLE_TIME_FIELD_NUMBER: _ClassVar[int]
    next_visible_time: _timestamp_pb2.Timestamp
    def __init__(self, next_visible_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ChangeVisibilityEntry(_message.Message):
    __slots__ = ("receipt_handle", "visibility_timeout_seconds")
    RECEIPT_HANDLE_FIELD_NUMBER: _ClassVar[int]
    VISIBILITY_TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    receipt_handle: str
    visibility_timeout_seconds: int
    def __init__(self, receipt_handle: _Optional[str] = ..., visibility_timeout_seconds: _Optional[int] = ...) -> None: ...

class BatchChangeMessageVisibilityRequest(_message.Message):
    __slots__ = ("queue_name", "entries")
    QUEUE_NAME_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    queue_name: str
    entries: _containers.RepeatedCompositeFieldContainer[ChangeVisibilityEntry]
    def __init__(self, queue_name: _Optional[str] = ..., entries: _Optional[_Iterable[_Union[ChangeVisibilityEntry, _Mapping]]] = ...) -> None: ...

class ChangedVisibility(_message.Message):
    __slots__ = ("index", "next_visible_time")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    NEXT_VISIBLE_TIME_FIELD_NUMBER: _ClassVar[int]
    index: int
    next_visible_time: _timestamp_pb2.Timestamp
    def __init__(self, index: _Optional[int] = ..., next_visible_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ChangeVisibilityFailure(_message.Message):
    __slots__ = ("index", "receipt_handle", "code", "message", "cmq_code")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_HANDLE_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CMQ_CODE_FIELD_NUMBER: _ClassVar[int]
    index: int
    receipt_handle: str
    code: int
    message: str
    cmq_code: int
    def __init__(self, index: _Optional[int] = ..., receipt_handle: _Optional[str] = ..., code: _Optional[int] = ..., message: _Optional[str] = ..., cmq_code: _Optional[int] = ...) -> None: ...

class BatchChangeMessageVisibilityResponse(_message.Message):
    __slots__ = ("changed", "failures")
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    changed: _containers.RepeatedCompositeFieldContainer[ChangedVisibility]
    failures: _containers.RepeatedCompositeFieldContainer[ChangeVisibilityFailure]
    def __init__(self, changed: _Optional[_Iterable[_Union[ChangedVisibility, _Mapping]]] = ..., failures: _Optional[_Iterable[_Union[ChangeVisibilityFailure, _Mapping]]] = ...) -> None: ...

class PurgeQueueRequest(_message.Message):
    __slots__ = ("queue_name",)
    QUEUE_NAME_FIELD_NUMBER: _ClassVar[int]
    queue_name: str
    def __init__(self, queue_name: _Optional[str] = ...) -> None: ...

class PurgeQueueResponse(_message.Message):
    __slots__ = ("purged_messages",)
    PURGED_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    purged_messages: int
    def __init__(self, purged_messages: _Optional[int] = ...) -> None: ...

class PeekMessagesRequest(_message.Message):
    __slots__ = ("queue_name", "max_messages")
    QUEUE_NAME_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    queue_name: str
    max_messages: int
    def __init__(self, queue_name: _Optional[str] = ..., max_messages: _Optional[int] = ...) -> None: ...

class PeekedMessage(_message.Message):
    __slots__ = ("message_id", "body", "enqueue_time", "first_dequeue_time", "dequeue_count", "attributes", "dead_letter_source_queue", "dead_letter_receive_count", "source_topic")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    ENQUEUE_TIME_FIELD_NUMBER: _ClassVar[int]
    FIRST_DEQUEUE_TIME_FIELD_NUMBER: _ClassVar[int]
    DEQUEUE_COUNT_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    DEAD_LETTER_SOURCE_QUEUE_FIELD_NUMBER: _ClassVar[int]
    DEAD_LETTER_RECEIVE_COUNT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_TOPIC_FIELD_NUMBER: _ClassVar[int]
    message_id: str
    body: bytes
    enqueue_time: _timestamp_pb2.Timestamp
    first_dequeue_time: _timestamp_pb2.Timestamp
    dequeue_count: int
    attributes: _containers.ScalarMap[str, str]
    dead_letter_source_queue: str
    dead_letter_receive_count: int
    source_topic: str
    def __init__(self, message_id: _Optional[str] = ..., body: _Optional[bytes] = ..., enqueue_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., first_dequeue_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., dequeue_count: _Optional[int] = ..., attributes: _Optional[_Mapping[str, str]] = ..., dead_letter_source_queue: _Optional[str] = ..., dead_letter_receive_count: _Optional[int] = ..., source_topic: _Optional[str] = ...) -> None: ...

class PeekMessagesResponse(_message.Message):
    __slots__ = ("messages",)
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[PeekedMessage]
    def __init__(self, messages: _Optional[_Iterable[_Union[PeekedMessage, _Mapping]]] = ...) -> None: ...

class StreamMessagesRequest(_message.Message):
    __slots__ = ("start", "acknowledge", "nack", "extend")
    START_FIELD_NUMBER: _ClassVar[int]
    ACKNOWLEDGE_FIELD_NUMBER: _ClassVar[int]
    NACK_FIELD_NUMBER: _ClassVar[int]
    EXTEND_FIELD_NUMBER: _ClassVar[int]
    start: StreamStart
    acknowledge: StreamAcknowledge
    nack: StreamNack
    extend: StreamExtend
    def __init__(self, start: _Optional[_Union[StreamStart, _Mapping]] = ..., acknowledge: _Optional[_Union[StreamAcknowledge, _Mapping]] = ..., nack: _Optional[_Union[StreamNack, _Mapping]] = ..., extend: _Optional[_Union[StreamExtend, _Mapping]] = ...) -> None: ...

class StreamStart(_message.Message):
    __slots__ = ("queue_name", "max_outstanding_messages", "visibility_timeout_seconds")
    QUEUE_NAME_FIELD_NUMBER: _ClassVar[int]
    MAX_OUTSTANDING_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    VISIBILITY_TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    queue_name: str
    max_outstanding_messages: int
    visibility_timeout_seconds: int
    def __init__(self, queue_name: _Optional[str] = ..., max_outstanding_messages: _Optional[int] = ..., visibility_timeout_seconds: _Optional[int] = ...) -> None: ...

class StreamAcknowledge(_message.Message):
    __slots__ = ("ack_id", "receipt_handles")
    ACK_ID_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_HANDLES_FIELD_NUMBER: _ClassVar[int]
    ack_id: int
    receipt_handles: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, ack_id: _Optional[int] = ..., receipt_handles: _Optional[_Iterable[str]] = ...) -> None: ...

class StreamNack(_message.Message):
    __slots__ = ("nack_id", "receipt_handles", "delay_seconds")
    NACK_ID_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_HANDLES_FIELD_NUMBER: _ClassVar[int]
    DELAY_SECONDS_FIELD_NUMBER: _ClassVar[int]
    nack_id: int
    receipt_handles: _containers.RepeatedScalarFieldContainer[str]
    delay_seconds: int
    def __init__(self, nack_id: _Optional[int] = ..., receipt_handles: _Optional[_Iterable[str]] = ..., delay_seconds: _Optional[int] = ...) -> None: ...

class StreamExtend(_message.Message):
    __slots__ = ("extend_id", "receipt_handles", "visibility_timeout_seconds")
    EXTEND_ID_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_HANDLES_FIELD_NUMBER: _ClassVar[int]
    VISIBILITY_TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    extend_id: int
    receipt_handles: _containers.RepeatedScalarFieldContainer[str]
    visibility_timeout_seconds: int
    def __init__(self, extend_id: _Optional[int] = ..., receipt_handles: _Optional[_Iterable[str]] = ..., visibility_timeout_seconds: _Optional[int] = ...) -> None: ...

class StreamMessagesResponse(_message.Message):
    __slots__ = ("message", "acknowledged", "nacked", "extended")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ACKNOWLEDGED_FIELD_NUMBER: _ClassVar[int]
    NACKED_FIELD_NUMBER: _ClassVar[int]
    EXTENDED_FIELD_NUMBER: _ClassVar[int]
    message: ReceivedMessage
    acknowledged: StreamAcknowledged
    nacked: StreamVisibilityChanged
    extended: StreamVisibilityChanged
    def __init__(self, message: _Optional[_Union[ReceivedMessage, _Mapping]] = ..., acknowledged: _Optional[_Union[StreamAcknowledged, _Mapping]] = ..., nacked: _Optional[_Union[StreamVisibilityChanged, _Mapping]] = ..., extended: _Optional[_Union[StreamVisibilityChanged, _Mapping]] = ...) -> None: ...

class StreamVisibilityChanged(_message.Message):
    __slots__ = ("request_id", "changed", "failures")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    changed: _containers.RepeatedCompositeFieldContainer[ChangedVisibility]
    failures: _containers.RepeatedCompositeFieldContainer[ChangeVisibilityFailure]
    def __init__(self, request_id: _Optional[int] = ..., changed: _Optional[_Iterable[_Union[ChangedVisibility, _Mapping]]] = ..., failures: _Optional[_Iterable[_Union[ChangeVisibilityFailure, _Mapping]]] = ...) -> None: ...

class StreamAcknowledged(_message.Message):
    __slots__ = ("ack_id", "failures")
    ACK_ID_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    ack_id: int
    failures: _containers.RepeatedCompositeFieldContainer[DeleteFailure]
    def __init__(self, ack_id: _Optional[int] = ..., failures: _Optional[_Iterable[_Union[DeleteFailure, _Mapping]]] = ...) -> None: ...

class ListDeadLetterSourceQueuesRequest(_message.Message):
    __slots__ = ("queue_name",)
    QUEUE_NAME_FIELD_NUMBER: _ClassVar[int]
    queue_name: str
    def __init__(self, queue_name: _Optional[str] = ...) -> None: ...

class ListDeadLetterSourceQueuesResponse(_message.Message):
    __slots__ = ("queue_names",)
    QUEUE_NAMES_FIELD_NUMBER: _ClassVar[int]
    queue_names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, queue_names: _Optional[_Iterable[str]] = ...) -> None: ...

class RedriveMessagesRequest(_message.Message):
    __slots__ = ("queue_name", "destination_queue", "max_messages")
    QUEUE_NAME_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_QUEUE_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    queue_name: str
    destination_queue: str
    max_messages: int
    def __init__(self, queue_name: _Optional[str] = ..., destination_queue: _Optional[str] = ..., max_messages: _Optional[int] = ...) -> None: ...

class RedriveMessagesResponse(_message.Message):
    __slots__ = ("redriven_messages", "skipped_messages")
    REDRIVEN_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    redriven_messages: int
    skipped_messages: int
    def __init__(self, redriven_messages: _Optional[int] = ..., skipped_messages: _Optional[int] = ...) -> None: ...

class TopicAttributes(_message.Message):
    __slots__ = ("max_message_size", "filter_type")
    MAX_MESSAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    FILTER_TYPE_FIELD_NUMBER: _ClassVar[int]
    max_message_size: int
    filter_type: FilterType
    def __init__(self, max_message_size: _Optional[int] = ..., filter_type: _Optional[_Union[FilterType, str]] = ...) -> None: ...

class TopicStats(_message.Message):
    __slots__ = ("published_messages", "unrouted_messages")
    PUBLISHED_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    UNROUTED_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    published_messages: int
    unrouted_messages: int
    def __init__(self, published_messages: _Optional[int] = ..., unrouted_messages: _Optional[int] = ...) -> None: ...

class Topic(_message.Message):
    __slots__ = ("name", "attributes", "subscription_count", "stats", "create_time", "update_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTION_COUNT_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    attributes: TopicAttributes
    subscription_count: int
    stats: TopicStats
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., attributes: _Optional[_Union[TopicAttributes, _Mapping]] = ..., subscription_count: _Optional[int] = ..., stats: _Optional[_Union[TopicStats, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateTopicRequest(_message.Message):
    __slots__ = ("topic_name", "attributes")
    TOPIC_NAME_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    topic_name: str
    attributes: TopicAttributes
    def __init__(self, topic_name: _Optional[str] = ..., attributes: _Optional[_Union[TopicAttributes, _Mapping]] = ...) -> None: ...

class GetTopicRequest(_message.Message):
    __slots__ = ("topic_name",)
    TOPIC_NAME_FIELD_NUMBER: _ClassVar[int]
    topic_name: str
    def __init__(self, topic_name: _Optional[str] = ...) -> None: ...

class UpdateTopicRequest(_message.Message):
    __slots__ = ("topic_name", "attributes")
    TOPIC_NAME_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    topic_name: str
    attributes: TopicAttributes
    def __init__(self, topic_name: _Optional[str] = ..., attributes: _Optional[_Union[TopicAttributes, _Mapping]] = ...) -> None: ...

class DeleteTopicRequest(_message.Message):
    __slots__ = ("topic_name",)
    TOPIC_NAME_FIELD_NUMBER: _ClassVar[int]
    topic_name: str
    def __init__(self, topic_name: _Optional[str] = ...) -> None: ...

class ListTopicsRequest(_message.Message):
    __slots__ = ("prefix", "page_size", "page_token")
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    prefix: str
    page_size: int
    page_token: str
    def __init__(self, prefix: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListTopicsResponse(_message.Message):
    __slots__ = ("topics", "next_page_token", "total_count")
    TOPICS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_COUNT_FIELD_NUMBER: _ClassVar[int]
    topics: _containers.RepeatedCompositeFieldContainer[Topic]
    next_page_token: str
    total_count: int
    def __init__(self, topics: _Optional[_Iterable[_Union[Topic, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., total_count: _Optional[int] = ...) -> None: ...

class Subscription(_message.Message):
    __slots__ = ("name", "topic_name", "queue_name", "filter_tags", "binding_keys", "create_time", "delivered_messages", "filtered_out_messages")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TOPIC_NAME_FIELD_NUMBER: _ClassVar[int]
    QUEUE_NAME_FIELD_NUMBER: _ClassVar[int]
    FILTER_TAGS_FIELD_NUMBER: _ClassVar[int]
    BINDING_KEYS_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    DELIVERED_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    FILTERED_OUT_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    name: str
    topic_name: str
    queue_name: str
    filter_tags: _containers.RepeatedScalarFieldContainer[str]
    binding_keys: _containers.RepeatedScalarFieldContainer[str]
    create_time: _timestamp_pb2.Timestamp
    delivered_messages: int
    filtered_out_messages: int
    def __init__(self, name: _Optional[str] = ..., topic_name: _Optional[str] = ..., queue_name: _Optional[str] = ..., filter_tags: _Optional[_Iterable[str]] = ..., binding_keys: _Optional[_Iterable[str]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., delivered_messages: _Optional[int] = ..., filtered_out_messages: _Optional[int] = ...) -> None: ...

class SubscribeRequest(_message.Message):
    __slots__ = ("topic_name", "subscription_name", "queue_name", "filter_tags", "binding_keys")
    TOPIC_NAME_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTION_NAME_FIELD_NUMBER: _ClassVar[int]
    QUEUE_NAME_FIELD_NUMBER: _ClassVar[int]
    FILTER_TAGS_FIELD_NUMBER: _ClassVar[int]
    BINDING_KEYS_FIELD_NUMBER: _ClassVar[int]
    topic_name: str
    subscription_name: str
    queue_name: str
    filter_tags: _containers.RepeatedScalarFieldContainer[str]
    binding_keys: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, topic_name: _Optional[str] = ..., subscription_name: _Optional[str] = ..., queue_name: _Optional[str] = ..., filter_tags: _Optional[_Iterable[str]] = ..., binding_keys: _Optional[_Iterable[str]] = ...) -> None: ...

class UnsubscribeRequest(_message.Message):
    __slots__ = ("topic_name", "subscription_name")
    TOPIC_NAME_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTION_NAME_FIELD_NUMBER: _ClassVar[int]
    topic_name: str
    subscription_name: str
    def __init__(self, topic_name: _Optional[str] = ..., subscription_name: _Optional[str] = ...) -> None: ...

class ListSubscriptionsRequest(_message.Message):
    __slots__ = ("topic_name", "page_size", "page_token")
    TOPIC_NAME_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    topic_name: str
    page_size: int
    page_token: str
    def __init__(self, topic_name: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListSubscriptionsResponse(_message.Message):
    __slots__ = ("subscriptions", "next_page_token", "total_count")
    SUBSCRIPTIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_COUNT_FIELD_NUMBER: _ClassVar[int]
    subscriptions: _containers.RepeatedCompositeFieldContainer[Subscription]
    next_page_token: str
    total_count: int
    def __init__(self, subscriptions: _Optional[_Iterable[_Union[Subscription, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., total_count: _Optional[int] = ...) -> None: ...

class PublishMessageRequest(_message.Message):
    __slots__ = ("topic_name", "body", "attributes", "tags", "routing_key", "deduplication_id")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TOPIC_NAME_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    ROUTING_KEY_FIELD_NUMBER: _ClassVar[int]
    DEDUPLICATION_ID_FIELD_NUMBER: _ClassVar[int]
    topic_name: str
    body: bytes
    attributes: _containers.ScalarMap[str, str]
    tags: _containers.RepeatedScalarFieldContainer[str]
    routing_key: str
    deduplication_id: str
    def __init__(self, topic_name: _Optional[str] = ..., body: _Optional[bytes] = ..., attributes: _Optional[_Mapping[str, str]] = ..., tags: _Optional[_Iterable[str]] = ..., routing_key: _Optional[str] = ..., deduplication_id: _Optional[str] = ...) -> None: ...

class PublishedCopy(_message.Message):
    __slots__ = ("subscription_name", "queue_name", "message_id")
    SUBSCRIPTION_NAME_FIELD_NUMBER: _ClassVar[int]
    QUEUE_NAME_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    subscription_name: str
    queue_name: str
    message_id: str
    def __init__(self, subscription_name: _Optional[str] = ..., queue_name: _Optional[str] = ..., message_id: _Optional[str] = ...) -> None: ...

class PublishMessageResponse(_message.Message):
    __slots__ = ("message_id", "copies")
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    COPIES_FIELD_NUMBER: _ClassVar[int]
    message_id: str
    copies: _containers.RepeatedCompositeFieldContainer[PublishedCopy]
    def __init__(self, message_id: _Optional[str] = ..., copies: _Optional[_Iterable[_Union[PublishedCopy, _Mapping]]] = ...) -> None: ...

class BatchPublishEntry(_message.Message):
    __slots__ = ("body", "attributes", "tags", "routing_key", "deduplication_id")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    BODY_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    ROUTING_KEY_FIELD_NUMBER: _ClassVar[int]
    DEDUPLICATION_ID_FIELD_NUMBER: _ClassVar[int]
    body: bytes
    attributes: _containers.ScalarMap[str, str]
    tags: _containers.RepeatedScalarFieldContainer[str]
    routing_key: str
    deduplication_id: str
    def __init__(self, body: _Optional[bytes] = ..., attributes: _Optional[_Mapping[str, str]] = ..., tags: _Optional[_Iterable[str]] = ..., routing_key: _Optional[str] = ..., deduplication_id: _Optional[str] = ...) -> None: ...

class BatchPublishMessagesRequest(_message.Message):
    __slots__ = ("topic_name", "entries")
    TOPIC_NAME_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    topic_name: str
    entries: _containers.RepeatedCompositeFieldContainer[BatchPublishEntry]
    def __init__(self, topic_name: _Optional[str] = ..., entries: _Optional[_Iterable[_Union[BatchPublishEntry, _Mapping]]] = ...) -> None: ...

class BatchPublishMessagesResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[PublishMessageResponse]
    def __init__(self, results: _Optional[_Iterable[_Union[PublishMessageResponse, _Mapping]]] = ...) -> None: ...
