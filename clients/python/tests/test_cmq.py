"""spool_client.cmq, the CMQ SDK facade, against a real server: every method, and CMQ's codes."""

from __future__ import annotations

import base64
import logging
import time

import pytest
from spool_client import Client
from spool_client.cmq import (
    Account,
    CMQClientNetworkException,
    CMQClientParameterException,
    CMQExceptionBase,
    CMQServerException,
    Message,
    QueueMeta,
    cmq_exception,
)
from spool_client.cmq import account as account_module
from spool_client.cmq import queue as queue_module


def expect_cmq_error(code: int, call, *args, **kwargs) -> CMQExceptionBase:
    with pytest.raises(CMQExceptionBase) as caught:
        call(*args, **kwargs)
    assert caught.value.code == code, caught.value
    assert caught.value.message, caught.value
    return caught.value


def meta(**attributes) -> QueueMeta:
    queue_meta = QueueMeta()
    for name, value in attributes.items():
        setattr(queue_meta, name, value)
    return queue_meta


@pytest.fixture
def queue(account, queue_name):
    """A queue object whose queue does not exist yet."""
    return account.get_queue(queue_name)


# -- modules and names ------------------------------------------------------------------------


def test_the_sdk_modules_are_there():
    # Code written for CMQ imports cmq.account, cmq.queue and cmq.cmq_exception.
    assert account_module.Account is Account
    assert queue_module.QueueMeta is QueueMeta and queue_module.Message is Message
    assert cmq_exception.CMQExceptionBase is CMQExceptionBase
    for name in (
        "CMQClientException",
        "CMQClientNetworkException",
        "CMQClientParameterException",
        "CMQServerException",
        "CMQServerNetworkException",
    ):
        assert issubclass(getattr(cmq_exception, name), CMQExceptionBase)


def test_account_settings_are_accepted(server):
    account = Account(server.endpoint, "id", "key", "token", debug=True)
    account.set_token("other")
    account.set_sign("sha1")
    account.set_sign()
    account.set_debug(False)
    account.set_log_level(logging.DEBUG)
    account.close_log()
    expect_cmq_error(4000, account.set_sign, "md5")
    assert isinstance(account.get_client(), Client)
    account.set_client(server.address, "id2")
    assert account.secretId == "id2"
    account.list_queue()
    account.close()
    with pytest.raises(CMQClientParameterException):
        Account("", "id", "key")


def test_unreachable_server_raises_network_exception(closed_address):
    account = Account("http://" + closed_address, "id", "key")
    with pytest.raises(CMQClientNetworkException) as caught:
        account.get_queue("Any").get_attributes()
    assert caught.value.code == -1
    assert "CMQClientNetworkException" in str(caught.value)


# -- queues -----------------------------------------------------------------------------------


def test_create_leaves_unset_attributes_to_the_server(queue, queue_name):
    queue.create(QueueMeta())
    got = queue.get_attributes()
    assert got.queueName == queue_name
    assert got.visibilityTimeout == QueueMeta.DEFAULT_VISIBILITY_TIMEOUT == 30
    assert got.pollingWaitSeconds == QueueMeta.DEFAULT_POLLING_WAIT_SECONDS == 0
    assert got.maxMsgSize == QueueMeta.DEFAULT_MAX_MSG_SIZE == 65536
    assert got.msgRetentionSeconds == QueueMeta.DEFAULT_MSG_RETENTION_SECONDS == 345600
    assert got.rewindSeconds == 0
    assert got.maxMsgHeapNum == 100_000_000


def test_create_and_get_attributes(queue, queue_name):
    before = int(time.time())
    queue.create(
        meta(
            queueName="IgnoredAsInCmq",
            visibilityTimeout=10,
            maxMsgSize=65536,
            pollingWaitSeconds=10,
            msgRetentionSeconds=3600,
            rewindSeconds=1800,
            maxMsgHeapNum=500,
        )
    )
    got = queue.get_attributes()
    assert got.queueName == queue_name
    assert (got.visibilityTimeout, got.maxMsgSize, got.pollingWaitSeconds) == (10, 65536, 10)
    assert (got.msgRetentionSeconds, got.rewindSeconds, got.maxMsgHeapNum) == (3600, 1800, 500)
    assert (got.activeMsgNum, got.inactiveMsgNum, got.delayMsgNum) == (0, 0, 0)
    assert got.rewindMsgNum == got.rewindmsgNum == 0
    assert got.minMsgTime == 0
    assert isinstance(got.createTime, int) and got.createTime >= before - 1
    assert got.lastModifyTime == got.createTime
    assert "visibilityTimeout" in str(got)


