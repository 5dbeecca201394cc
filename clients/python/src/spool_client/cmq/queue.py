"""The CMQ SDK's Queue, QueueMeta and Message (cmq/queue.py), on a Spool client.

Differences from CMQ, all from Spool's model:
- Bodies are bytes on the server. A str msgBody is sent as UTF-8; a received body is a str when it
  is valid UTF-8, else bytes. bytes may be sent as they are.
- QueueMeta fields left None are not sent: the server's defaults apply on create, and the current
  values stay on set_attributes (maxMsgHeapNum <= 0 counts as unset, as in CMQ's SDK).
- Creating a queue that exists with the same attributes succeeds (CMQ: 4460); with other attributes
  it fails with 4460.
- rewindQueue returns how many messages came back (CMQ returns nothing).
- Message tags (msgTag) are kept on the object but not sent: Spool's queues have no tags.
"""

from __future__ import annotations

import base64
import binascii
import time
from typing import List, Optional, Sequence, Union

from .._client import Client
from ..pb import queue_pb2 as pb
from ._calls import BAD_PARAMETER, BATCH_DELETE_FAILED, NO_MESSAGE, cmq_errors
from .cmq_exception import CMQClientParameterException, CMQServerException

Body = Union[str, bytes]


def _format_time(seconds: Optional[int]) -> str:
    if seconds is None or seconds < 0:
        return str(seconds)
    return time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(seconds))


def _reported(name: str, doc: str) -> property:
    """A read-only QueueMeta attribute that get_attributes fills in."""
    return property(lambda meta: getattr(meta, "_" + name), doc=doc)


class QueueMeta:
    """A queue's attributes (settable) and counters (read-only, filled by get_attributes).

    Settable, None (unset) by default: queueName, visibilityTimeout (s), maxMsgSize (bytes),
    pollingWaitSeconds (s), msgRetentionSeconds (s), rewindSeconds (s), maxMsgHeapNum (backlog cap).
    Read-only, None until get_attributes: activeMsgNum, inactiveMsgNum, delayMsgNum, rewindMsgNum
    (also spelled rewindmsgNum, as in CMQ's SDK), minMsgTime, createTime, lastModifyTime (Unix
    seconds; minMsgTime is 0 when the queue holds no message).
    """

    # The server's defaults, as in CMQ's SDK (see proto/spool/v1/queue.proto for every range).
    DEFAULT_POLLING_WAIT_SECONDS = 0
    DEFAULT_VISIBILITY_TIMEOUT = 30
    DEFAULT_MAX_MSG_SIZE = 65536
    DEFAULT_MSG_RETENTION_SECONDS = 345600

    activeMsgNum = _reported("activeMsgNum", "Messages visible now.")
    inactiveMsgNum = _reported("inactiveMsgNum", "Messages received and not yet deleted.")
    delayMsgNum = _reported("delayMsgNum", "Messages whose delay has not ended.")
    rewindMsgNum = _reported("rewindMsgNum", "Deleted messages kept for rewindQueue.")
    rewindmsgNum = _reported("rewindMsgNum", "rewindMsgNum, as CMQ's SDK spells it.")
    minMsgTime = _reported("minMsgTime", "Enqueue time of the oldest undeleted message, or 0.")
    createTime = _reported("createTime", "When the queue was created.")
    lastModifyTime = _reported("lastModifyTime", "When its attributes last changed.")

    def __init__(self) -> None:
        self.queueName: Optional[str] = None
        self.visibilityTimeout: Optional[int] = None
        self.maxMsgSize: Optional[int] = None
        self.pollingWaitSeconds: Optional[int] = None
        self.msgRetentionSeconds: Optional[int] = None
        self.rewindSeconds: Optional[int] = None
        self.maxMsgHeapNum: Optional[int] = None
        self._activeMsgNum: Optional[int] = None
        self._inactiveMsgNum: Optional[int] = None
        self._delayMsgNum: Optional[int] = None
        self._rewindMsgNum: Optional[int] = None
        self._minMsgTime: Optional[int] = None
        self._createTime: Optional[int] = None
        self._lastModifyTime: Optional[int] = None

    @classmethod
    def _from_queue(cls, queue: pb.Queue) -> QueueMeta:
        meta = cls()
        attributes, stats = queue.attributes, queue.stats
        meta.queueName = queue.name
        meta.visibilityTimeout = attributes.visibility_timeout_seconds
        meta.maxMsgSize = attributes.max_message_size
        meta.pollingWaitSeconds = attributes.polling_wait_seconds
        meta.msgRetentionSeconds = attributes.message_retention_seconds
        meta.rewindSeconds = attributes.rewind_seconds
        meta.maxMsgHeapNum = attributes.max_backlog
        meta._activeMsgNum = stats.active_messages
        meta._inactiveMsgNum = stats.inactive_messages
        meta._delayMsgNum = stats.delayed_messages
        meta._rewindMsgNum = stats.rewindable_messages
        meta._minMsgTime = (
            stats.oldest_message_time.seconds if stats.HasField("oldest_message_time") else 0
        )
        meta._createTime = queue.create_time.seconds
        meta._lastModifyTime = queue.update_time.seconds
        return meta

    def _attributes(self) -> dict:
        """The settable attributes that are set, as keyword arguments of Client.create_queue."""
        heap = self.maxMsgHeapNum
        return {
            "visibility_timeout_seconds": self.visibilityTimeout,
            "polling_wait_seconds": self.pollingWaitSeconds,
            "max_message_size": self.maxMsgSize,
            "message_retention_seconds": self.msgRetentionSeconds,
            "rewind_seconds": self.rewindSeconds,
            "max_backlog": heap if heap is not None and heap > 0 else None,
        }

    def __str__(self) -> str:
        info = {
            "QueueName": self.queueName,
            "visibilityTimeout": self.visibilityTimeout,
            "maxMsgHeapNum": self.maxMsgHeapNum,
            "maxMsgSize": self.maxMsgSize,
            "msgRetentionSeconds": self.msgRetentionSeconds,
            "pollingWaitSeconds": self.pollingWaitSeconds,
            "rewindSeconds": self.rewindSeconds,
            "activeMsgNum": self.activeMsgNum,
            "inactiveMsgNum": self.inactiveMsgNum,
            "delayMsgNum": self.delayMsgNum,
            "rewindMsgNum": self.rewindMsgNum,
            "minMsgTime": self.minMsgTime,
            "createTime": _format_time(self.createTime),
            "lastModifyTime": _format_time(self.lastModifyTime),
        }
        return "\n".join("%s: %s" % (key.ljust(30), value) for key, value in info.items())


