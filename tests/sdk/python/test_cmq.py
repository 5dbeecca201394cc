"""Tencent's CMQ SDK for Python 3 (PyPI abmn-qcloud-cmq-sdk-py3, module `cmq`), unchanged,
running the CMQ guide's steps (shared/reference/cmq-queue-guide.txt) against Spool's CMQ v2
API at /v2/index.php."""

from __future__ import annotations

import time
import uuid

import pytest
from cmq.account import Account
from cmq.cmq_exception import CMQServerException
from cmq.queue import Message, QueueMeta


def fresh() -> str:
    return f"cmq-{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=["POST", "GET"])
def account(server, request):
    account = Account(server.endpoint, "AKIDspool", "secret")
    account.cmq_client.set_method(request.param)
    return account


def create(account, name: str, **attributes):
    queue = account.get_queue(name)
    meta = QueueMeta()
    meta.queueName = name
    for key, value in attributes.items():
        setattr(meta, key, value)
    queue.create(meta)
    return queue


def test_the_guide_steps(account):
    # 1. Create a queue with attributes.
    name = fresh()
    queue = create(account, name, visibilityTimeout=10, maxMsgSize=65536,
                   pollingWaitSeconds=10, rewindSeconds=43200)
    meta = queue.get_attributes()
    assert (meta.visibilityTimeout, meta.maxMsgSize, meta.pollingWaitSeconds,
            meta.rewindSeconds) == (10, 65536, 10, 43200)
    # 2. Send, and send a batch.
    sent = queue.send_message(Message("I am test message."))
    batch = queue.batch_send_message([Message(f"I am test message {i}.") for i in range(3)])
    assert len({m.msgId for m in batch} | {sent.msgId}) == 4
    # 3. Receive one and delete it; receive a batch and delete it.
    one = queue.receive_message(3)
    assert (one.msgId, one.msgBody, one.dequeueCount) == (sent.msgId, "I am test message.", 1)
    assert one.enqueueTime <= one.firstDequeueTime <= one.nextVisibleTime
    assert one.nextVisibleTime - one.firstDequeueTime in (9, 10, 11)
    queue.delete_message(one.receiptHandle)
    many = queue.batch_receive_message(3, 3)
    assert [m.msgBody for m in many] == [f"I am test message {i}." for i in range(3)]
    queue.batch_delete_message([m.receiptHandle for m in many])
    # Nothing left: "no message", code 7000.
    with pytest.raises(CMQServerException) as excinfo:
        queue.receive_message(1)
    assert excinfo.value.code == 7000
    # 4. Rewind: the deleted messages come back.
    meta = queue.get_attributes()
    assert meta.rewindmsgNum == 4
    queue.rewindQueue(int(time.time()) - 60)
    assert len(queue.batch_receive_message(16, 3)) == 4
    # 5. A delayed message counts as delayed.
    queue.send_message(Message("retry later"), 600)
    assert queue.get_attributes().delayMsgNum == 1
    # Attributes change.
    meta = QueueMeta()
    meta.visibilityTimeout = 20
    queue.set_attributes(meta)
    assert queue.get_attributes().visibilityTimeout == 20
    queue.delete()


def test_list_and_errors(account):
    prefix = fresh()
    for i in range(3):
        create(account, f"{prefix}-{i}")
    total, first, next_offset = account.list_queue(searchWord=prefix, limit=2)
    assert total == 3
    assert [q["queueName"] for q in first] == [f"{prefix}-0", f"{prefix}-1"]
    assert next_offset == 2
    _, rest, done = account.list_queue(searchWord=prefix, limit=2, offset=next_offset)
    assert [q["queueName"] for q in rest] == [f"{prefix}-2"] and done == ""
    with pytest.raises(CMQServerException) as excinfo:
        account.get_queue(fresh()).send_message(Message("x"))
    assert excinfo.value.code == 4440
    with pytest.raises(CMQServerException) as excinfo:
        create(account, f"{prefix}-0", visibilityTimeout=99)
    assert excinfo.value.code == 4460
    queue = create(account, f"{prefix}-vis", visibilityTimeout=1)
    queue.send_message(Message("x"))
    old = queue.receive_message(1)
    new = queue.receive_message(5)
    assert new.msgId == old.msgId
    with pytest.raises(CMQServerException) as excinfo:
        queue.delete_message(old.receiptHandle)
    assert excinfo.value.code == 4430
    # A batch with a stale handle: 6010, and each failure with its own code in errorList.
    with pytest.raises(CMQServerException) as excinfo:
        queue.batch_delete_message([new.receiptHandle, old.receiptHandle])
    assert excinfo.value.code == 6010
    assert [(e["code"], e["receiptHandle"]) for e in excinfo.value.data["errorList"]] == [
        (4430, old.receiptHandle)]
    with pytest.raises(CMQServerException) as excinfo:
        queue.batch_send_message([Message("x")] * 17)
    assert excinfo.value.code in (4000, 4400)