def test_counters_are_read_only():
    queue_meta = QueueMeta()
    assert queue_meta.activeMsgNum is None
    with pytest.raises(AttributeError):
        queue_meta.activeMsgNum = 5


def test_create_existing_queue(queue):
    queue.create(meta(visibilityTimeout=10))
    queue.create(meta(visibilityTimeout=10))  # same attributes: Spool returns it (idempotent)
    error = expect_cmq_error(4460, queue.create, meta(visibilityTimeout=20))
    assert isinstance(error, CMQServerException)
    assert error.data["reason"] == "QUEUE_EXISTS"


def test_bad_attributes(account, queue):
    expect_cmq_error(4000, queue.create, meta(visibilityTimeout=0))  # refused by the server
    error = expect_cmq_error(4000, queue.create, meta(visibilityTimeout=-1))  # by protobuf
    assert isinstance(error, CMQClientParameterException)
    expect_cmq_error(4000, account.get_queue("9-not-a-name").create, QueueMeta())


def test_set_attributes_changes_only_what_is_set(queue):
    queue.create(meta(visibilityTimeout=10, pollingWaitSeconds=2))
    created = queue.get_attributes()
    time.sleep(1.1)  # so that lastModifyTime, in seconds, moves
    queue.set_attributes(meta(pollingWaitSeconds=5, maxMsgHeapNum=-1))  # -1: unset, as in CMQ
    got = queue.get_attributes()
    assert (got.visibilityTimeout, got.pollingWaitSeconds) == (10, 5)
    assert got.maxMsgHeapNum == created.maxMsgHeapNum
    assert got.lastModifyTime > created.lastModifyTime
    assert got.createTime == created.createTime
    # The SDK's read-modify-write pattern.
    got.visibilityTimeout = 20
    queue.set_attributes(got)
    assert queue.get_attributes().visibilityTimeout == 20
    expect_cmq_error(4000, queue.set_attributes, meta(pollingWaitSeconds=31))


def test_delete_queue(queue):
    queue.create(QueueMeta())
    queue.delete()
    error = expect_cmq_error(4440, queue.get_attributes)
    assert isinstance(error, CMQServerException)
    assert error.data == {"reason": "QUEUE_NOT_FOUND", "grpcCode": "NOT_FOUND"}
    assert "4440" in str(error)
    expect_cmq_error(4440, queue.delete)
    expect_cmq_error(4440, queue.set_attributes, meta(visibilityTimeout=5))
    expect_cmq_error(4440, queue.send_message, Message("x"))
    expect_cmq_error(4440, queue.batch_send_message, [Message("x")])
    expect_cmq_error(4440, queue.receive_message, 0)
    expect_cmq_error(4440, queue.batch_receive_message, 2, 0)
    expect_cmq_error(4440, queue.rewindQueue, int(time.time()))


def test_list_queue(account, queue_name):
    names = ["%s_%d" % (queue_name, i) for i in range(5)]
    for name in names:
        account.get_queue(name).create(QueueMeta())

    total, queue_list, next_offset = account.list_queue(queue_name)
    assert total == 5
    assert queue_list == [{"queueId": name, "queueName": name} for name in names]
    assert next_offset == ""

    # As in CMQ's SDK: list_queue(searchWord, limit, offset), next_offset to continue.
    total, queue_list, next_offset = account.list_queue(queue_name, 2)
    assert (total, [q["queueName"] for q in queue_list], next_offset) == (5, names[:2], 2)
    total, queue_list, next_offset = account.list_queue(queue_name, 2, next_offset)
    assert ([q["queueName"] for q in queue_list], next_offset) == (names[2:4], 4)
    total, queue_list, next_offset = account.list_queue(queue_name, 2, next_offset)
    assert ([q["queueName"] for q in queue_list], next_offset) == (names[4:], "")
    total, queue_list, next_offset = account.list_queue(searchWord=queue_name, offset=1, limit=3)
    assert ([q["queueName"] for q in queue_list], next_offset) == (names[1:4], 4)
    assert account.list_queue(queue_name, 10, 7) == (5, [], "")
    assert account.list_queue(queue_name + "_none") == (0, [], "")

    # Without a limit, 20 as in CMQ.
    many = ["%s_many_%02d" % (queue_name, i) for i in range(21)]
    for name in many:
        account.get_queue(name).create(QueueMeta())
    total, queue_list, next_offset = account.list_queue(queue_name + "_many")
    assert (total, len(queue_list), next_offset) == (21, 20, 20)

    expect_cmq_error(4000, account.list_queue, queue_name, 0)
    expect_cmq_error(4000, account.list_queue, queue_name, 2, -1)
    expect_cmq_error(4000, account.list_queue, queue_name, "2")


