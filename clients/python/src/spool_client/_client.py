"""Client: one method per QueueService RPC, with Python types in and the proto messages out."""

from __future__ import annotations

import datetime
import os
import time
import uuid
from typing import Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

from google.protobuf.timestamp_pb2 import Timestamp

import grpc

from ._consume import Consumer, start_request
from ._errors import SpoolError
from .pb import queue_pb2 as pb
from .pb import queue_pb2_grpc

#: A message body: bytes as they are, or text (sent as UTF-8).
Body = Union[bytes, str]
#: A point in time: a datetime (naive means local time, as in datetime.timestamp()) or Unix seconds.
Time = Union[datetime.datetime, int, float]
#: PEM data: the bytes themselves, or the path of a file that holds them.
Pem = Union[bytes, str, "os.PathLike[str]"]

DEFAULT_ENDPOINT = "127.0.0.1:50051"

# "Use the client's default timeout": None already means "no timeout" for a call.
_DEFAULT = object()

#: Attempts of a send in all when the server is UNAVAILABLE (unreachable, starting, shutting
#: down, storage failing). Safe because every send carries a deduplication id.
SEND_ATTEMPTS = 3
#: Pause before the first retry of a send; it doubles for the next.
SEND_RETRY_BACKOFF = 0.2


def new_deduplication_id() -> str:
    """A deduplication id for a send that has none of the caller's: 122 random bits."""
    return f"spool-py-{uuid.uuid4().hex}"


def parse_endpoint(endpoint: str) -> Tuple[str, bool]:
    """Splits an endpoint into a gRPC target and whether to use TLS.

    "http://host:port" and "host:port" are plaintext; "https://host:port" is TLS. Any other gRPC
    target ("dns:///host:port", "unix:/path") is passed through, plaintext.
    """
    endpoint = endpoint.strip()
    for scheme, secure in (("http://", False), ("https://", True)):
        if endpoint.startswith(scheme):
            return endpoint[len(scheme) :].rstrip("/"), secure
    return endpoint, False


def _pem(value: Optional[Pem], what: str) -> Optional[bytes]:
    """PEM bytes as given, or read from the file a path names."""
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, (str, os.PathLike)):
        with open(value, "rb") as file:
            return file.read()
    raise TypeError(f"{what} is PEM bytes or a file path, not {type(value).__name__}")


def _authorization(token: Optional[str]) -> Tuple[Tuple[str, str], ...]:
    """The metadata that carries a bearer token: `authorization: Bearer <token>`."""
    if token is None:
        return ()
    token = token.strip()
    # RFC 6750's token characters are all visible ASCII; anything else cannot travel intact.
    if not token or not all(33 <= ord(c) <= 126 for c in token):
        raise ValueError("the token is empty or not printable ASCII, so it cannot be sent")
    return (("authorization", f"Bearer {token}"),)


def _body_bytes(body: Body) -> bytes:
    if isinstance(body, str):
        return body.encode("utf-8")
    if isinstance(body, (bytes, bytearray, memoryview)):
        return bytes(body)
    raise TypeError(f"a message body is bytes or str, not {type(body).__name__}")


def _timestamp(value: Time) -> Timestamp:
    if isinstance(value, datetime.datetime):
        seconds = value.timestamp()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = value
    else:
        raise TypeError(f"a time is a datetime or Unix seconds, not {type(value).__name__}")
    stamp = Timestamp()
    if isinstance(seconds, int):
        stamp.FromSeconds(seconds)
    else:
        stamp.FromNanoseconds(round(seconds * 1_000_000_000))
    return stamp


def _attributes(
    visibility_timeout_seconds: Optional[int],
    polling_wait_seconds: Optional[int],
    max_message_size: Optional[int],
    message_retention_seconds: Optional[int],
    rewind_seconds: Optional[int],
    max_backlog: Optional[int],
    deduplication_window_seconds: Optional[int] = None,
    dead_letter_policy: Optional[pb.DeadLetterPolicy] = None,
    max_bytes: Optional[int] = None,
) -> pb.QueueAttributes:
    """QueueAttributes with the given fields set; None leaves a field unset."""
    given = {
        "visibility_timeout_seconds": visibility_timeout_seconds,
        "polling_wait_seconds": polling_wait_seconds,
        "max_message_size": max_message_size,
        "message_retention_seconds": message_retention_seconds,
        "rewind_seconds": rewind_seconds,
        "max_backlog": max_backlog,
        "deduplication_window_seconds": deduplication_window_seconds,
        "dead_letter_policy": dead_letter_policy,
        "max_bytes": max_bytes,
    }
    return pb.QueueAttributes(**{name: value for name, value in given.items() if value is not None})