class Message:
    """A message: msgBody to send; what send and receive report about it.

    Sending fills msgId. Receiving fills msgId, receiptHandle (for delete_message), enqueueTime,
    nextVisibleTime, firstDequeueTime (Unix seconds) and dequeueCount; -1 until then.
    """

    def __init__(self, message_body: Body = "", message_tag: Optional[Sequence[str]] = None):
        self.msgBody: Body = message_body
        self.msgId = ""
        self.enqueueTime = -1
        self.receiptHandle = ""
        self.nextVisibleTime = -1
        self.dequeueCount = -1
        self.firstDequeueTime = -1
        self.msgTag = [] if message_tag is None else list(message_tag)

    def __str__(self) -> str:
        info = {
            "msgBody": self.msgBody,
            "msgId": self.msgId,
            "enqueueTime": _format_time(self.enqueueTime),
            "nextVisibleTime": _format_time(self.nextVisibleTime),
            "firstDequeueTime": _format_time(self.firstDequeueTime),
            "dequeueCount": self.dequeueCount,
            "receiptHandle": self.receiptHandle,
            "msgTag": self.msgTag,
        }
        return "\n".join("%s: %s" % (key.ljust(30), value) for key, value in info.items())


class Queue:
    """One queue of an Account (Account.get_queue); the queue need not exist yet."""

    def __init__(self, queue_name: str, client: Client, debug: bool = False) -> None:
        self.queue_name = queue_name
        self.client = client
        self.debug = debug
        self.encoding = False

    def set_debug(self, debug: bool) -> None:
        self.debug = debug

    def set_encoding(self, encoding: bool) -> None:
        """Whether bodies are base64-encoded on the server, as CMQ's SDK offers (off by default;
        Spool stores any bytes, so it is needed only to share a queue with such clients)."""
        self.encoding = encoding

    # -- the queue ----------------------------------------------------------------------------

    def create(self, queue_meta: QueueMeta) -> None:
        """Creates the queue with the attributes set in queue_meta (its queueName is ignored)."""
        with cmq_errors():
            self.client.create_queue(self.queue_name, **queue_meta._attributes())

    def delete(self) -> None:
        """Deletes the queue and its messages."""
        with cmq_errors():
            self.client.delete_queue(self.queue_name)

    def get_attributes(self) -> QueueMeta:
        """The queue's attributes and counters."""
        with cmq_errors():
            return QueueMeta._from_queue(self.client.get_queue(self.queue_name))

    def set_attributes(self, queue_meta: QueueMeta) -> None:
        """Changes the attributes set in queue_meta; the others keep their value."""
        with cmq_errors():
            self.client.update_queue(self.queue_name, **queue_meta._attributes())

    def rewindQueue(self, backTrackingTime: int) -> int:
        """Makes the deleted messages enqueued since backTrackingTime (Unix seconds) receivable
        again; returns how many. Needs rewindSeconds > 0 (else 6050)."""
        if isinstance(backTrackingTime, bool) or not isinstance(backTrackingTime, (int, float)):
            raise CMQClientParameterException(
                "backTrackingTime is a Unix timestamp in seconds, not %r" % (backTrackingTime,),
                BAD_PARAMETER,
            )
        with cmq_errors():
            return self.client.rewind_queue(self.queue_name, backTrackingTime)

    # -- messages -----------------------------------------------------------------------------

    def send_message(self, message: Message, delay: int = 0, delayTime: Optional[int] = None):
        """Sends message.msgBody, visible after `delay` seconds (CMQ's SDK names it delayTime;
        either keyword works). Returns a Message with msgId."""
        delay = delay if delayTime is None else delayTime
        body = self._encode(message)
        with cmq_errors():
            message_id = self.client.send_message(self.queue_name, body, delay_seconds=delay)
        return self._sent(message, message_id)

    def batch_send_message(
        self, messages: Sequence[Message], delay: int = 0, delayTime: Optional[int] = None
    ) -> List[Message]:
        """Sends 1 to 16 messages, all or nothing, each visible after `delay` seconds. Returns a
        Message with msgId for each, in order."""
        delay = delay if delayTime is None else delayTime
        messages = list(messages)
        bodies = [self._encode(message) for message in messages]
        with cmq_errors():
            ids = self.client.batch_send_messages(self.queue_name, bodies, delay_seconds=delay)
        return [self._sent(message, message_id) for message, message_id in zip(messages, ids)]

    def receive_message(self, polling_wait_seconds: Optional[int] = None) -> Message:
        """Receives one message, waiting up to polling_wait_seconds (None: the queue's polling
        wait). Raises CMQServerException with code 7000 when none came."""
        return self.batch_receive_message(1, polling_wait_seconds)[0]

    def batch_receive_message(
        self, num_of_msg: int, polling_wait_seconds: Optional[int] = None
    ) -> List[Message]:
        """Receives up to num_of_msg (1..16) messages; fewer visible does not block. Raises
        CMQServerException with code 7000 when none came."""
        with cmq_errors():
            received = self.client.receive_messages(
                self.queue_name, max_messages=num_of_msg, wait_seconds=polling_wait_seconds
            )
        if not received:
            raise CMQServerException("no message", "", NO_MESSAGE, {})
        return [self._received(message) for message in received]

    def delete_message(self, receipt_handle: str) -> None:
        """Deletes a received message by its newest receipt handle (else 4430)."""
        with cmq_errors():
            self.client.delete_message(self.queue_name, receipt_handle)

    def batch_delete_message(self, receipt_handle_list: Sequence[str]) -> None:
        """Deletes 1 to 16 messages. If any handle fails, the others are still deleted and
        CMQServerException 6010 is raised, with data["errorList"] listing the failures."""
        with cmq_errors():
            failures = self.client.batch_delete_messages(self.queue_name, receipt_handle_list)
        if failures:
            error_list = [
                {"code": f.cmq_code, "message": f.message, "receiptHandle": f.receipt_handle}
                for f in failures
            ]
            raise CMQServerException(
                "%d of %d receipt handles were not deleted"
                % (len(failures), len(receipt_handle_list)),
                "",
                BATCH_DELETE_FAILED,
                {"errorList": error_list},
            )

    # -- bodies -------------------------------------------------------------------------------

    def _encode(self, message: Message) -> bytes:
        body = message.msgBody
        if isinstance(body, str):
            body = body.encode("utf-8")
        elif not isinstance(body, (bytes, bytearray)):
            raise CMQClientParameterException(
                "msgBody is a str or bytes, not %s" % type(body).__name__, BAD_PARAMETER
            )
        return base64.b64encode(body) if self.encoding else bytes(body)

    def _decode(self, body: bytes) -> Body:
        if self.encoding:
            try:
                body = base64.b64decode(body, validate=True)
            except binascii.Error:
                pass  # not sent through set_encoding(True): keep it as it is
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError:
            return body

    @staticmethod
    def _sent(message: Message, message_id: str) -> Message:
        sent = Message(message.msgBody, message.msgTag)
        sent.msgId = message_id
        return sent

    def _received(self, received: pb.ReceivedMessage) -> Message:
        message = Message(self._decode(received.body))
        message.msgId = received.message_id
        message.receiptHandle = received.receipt_handle
        message.enqueueTime = received.enqueue_time.seconds
        message.nextVisibleTime = received.next_visible_time.seconds
        message.firstDequeueTime = received.first_dequeue_time.seconds
        message.dequeueCount = received.dequeue_count
        return message