def test_rewind_queue(queue):
    queue.create(meta(rewindSeconds=43200))
    start = int(time.time())
    queue.send_message(Message("i am test"))
    received = queue.receive_message(3)
    queue.delete_message(received.receiptHandle)
    assert queue.get_attributes().rewindMsgNum == 1

    assert queue.rewindQueue(start) == 1
    again = queue.receive_message(3)
    assert (again.msgId, again.msgBody, again.dequeueCount) == (received.msgId, "i am test", 2)
    expect_cmq_error(4000, queue.rewindQueue, start - 86400)  # outside the window
    expect_cmq_error(4000, queue.rewindQueue, "2017-03-05")


def test_rewind_needs_rewind_seconds(queue):
    queue.create(QueueMeta())
    error = expect_cmq_error(6050, queue.rewindQueue, int(time.time()))
    assert error.data["reason"] == "REWIND_DISABLED"


# -- messages ---------------------------------------------------------------------------------


def test_send_receive_delete(queue):
    queue.create(meta(visibilityTimeout=60))
    before = int(time.time())
    sent = queue.send_message(Message("I am test message."))
    assert sent.msgId and sent.msgBody == "I am test message."

    received = queue.receive_message(3)
    assert received.msgId == sent.msgId
    assert received.msgBody == "I am test message."
    assert received.receiptHandle
    assert received.dequeueCount == 1
    for name in ("enqueueTime", "firstDequeueTime", "nextVisibleTime"):
        assert isinstance(getattr(received, name), int)
    assert before - 1 <= received.enqueueTime <= received.firstDequeueTime
    assert 59 <= received.nextVisibleTime - received.firstDequeueTime <= 61
    assert "receiptHandle" in str(received)
    queue_meta = queue.get_attributes()
    assert (queue_meta.activeMsgNum, queue_meta.inactiveMsgNum) == (0, 1)
    assert queue_meta.minMsgTime == received.enqueueTime

    queue.delete_message(received.receiptHandle)
    assert queue.get_attributes().inactiveMsgNum == 0


def test_no_message_is_7000(queue):
    queue.create(meta(pollingWaitSeconds=1))
    error = expect_cmq_error(7000, queue.receive_message, 0)
    assert isinstance(error, CMQServerException)
    expect_cmq_error(7000, queue.batch_receive_message, 5, 0)
    started = time.monotonic()
    expect_cmq_error(7000, queue.receive_message)  # None: the queue's pollingWaitSeconds, 1 s
    assert 0.8 <= time.monotonic() - started < 10


def test_bodies(account, queue):
    queue.create(meta(maxMsgSize=1024))
    binary = bytes(range(256))
    for body in ["ascii", "中文消息 ✓", binary, b"utf-8 bytes"]:
        queue.send_message(Message(body))
    received = [m.msgBody for m in queue.batch_receive_message(16, 0)]
    # Text comes back as str, and bytes that are not UTF-8 as bytes.
    assert received == ["ascii", "中文消息 ✓", binary, "utf-8 bytes"]

    expect_cmq_error(4400, queue.send_message, Message("x" * 1025))
    expect_cmq_error(4000, queue.send_message, Message(""))
    error = expect_cmq_error(4000, queue.send_message, Message(12345))
    assert isinstance(error, CMQClientParameterException)