def dead_letter_policy(
    dead_letter_queue: str, max_receive_count: int, max_time_to_live_seconds: int = 0
) -> pb.DeadLetterPolicy:
    """A dead-letter policy for create_queue/update_queue: messages received
    `max_receive_count` times (or, when not 0, older than `max_time_to_live_seconds`) move to
    `dead_letter_queue`. `dead_letter_policy("", 0)` removes a queue's policy on update."""
    return pb.DeadLetterPolicy(
        dead_letter_queue=dead_letter_queue,
        max_receive_count=max_receive_count,
        max_time_to_live_seconds=max_time_to_live_seconds,
    )


class Client:
    """A connection to a Spool server, with one method per RPC of spool.v1.QueueService.

    Methods take and return the messages of `spool_client.pb.queue_pb2` (documented in
    proto/spool/v1/queue.proto), unwrapped where a response has one useful field. A failed call
    raises `SpoolError`, which carries CMQ's error number as `cmq_code`.

        with Client("127.0.0.1:50051") as client:
            client.create_queue("orders", visibility_timeout_seconds=60)
            client.send_message("orders", b"...")
            for message in client.receive_messages("orders", max_messages=16, wait_seconds=10):
                ...
                client.delete_message("orders", message.receipt_handle)

    `timeout` (seconds) bounds each call; every method also takes `timeout=` for that call alone.
    A long poll that reaches its timeout ends with no messages rather than failing. The client is
    safe to share between threads.

    Security: `token` is sent with every call as `authorization: Bearer <token>` (a principal
    of the server's auth file). An "https://" endpoint uses TLS, trusting `ca_cert` (PEM bytes
    or a file path; the system's roots when None) and presenting `client_cert` and `client_key`
    when the server requires client certificates. `credentials` replaces all three with your
    own grpc.ChannelCredentials.

        Client("https://spool.example.com:50051", ca_cert="ca.crt", token=os.environ["SPOOL_TOKEN"])
    """

    def __init__(
        self,
        endpoint: str = DEFAULT_ENDPOINT,
        *,
        timeout: Optional[float] = None,
        credentials: Optional[grpc.ChannelCredentials] = None,
        options: Optional[Sequence[Tuple[str, object]]] = None,
        token: Optional[str] = None,
        ca_cert: Optional[Pem] = None,
        client_cert: Optional[Pem] = None,
        client_key: Optional[Pem] = None,
    ) -> None:
        target, secure = parse_endpoint(endpoint)
        tls_files = (ca_cert, client_cert, client_key)
        if any(value is not None for value in tls_files):
            if not secure:
                raise ValueError(
                    f"TLS files are given for {endpoint}, which is plaintext: use https://"
                )
            if credentials is not None:
                raise ValueError("give either credentials or the TLS files, not both")
            if (client_cert is None) != (client_key is None):
                raise ValueError("client_cert and client_key go together: give both, or neither")
        self._metadata = _authorization(token)
        if credentials is None and secure:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=_pem(ca_cert, "ca_cert"),
                private_key=_pem(client_key, "client_key"),
                certificate_chain=_pem(client_cert, "client_cert"),
            )
        if credentials is None:
            self._channel = grpc.insecure_channel(target, options=options)
        else:
            self._channel = grpc.secure_channel(target, credentials, options=options)
        self._stub = queue_pb2_grpc.QueueServiceStub(self._channel)
        self.endpoint = endpoint
        self.timeout = timeout

    # -- connection ---------------------------------------------------------------------------

    def wait_until_ready(self, timeout: Optional[float] = None) -> None:
        """Blocks until the server serves queue calls: connected, and done recovering its queues
        (until then calls fail with UNAVAILABLE). Raises SpoolError (UNAVAILABLE) on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            raise SpoolError(
                grpc.StatusCode.UNAVAILABLE, f"cannot connect to {self.endpoint}"
            ) from None
        while True:
            try:
                self.list_queues(page_size=1, timeout=1.0)
                return
            except SpoolError as error:
                if error.code != grpc.StatusCode.UNAVAILABLE:
                    raise
                if deadline is not None and time.monotonic() >= deadline:
                    raise
            time.sleep(0.02)

    def close(self) -> None:
        """Closes the channel; calls in progress are cancelled."""
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _call(self, method, request, timeout):
        try:
            return method(
                request,
                timeout=self.timeout if timeout is _DEFAULT else timeout,
                metadata=self._metadata,
            )
        except grpc.RpcError as error:
            raise SpoolError.from_rpc_error(error) from error

    # -- queues -------------------------------------------------------------------------------

    def create_queue(
        self,
        queue_name: str,
        *,
        visibility_timeout_seconds: Optional[int] = None,
        polling_wait_seconds: Optional[int] = None,
        max_message_size: Optional[int] = None,
        message_retention_seconds: Optional[int] = None,
        rewind_seconds: Optional[int] = None,
        max_backlog: Optional[int] = None,
        deduplication_window_seconds: Optional[int] = None,
        dead_letter_policy: Optional[pb.DeadLetterPolicy] = None,
        max_bytes: Optional[int] = None,
        timeout=_DEFAULT,
    ) -> pb.Queue:
        """Creates a queue; attributes left None take the server's defaults.

        Creating a queue that exists with the same attributes returns it; with other attributes
        it fails (ALREADY_EXISTS, cmq_code 4460). `dead_letter_policy`: see
        `spool_client.dead_letter_policy`; its queue must exist. `max_bytes`: most bytes (bodies
        and attributes) the queue holds, 0 for no quota (the default); sends beyond it fail with
        RESOURCE_EXHAUSTED (cmq_code 4410).
        """
        attributes = _attributes(
            visibility_timeout_seconds,
            polling_wait_seconds,
            max_message_size,
            message_retention_seconds,
            rewind_seconds,
            max_backlog,
            deduplication_window_seconds,
            dead_letter_policy,
            max_bytes,
        )
        request = pb.CreateQueueRequest(queue_name=queue_name, attributes=attributes)
        return self._call(self._stub.CreateQueue, request, timeout)

    def get_queue(self, queue_name: str, *, timeout=_DEFAULT) -> pb.Queue:
        """A queue's attributes (defaults filled in) and message counters."""
        return self._call(self._stub.GetQueue, pb.GetQueueRequest(queue_name=queue_name), timeout)

    def update_queue(
        self,
        queue_name: str,
        *,
        visibility_timeout_seconds: Optional[int] = None,
        polling_wait_seconds: Optional[int] = None,
        max_message_size: Optional[int] = None,
        message_retention_seconds: Optional[int] = None,
        rewind_seconds: Optional[int] = None,
        max_backlog: Optional[int] = None,
        deduplication_window_seconds: Optional[int] = None,
        dead_letter_policy: Optional[pb.DeadLetterPolicy] = None,
        max_bytes: Optional[int] = None,
        timeout=_DEFAULT,
    ) -> pb.Queue:
        """Changes the attributes given (not None); the others keep their value."""
        attributes = _attributes(
            visibility_timeout_seconds,
            polling_wait_seconds,
            max_message_size,
            message_retention_seconds,
            rewind_seconds,
            max_backlog,
            deduplication_window_seconds,
            dead_letter_policy,
            max_bytes,
        )
        request = pb.UpdateQueueRequest(queue_name=queue_name, attributes=attributes)
        return self._call(self._stub.UpdateQueue, request, timeout)

    def delete_queue(self, queue_name: str, *, timeout=_DEFAULT) -> None:
        """Deletes a queue and all its messages."""
        self._call(self._stub.DeleteQueue, pb.DeleteQueueRequest(queue_name=queue_name), timeout)

    def list_queues(
        self, prefix: str = "", *, page_size: int = 0, page_token: str = "", timeout=_DEFAULT
    ) -> pb.ListQueuesResponse:
        """One page of the queues whose name starts with `prefix`, in name order.

        `page_size` 0 means the server's default (100). The response has `queues`,
        `next_page_token` (empty on the last page) and `total_count` (on all pages).
        """
        request = pb.ListQueuesRequest(prefix=prefix, page_size=page_size, page_token=page_token)
        return self._call(self._stub.ListQueues, request, timeout)

    def iter_queues(
        self, prefix: str = "", *, page_size: int = 0, timeout=_DEFAULT
    ) -> Iterator[pb.Queue]:
        """Every queue whose name starts with `prefix`, in name order, page after page."""
        page_token = ""
        while True:
            page = self.list_queues(
                prefix, page_size=page_size, page_token=page_token, timeout=timeout
            )
            yield from page.queues
            page_token = page.next_page_token
            if not page_token:
                return

    def rewind_queue(self, queue_name: str, start_time: Time, *, timeout=_DEFAULT) -> int:
        """Makes the deleted messages enqueued at or after `start_time` receivable again.

        Returns how many came back. Needs a queue with rewind_seconds > 0 (else cmq_code 6050).
        """
        request = pb.RewindQueueRequest(queue_name=queue_name, start_time=_timestamp(start_time))
        return self._call(self._stub.RewindQueue, request, timeout).restored_messages

    # -- messages -----------------------------------------------------------------------------

    def _send(self, method, request, timeout):
        """A send, tried up to SEND_ATTEMPTS times while the server is UNAVAILABLE. The same
        request goes each time, with its deduplication ids: an attempt whose answer was lost
        but whose messages were stored makes the next one a duplicate, which enqueues nothing
        and answers the stored ids (within the queue's deduplication window)."""
        backoff = SEND_RETRY_BACKOFF
        for attempt in range(1, SEND_ATTEMPTS + 1):
            try:
                return self._call(method, request, timeout)
            except SpoolError as error:
                if error.code != grpc.StatusCode.UNAVAILABLE or attempt == SEND_ATTEMPTS:
                    raise
            time.sleep(backoff)
            backoff *= 2
        raise AssertionError("unreachable: the last attempt returns or raises")

    def send_message(
        self,
        queue_name: str,
        body: Body,
        *,
        delay_seconds: Optional[int] = None,
        attributes: Optional[Mapping[str, str]] = None,
        deduplication_id: Optional[str] = None,
        timeout=_DEFAULT,
    ) -> str:
        """Sends a message (str bodies are sent as UTF-8) and returns its id.

        `attributes`: up to 16 key/value strings delivered with the message (a W3C
        traceparent, ...). `deduplication_id`: 1..128 printable ASCII characters; a send whose id
        the queue accepted within its deduplication window enqueues nothing and returns the
        first send's id. Without one the client makes one for this call, so its own retries
        (on UNAVAILABLE) never store the message twice.
        """
        request = pb.SendMessageRequest(
            queue_name=queue_name,
            body=_body_bytes(body),
            delay_seconds=delay_seconds,
            attributes=dict(attributes or {}),
            deduplication_id=deduplication_id or new_deduplication_id(),
        )
        return self._send(self._stub.SendMessage, request, timeout).message_id

    def batch_send_messages(
        self,
        queue_name: str,
        bodies: Iterable[Union[Body, pb.BatchSendEntry]],
        *,
        delay_seconds: Optional[int] = None,
        timeout=_DEFAULT,
    ) -> List[str]:
        """Sends 1 to 16 messages, all or nothing, and returns their ids in order.

        Each item is a body, or a BatchSendEntry to give it a delay, attributes or a
        deduplication id of its own; `delay_seconds` applies to the plain bodies. Entries
        without a deduplication id get one of the client's, as in send_message.
        """
        entries = []
        for body in bodies:
            if isinstance(body, pb.BatchSendEntry):
                entry = pb.BatchSendEntry()
                entry.CopyFrom(body)
            else:
                entry = pb.BatchSendEntry(body=_body_bytes(body), delay_seconds=delay_seconds)
            if not entry.deduplication_id:
                entry.deduplication_id = new_deduplication_id()
            entries.append(entry)
        request = pb.BatchSendMessagesRequest(queue_name=queue_name, entries=entries)
        return list(self._send(self._stub.BatchSendMessages, request, timeout).message_ids)

    def receive_messages(
        self,
        queue_name: str,
        *,
        max_messages: int = 1,
        wait_seconds: Optional[int] = None,
        visibility_timeout_seconds: Optional[int] = None,
        timeout=_DEFAULT,
    ) -> List[pb.ReceivedMessage]:
        """Receives up to `max_messages` (1..16) messages; an empty list when none came.

        Returns at once what is visible; if nothing is, waits up to `wait_seconds` (None: the
        queue's polling wait) for the first message. Each message is then invisible for the
        visibility timeout (the queue's, or `visibility_timeout_seconds`) and has a new receipt
        handle for delete_message.
        """
        request = pb.ReceiveMessagesRequest(
            queue_name=queue_name,
            max_messages=max_messages,
            wait_seconds=wait_seconds,
            visibility_timeout_seconds=visibility_timeout_seconds,
        )
        # The response is a stream that ends after at most max_messages: collect it.
        return self._call(self._receive_all, request, timeout)

    def _receive_all(self, request, timeout, metadata):
        return list(self._stub.ReceiveMessages(request, timeout=timeout, metadata=metadata))

    def delete_message(self, queue_name: str, receipt_handle: str, *, timeout=_DEFAULT) -> None:
        """Deletes a received message by its newest receipt handle.

        A superseded or expired handle fails with cmq_code 4430; deleting a message twice is
        fine.
        """
        request = pb.DeleteMessageRequest(queue_name=queue_name, receipt_handle=receipt_handle)
        self._call(self._stub.DeleteMessage, request, timeout)

    def batch_delete_messages(
        self, queue_name: str, receipt_handles: Iterable[str], *, timeout=_DEFAULT
    ) -> List[pb.DeleteFailure]:
        """Deletes 1 to 16 messages; returns a DeleteFailure for each handle not deleted."""
        request = pb.BatchDeleteMessagesRequest(
            queue_name=queue_name, receipt_handles=list(receipt_handles)
        )
        return list(self._call(self._stub.BatchDeleteMessages, request, timeout).failures)

    def change_message_visibility(
        self,
        queue_name: str,
        receipt_handle: str,
        visibility_timeout_seconds: int,
        *,
        timeout=_DEFAULT,
    ) -> Timestamp:
        """Changes when a received message becomes visible again; returns that time.

        `visibility_timeout_seconds` counts from now (0..43200): 0 makes the message visible at
        once (a nack), more gives its consumer more time (a heartbeat). The receipt handle must
        be the newest and unexpired, as for delete_message (else cmq_code 4430); it stays
        valid until the returned next_visible_time.
        """
        request = pb.ChangeMessageVisibilityRequest(
            queue_name=queue_name,
            receipt_handle=receipt_handle,
            visibility_timeout_seconds=visibility_timeout_seconds,
        )
        return self._call(self._stub.ChangeMessageVisibility, request, timeout).next_visible_time

    def batch_change_message_visibility(
        self,
        queue_name: str,
        entries: Iterable[Union[pb.ChangeVisibilityEntry, Tuple[str, int]]],
        *,
        timeout=_DEFAULT,
    ) -> pb.BatchChangeMessageVisibilityResponse:
        """Changes the visibility of 1 to 16 messages, each as change_message_visibility does.

        Entries are ChangeVisibilityEntry messages or (receipt_handle, seconds) pairs. The
        answer lists the entries that changed (`changed`, with their next_visible_time) and
        those that did not (`failures`, with why), each by its index.
        """
        request = pb.BatchChangeMessageVisibilityRequest(
            queue_name=queue_name,
            entries=[
                entry
                if isinstance(entry, pb.ChangeVisibilityEntry)
                else pb.ChangeVisibilityEntry(
                    receipt_handle=entry[0], visibility_timeout_seconds=entry[1]
                )
                for entry in entries
            ],
        )
        return self._call(self._stub.BatchChangeMessageVisibility, request, timeout)

    def purge_queue(self, queue_name: str, *, timeout=_DEFAULT) -> int:
        """Removes every visible, delayed and in-flight message; returns how many.

        As if each had been deleted: with a rewind window they stay rewindable, so
        rewind_queue undoes a purge.
        """
        request = pb.PurgeQueueRequest(queue_name=queue_name)
        return self._call(self._stub.PurgeQueue, request, timeout).purged_messages

    def peek_messages(
        self, queue_name: str, *, max_messages: int = 1, timeout=_DEFAULT
    ) -> List[pb.PeekedMessage]:
        """Up to `max_messages` (1..16) visible messages, in the order a receive would get them.

        Nothing changes: no receipt handle, no visibility change, no dequeue count.
        """
        request = pb.PeekMessagesRequest(queue_name=queue_name, max_messages=max_messages)
        return list(self._call(self._stub.PeekMessages, request, timeout).messages)

    def list_dead_letter_source_queues(self, queue_name: str, *, timeout=_DEFAULT) -> List[str]:
        """The queues whose dead-letter policy names `queue_name`, in name order."""
        request = pb.ListDeadLetterSourceQueuesRequest(queue_name=queue_name)
        return list(self._call(self._stub.ListDeadLetterSourceQueues, request, timeout).queue_names)

    def redrive_messages(
        self,
        queue_name: str,
        *,
        destination_queue: str = "",
        max_messages: int = 0,
        timeout=_DEFAULT,
    ) -> pb.RedriveMessagesResponse:
        """Moves up to `max_messages` (0: all, up to 100000) visible messages out of a
        dead-letter queue, oldest first: back to the queue each came from, or all to
        `destination_queue`. The answer has `redriven_messages` and `skipped_messages` (those
        whose source queue no longer exists). Not retried: a second redrive would also move
        what was dead-lettered in between."""
        request = pb.RedriveMessagesRequest(
            queue_name=queue_name, destination_queue=destination_queue, max_messages=max_messages
        )
        return self._call(self._stub.RedriveMessages, request, timeout)

    # -- topics -------------------------------------------------------------------------------

    def create_topic(
        self,
        topic_name: str,
        *,
        max_message_size: Optional[int] = None,
        filter_type: int = pb.FILTER_TYPE_UNSPECIFIED,
        timeout=_DEFAULT,
    ) -> pb.Topic:
        """Creates a topic: a publish to it puts a copy in every subscribed queue whose filter it
        passes. `filter_type`: pb.FILTER_TYPE_TAGS (the default) or pb.FILTER_TYPE_ROUTING_KEYS.
        Creating one that exists with the same attributes returns it."""
        attributes = pb.TopicAttributes(max_message_size=max_message_size, filter_type=filter_type)
        request = pb.CreateTopicRequest(topic_name=topic_name, attributes=attributes)
        return self._call(self._stub.CreateTopic, request, timeout)

    def get_topic(self, topic_name: str, *, timeout=_DEFAULT) -> pb.Topic:
        """A topic's attributes, subscription count and counters."""
        return self._call(self._stub.GetTopic, pb.GetTopicRequest(topic_name=topic_name), timeout)

    def update_topic(
        self, topic_name: str, *, max_message_size: Optional[int] = None, timeout=_DEFAULT
    ) -> pb.Topic:
        """Changes a topic's max_message_size (its filter type is fixed)."""
        attributes = pb.TopicAttributes(max_message_size=max_message_size)
        request = pb.UpdateTopicRequest(topic_name=topic_name, attributes=attributes)
        return self._call(self._stub.UpdateTopic, request, timeout)

    def delete_topic(self, topic_name: str, *, timeout=_DEFAULT) -> None:
        """Deletes a topic and its subscriptions (not their queues)."""
        self._call(self._stub.DeleteTopic, pb.DeleteTopicRequest(topic_name=topic_name), timeout)

    def list_topics(
        self, prefix: str = "", *, page_size: int = 0, page_token: str = "", timeout=_DEFAULT
    ) -> pb.ListTopicsResponse:
        """One page of the topics whose name starts with `prefix`, as list_queues."""
        request = pb.ListTopicsRequest(prefix=prefix, page_size=page_size, page_token=page_token)
        return self._call(self._stub.ListTopics, request, timeout)

    def subscribe(
        self,
        topic_name: str,
        subscription_name: str,
        queue_name: str,
        *,
        filter_tags: Iterable[str] = (),
        binding_keys: Iterable[str] = (),
        timeout=_DEFAULT,
    ) -> pb.Subscription:
        """Subscribes a queue to a topic: filter tags for a topic filtering by tags, binding keys
        (`*` one word, `#` zero or more) for one filtering by routing keys; none: every
        message. Deleting the queue deletes the subscription."""
        request = pb.SubscribeRequest(
            topic_name=topic_name,
            subscription_name=subscription_name,
            queue_name=queue_name,
            filter_tags=list(filter_tags),
            binding_keys=list(binding_keys),
        )
        return self._call(self._stub.Subscribe, request, timeout)

    def unsubscribe(self, topic_name: str, subscription_name: str, *, timeout=_DEFAULT) -> None:
        """Removes a subscription; the copies already in its queue stay."""
        request = pb.UnsubscribeRequest(
            topic_name=topic_name, subscription_name=subscription_name
        )
        self._call(self._stub.Unsubscribe, request, timeout)

    def list_subscriptions(
        self, topic_name: str, *, page_size: int = 0, page_token: str = "", timeout=_DEFAULT
    ) -> pb.ListSubscriptionsResponse:
        """One page of a topic's subscriptions, in name order."""
        request = pb.ListSubscriptionsRequest(
            topic_name=topic_name, page_size=page_size, page_token=page_token
        )
        return self._call(self._stub.ListSubscriptions, request, timeout)

    def publish_message(
        self,
        topic_name: str,
        body: Body,
        *,
        tags: Iterable[str] = (),
        routing_key: str = "",
        attributes: Optional[Mapping[str, str]] = None,
        deduplication_id: Optional[str] = None,
        timeout=_DEFAULT,
    ) -> pb.PublishMessageResponse:
        """Publishes a message: a copy in every subscribed queue whose filter it passes, all in
        one transaction (all copies or none). The answer has the publish's `message_id` and its
        `copies` (subscription, queue, the copy's message id). Retried on UNAVAILABLE with the
        same deduplication id (one of the client's unless given), so queues with deduplication
        on take no second copy."""
        request = pb.PublishMessageRequest(
            topic_name=topic_name,
            body=_body_bytes(body),
            attributes=dict(attributes or {}),
            tags=list(tags),
            routing_key=routing_key,
            deduplication_id=deduplication_id or new_deduplication_id(),
        )
        return self._send(self._stub.PublishMessage, request, timeout)

    def batch_publish_messages(
        self,
        topic_name: str,
        entries: Iterable[Union[Body, pb.BatchPublishEntry]],
        *,
        timeout=_DEFAULT,
    ) -> List[pb.PublishMessageResponse]:
        """Publishes 1 to 16 messages (bodies, or BatchPublishEntry for tags, a routing key,
        attributes or a deduplication id), every copy of every entry in one transaction."""
        items = []
        for entry in entries:
            if not isinstance(entry, pb.BatchPublishEntry):
                entry = pb.BatchPublishEntry(body=_body_bytes(entry))
            if not entry.deduplication_id:
                entry.deduplication_id = new_deduplication_id()
            items.append(entry)
        request = pb.BatchPublishMessagesRequest(topic_name=topic_name, entries=items)
        return list(self._send(self._stub.BatchPublishMessages, request, timeout).results)

    def consume(
        self,
        queue_name: str,
        *,
        max_outstanding_messages: int = 0,
        visibility_timeout_seconds: Optional[int] = None,
    ) -> Consumer:
        """Opens a consumer stream (StreamMessages): an iterator of Delivery objects, pushed as
        messages become visible while fewer than `max_outstanding_messages` (1..1000; 0: 100)
        are unacknowledged. `delivery.ack()` deletes one (batched on the stream) and returns a
        future of the server's answer; `delivery.nack()` makes it visible again at once (or after
        a delay), `delivery.extend(seconds)` keeps it longer, both batched the same way. Raises SpoolError at once if the server refuses the stream (NOT_FOUND, ...). The
        stream has no deadline; the iteration ends when the server shuts down.

            with client.consume("orders", max_outstanding_messages=10) as consumer:
                for delivery in consumer:
                    handle(delivery.message.body)
                    delivery.ack()
        """
        start = start_request(queue_name, max_outstanding_messages, visibility_timeout_seconds)
        return Consumer(self._stub, start, self._metadata)

    # The RPC's name, for those who look for it.
    stream_messages = consume