def test_encoding_base64(account, queue, queue_name):
    queue.create(QueueMeta())
    queue.set_encoding(True)
    queue.send_message(Message(b"\x00\xff binary"))
    raw = account.get_client().receive_messages(queue_name)[0]
    assert raw.body == base64.b64encode(b"\x00\xff binary")  # what other CMQ clients would read
    account.get_client().delete_message(queue_name, raw.receipt_handle)
    queue.send_message(Message("text"))
    assert queue.receive_message(0).msgBody == "text"


def test_delayed_messages(queue):
    queue.create(QueueMeta())
    queue.send_message(Message("i am test"), 1)
    queue.send_message(Message("i am test"), delayTime=600)  # the SDK's keyword
    queue.send_message(Message("i am test"), delay=600)
    queue_meta = queue.get_attributes()
    assert (queue_meta.activeMsgNum, queue_meta.delayMsgNum) == (0, 3)
    expect_cmq_error(7000, queue.receive_message, 0)
    assert queue.receive_message(10).msgBody == "i am test"


def test_batch_send_and_receive(queue):
    queue.create(meta(pollingWaitSeconds=10))
    messages = [Message("I am test message %s." % i) for i in range(3)]
    sent = queue.batch_send_message(messages)
    assert [m.msgBody for m in sent] == [m.msgBody for m in messages]
    assert len({m.msgId for m in sent}) == 3

    started = time.monotonic()
    received = queue.batch_receive_message(16, 3)  # fewer visible than asked: no blocking
    assert time.monotonic() - started < 3
    assert [m.msgId for m in received] == [m.msgId for m in sent]
    assert [m.msgBody for m in received] == [m.msgBody for m in messages]
    queue.batch_delete_message([m.receiptHandle for m in received])
    assert queue.get_attributes().inactiveMsgNum == 0

    # The delay applies to every message of the batch.
    queue.batch_send_message([Message("a"), Message("b")], 600)
    assert queue.get_attributes().delayMsgNum == 2
    queue.batch_send_message([Message("c")], delayTime=600)
    assert queue.get_attributes().delayMsgNum == 3

    expect_cmq_error(4000, queue.batch_send_message, [])
    expect_cmq_error(4400, queue.batch_send_message, [Message("x")] * 17)
    expect_cmq_error(4000, queue.batch_receive_message, 17, 0)


def test_stale_handle_is_4430(queue):
    queue.create(meta(visibilityTimeout=1))
    queue.send_message(Message("m"))
    first = queue.receive_message(0)
    time.sleep(1.2)
    second = queue.receive_message(5)
    assert second.dequeueCount == 2
    error = expect_cmq_error(4430, queue.delete_message, first.receiptHandle)
    assert error.data["reason"] == "RECEIPT_HANDLE_STALE"
    expect_cmq_error(4000, queue.delete_message, "malformed")
    queue.delete_message(second.receiptHandle)
    queue.delete_message(second.receiptHandle)  # deleting again is fine


def test_batch_delete_reports_failures_as_6010(queue):
    queue.create(meta(visibilityTimeout=1))
    queue.batch_send_message([Message("1"), Message("2")])
    stale = queue.batch_receive_message(2, 0)
    time.sleep(1.2)
    fresh = queue.batch_receive_message(2, 5)
    handles = [fresh[0].receiptHandle, stale[1].receiptHandle, "malformed"]

    error = expect_cmq_error(6010, queue.batch_delete_message, handles)
    assert isinstance(error, CMQServerException)
    errors = {e["receiptHandle"]: e for e in error.data["errorList"]}
    assert set(errors) == {stale[1].receiptHandle, "malformed"}
    assert errors[stale[1].receiptHandle]["code"] == 4430
    assert errors["malformed"]["code"] == 4000
    assert all(e["message"] for e in errors.values())
    # The good handle was deleted all the same.
    queue_meta = queue.get_attributes()
    assert (queue_meta.activeMsgNum + queue_meta.inactiveMsgNum) == 1

    expect_cmq_error(4000, queue.batch_delete_message, [])


def test_backlog_full_is_4410(queue):
    queue.create(meta(maxMsgHeapNum=1))
    queue.send_message(Message("1"))
    expect_cmq_error(4410, queue.send_message, Message("2"))
