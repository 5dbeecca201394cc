"""boto3, unchanged, against Spool's SQS JSON API (--http-listen)."""

from __future__ import annotations

import hashlib
import threading
import time
import uuid

import pytest
from botocore.exceptions import ClientError


def fresh(prefix: str = "sqs") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8")).hexdigest()


def error_code(excinfo) -> str:
    return excinfo.value.response["Error"]["Code"]


def test_queue_lifecycle_urls_list_and_attributes(sqs, server):
    name = fresh()
    url = sqs.create_queue(
        QueueName=name,
        Attributes={"VisibilityTimeout": "7", "ReceiveMessageWaitTimeSeconds": "2",
                    "MessageRetentionPeriod": "3600", "MaximumMessageSize": "2048"},
    )["QueueUrl"]
    assert url == f"{server.endpoint}/000000000000/{name}"
    # CreateQueue again without attributes, and GetQueueUrl: the same, stable URL.
    assert sqs.create_queue(QueueName=name)["QueueUrl"] == url
    assert sqs.get_queue_url(QueueName=name)["QueueUrl"] == url
    assert url in sqs.list_queues(QueueNamePrefix=name)["QueueUrls"]
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attributes["VisibilityTimeout"] == "7"
    assert attributes["ReceiveMessageWaitTimeSeconds"] == "2"
    assert attributes["MessageRetentionPeriod"] == "3600"
    assert attributes["MaximumMessageSize"] == "2048"
    assert attributes["ApproximateNumberOfMessages"] == "0"
    assert attributes["QueueArn"] == f"arn:aws:sqs:us-east-1:000000000000:{name}"
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"VisibilityTimeout": "9"})
    one = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["VisibilityTimeout"])
    assert one["Attributes"] == {"VisibilityTimeout": "9"}
    # Other attributes than the queue has: SQS's QueueAlreadyExists.
    with pytest.raises(ClientError) as excinfo:
        sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "8"})
    assert error_code(excinfo) == "QueueAlreadyExists"
    sqs.delete_queue(QueueUrl=url)
    with pytest.raises(sqs.exceptions.QueueDoesNotExist):
        sqs.get_queue_url(QueueName=name)


def test_list_queues_pages_with_next_token(sqs):
    prefix = fresh("page")
    urls = [sqs.create_queue(QueueName=f"{prefix}-{i}")["QueueUrl"] for i in range(3)]
    first = sqs.list_queues(QueueNamePrefix=prefix, MaxResults=2)
    assert first["QueueUrls"] == urls[:2]
    second = sqs.list_queues(QueueNamePrefix=prefix, MaxResults=2, NextToken=first["NextToken"])
    assert second["QueueUrls"] == urls[2:]
    assert "NextToken" not in second


def test_send_receive_delete_with_system_attributes_and_md5(sqs):
    url = sqs.create_queue(QueueName=fresh())["QueueUrl"]
    body = "héllo, wörld ✓"
    sent = sqs.send_message(QueueUrl=url, MessageBody=body)
    assert sent["MD5OfMessageBody"] == md5(body)
    before_ms = int(time.time() * 1000) - 60_000
    got = sqs.receive_message(QueueUrl=url, AttributeNames=["All"], WaitTimeSeconds=1)
    [message] = got["Messages"]
    assert message["MessageId"] == sent["MessageId"]
    assert message["Body"] == body
    assert message["MD5OfBody"] == md5(body)
    attributes = message["Attributes"]
    assert attributes["ApproximateReceiveCount"] == "1"
    assert int(attributes["SentTimestamp"]) >= before_ms
    assert int(attributes["ApproximateFirstReceiveTimestamp"]) >= int(attributes["SentTimestamp"])
    # Only the names asked for.
    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"],
                                  VisibilityTimeout=0)
    again = sqs.receive_message(QueueUrl=url, AttributeNames=["ApproximateReceiveCount"],
                                WaitTimeSeconds=5)["Messages"][0]
    assert again["Attributes"] == {"ApproximateReceiveCount": "2"}
    sqs.delete_message(QueueUrl=url, ReceiptHandle=again["ReceiptHandle"])
    # The first receive's handle is stale: SQS answers success and deletes nothing.
    sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    assert "Messages" not in sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0)


def test_batches_and_their_limits(sqs):
    url = sqs.create_queue(QueueName=fresh())["QueueUrl"]
    entries = [{"Id": f"e{i}", "MessageBody": f"body {i}"} for i in range(10)]
    sent = sqs.send_message_batch(QueueUrl=url, Entries=entries)
    assert sent.get("Failed", []) == []
    assert [s["Id"] for s in sent["Successful"]] == [e["Id"] for e in entries]
    for entry, success in zip(entries, sent["Successful"]):
        assert success["MD5OfMessageBody"] == md5(entry["MessageBody"])
    received = []
    while len(received) < 10:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        received += got.get("Messages", [])
    assert sorted(m["Body"] for m in received) == sorted(e["MessageBody"] for e in entries)
    changed = sqs.change_message_visibility_batch(QueueUrl=url, Entries=[
        {"Id": "a", "ReceiptHandle": received[0]["ReceiptHandle"], "VisibilityTimeout": 60},
        {"Id": "b", "ReceiptHandle": "not-a-handle", "VisibilityTimeout": 60},
    ])
    assert [s["Id"] for s in changed["Successful"]] == ["a"]
    assert [(f["Id"], f["Code"], f["SenderFault"]) for f in changed["Failed"]] == [
        ("b", "ReceiptHandleIsInvalid", True)]
    deleted = sqs.delete_message_batch(QueueUrl=url, Entries=[
        {"Id": f"d{i}", "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(received)])
    assert len(deleted["Successful"]) == 10 and deleted.get("Failed", []) == []
    with pytest.raises(ClientError) as excinfo:
        sqs.send_message_batch(QueueUrl=url, Entries=[
            {"Id": f"e{i}", "MessageBody": "x"} for i in range(11)])
    assert error_code(excinfo) == "AWS.SimpleQueueService.TooManyEntriesInBatchRequest"
    with pytest.raises(ClientError) as excinfo:
        sqs.send_message_batch(QueueUrl=url, Entries=[
            {"Id": "same", "MessageBody": "x"}, {"Id": "same", "MessageBody": "y"}])
    assert error_code(excinfo) == "AWS.SimpleQueueService.BatchEntryIdsNotDistinct"
    # One bad entry fails alone.
    mixed = sqs.send_message_batch(QueueUrl=url, Entries=[
        {"Id": "ok", "MessageBody": "fine"},
        {"Id": "late", "MessageBody": "x", "DelaySeconds": 901}])
    assert [s["Id"] for s in mixed["Successful"]] == ["ok"]
    assert [(f["Id"], f["Code"]) for f in mixed["Failed"]] == [("late", "InvalidParameterValue")]


def test_long_poll_waits_for_a_message_sent_meanwhile(sqs):
    url = sqs.create_queue(QueueName=fresh())["QueueUrl"]
    started = time.monotonic()
    assert "Messages" not in sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1)
    assert time.monotonic() - started >= 0.9
    timer = threading.Timer(1.0, lambda: sqs.send_message(QueueUrl=url, MessageBody="late"))
    timer.start()
    try:
        got = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=20)
    finally:
        timer.join()
    assert [m["Body"] for m in got["Messages"]] == ["late"]
    # The queue's own wait (ReceiveMessageWaitTimeSeconds) applies when the call gives none.
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"ReceiveMessageWaitTimeSeconds": "1"})
    started = time.monotonic()
    assert "Messages" not in sqs.receive_message(QueueUrl=url)
    assert time.monotonic() - started >= 0.9


def test_visibility_timeout_on_receive_and_delay(sqs):
    url = sqs.create_queue(QueueName=fresh())["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="again")
    first = sqs.receive_message(QueueUrl=url, VisibilityTimeout=1)["Messages"][0]
    assert "Messages" not in sqs.receive_message(QueueUrl=url)
    second = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=10,
                                 AttributeNames=["ApproximateReceiveCount"])["Messages"][0]
    assert second["MessageId"] == first["MessageId"]
    assert second["Attributes"]["ApproximateReceiveCount"] == "2"
    sqs.send_message(QueueUrl=url, MessageBody="delayed", DelaySeconds=60)
    counts = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert counts["ApproximateNumberOfMessagesDelayed"] == "1"
    assert counts["ApproximateNumberOfMessagesNotVisible"] == "1"


def test_purge_and_errors_as_sqs_says_them(sqs):
    url = sqs.create_queue(QueueName=fresh())["QueueUrl"]
    sqs.send_message_batch(QueueUrl=url, Entries=[
        {"Id": str(i), "MessageBody": "x"} for i in range(3)])
    sqs.purge_queue(QueueUrl=url)
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attributes["ApproximateNumberOfMessages"] == "0"
    with pytest.raises(ClientError) as excinfo:
        sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=11)
    assert error_code(excinfo) == "InvalidParameterValue"
    assert "MaxNumberOfMessages" in str(excinfo.value)
    with pytest.raises(ClientError) as excinfo:
        sqs.send_message(QueueUrl=url.replace("sqs-", "missing-"), MessageBody="x")
    assert error_code(excinfo) == "AWS.SimpleQueueService.NonExistentQueue"
    for fifo in ({"QueueName": fresh() + ".fifo"},
                 {"QueueName": fresh(), "Attributes": {"FifoQueue": "true"}}):
        with pytest.raises(ClientError) as excinfo:
            sqs.create_queue(**fifo)
        assert error_code(excinfo) == "InvalidAttributeName"
    with pytest.raises(ClientError) as excinfo:
        sqs.create_queue(QueueName=fresh(), Attributes={"NoSuchAttribute": "1"})
    assert error_code(excinfo) == "InvalidAttributeName"
    with pytest.raises(ClientError) as excinfo:
        sqs.change_message_visibility(QueueUrl=url, ReceiptHandle="forged", VisibilityTimeout=5)
    assert error_code(excinfo) == "ReceiptHandleIsInvalid"


def test_messages_cross_between_grpc_sqs_and_cmq(sqs, grpc, server):
    from cmq.account import Account
    from cmq.queue import Message

    name = fresh("cross")
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    # gRPC → SQS
    message_id = grpc.send_message(name, "from grpc", attributes={"origin": "grpc"})
    [received] = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=5,
                                     MessageAttributeNames=["All"])["Messages"]
    assert (received["MessageId"], received["Body"]) == (message_id, "from grpc")
    # A gRPC sender's attributes read as String attributes, with their MD5.
    expected = {"origin": {"DataType": "String", "StringValue": "grpc"}}
    assert received["MessageAttributes"] == expected
    assert received["MD5OfMessageAttributes"] == sqs_attributes_md5(expected)
    sqs.delete_message(QueueUrl=url, ReceiptHandle=received["ReceiptHandle"])
    # SQS → CMQ
    queue = Account(server.endpoint, "id", "key").get_queue(name)
    sent = sqs.send_message(QueueUrl=url, MessageBody="from sqs")
    got = queue.receive_message(5)
    assert (got.msgId, got.msgBody) == (sent["MessageId"], "from sqs")
    queue.delete_message(got.receiptHandle)
    # CMQ → gRPC
    cmq_id = queue.send_message(Message("from cmq")).msgId
    [back] = grpc.receive_messages(name, wait_seconds=5)
    assert (back.message_id, back.body) == (cmq_id, b"from cmq")
    grpc.delete_message(name, back.receipt_handle)


def sqs_attributes_md5(attributes: dict) -> str:
    """MD5OfMessageAttributes as the AWS SDKs compute it (written here from SQS's description,
    independently of the server)."""
    digest = hashlib.md5()

    def put(data: bytes) -> None:
        digest.update(len(data).to_bytes(4, "big"))
        digest.update(data)

    for name in sorted(attributes):
        attribute = attributes[name]
        put(name.encode())
        put(attribute["DataType"].encode())
        if "StringValue" in attribute:
            digest.update(b"\x01")
            put(attribute["StringValue"].encode())
        else:
            digest.update(b"\x02")
            put(attribute["BinaryValue"])
    return digest.hexdigest()


def test_message_attributes_round_trip_with_sqs_md5(sqs, grpc):
    name = fresh()
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    attributes = {
        "trace": {"DataType": "String", "StringValue": "00-abc-01"},
        "price": {"DataType": "Number.float", "StringValue": "12.50"},
        "blob": {"DataType": "Binary", "BinaryValue": bytes([0, 1, 254, 255])},
        "note": {"DataType": "String.utf8", "StringValue": "ünïcode"},
    }
    sent = sqs.send_message(QueueUrl=url, MessageBody="with attributes", MessageAttributes=attributes)
    assert sent["MD5OfMessageAttributes"] == sqs_attributes_md5(attributes)
    batch = sqs.send_message_batch(QueueUrl=url, Entries=[
        {"Id": "a", "MessageBody": "batch", "MessageAttributes": {"trace": attributes["trace"]}}])
    assert batch["Successful"][0]["MD5OfMessageAttributes"] == sqs_attributes_md5(
        {"trace": attributes["trace"]})
    # A gRPC consumer sees name → value.
    [peeked] = [m for m in grpc.peek_messages(name, max_messages=2) if m.body == b"batch"]
    assert dict(peeked.attributes) == {"trace": "00-abc-01"}
    got = sqs.receive_message(QueueUrl=url, MessageAttributeNames=["All"], MaxNumberOfMessages=2,
                              WaitTimeSeconds=1)["Messages"]
    first = next(m for m in got if m["Body"] == "with attributes")
    assert first["MessageAttributes"] == attributes
    assert first["MD5OfMessageAttributes"] == sqs_attributes_md5(attributes)
    # Only the names asked for, and the digest of those.
    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=first["ReceiptHandle"],
                                  VisibilityTimeout=0)
    again = sqs.receive_message(QueueUrl=url, MessageAttributeNames=["price", "blob"],
                                WaitTimeSeconds=5)["Messages"][0]
    wanted = {k: attributes[k] for k in ("price", "blob")}
    assert again["MessageAttributes"] == wanted
    assert again["MD5OfMessageAttributes"] == sqs_attributes_md5(wanted)
    for bad in ({"AWS.x": {"DataType": "String", "StringValue": "v"}},
                {"n": {"DataType": "Number", "StringValue": "not a number"}},
                {f"k{i}": {"DataType": "String", "StringValue": "v"} for i in range(11)}):
        with pytest.raises(ClientError) as excinfo:
            sqs.send_message(QueueUrl=url, MessageBody="x", MessageAttributes=bad)
        assert error_code(excinfo) == "InvalidParameterValue"


def test_dead_letter_queue_redrive_policy_and_redrive(sqs):
    dlq_name = fresh("dlq")
    dlq = sqs.create_queue(QueueName=dlq_name)["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])[
        "Attributes"]["QueueArn"]
    policy = '{"deadLetterTargetArn":"%s","maxReceiveCount":"1"}' % dlq_arn
    source = sqs.create_queue(QueueName=fresh("src"), Attributes={"RedrivePolicy": policy})[
        "QueueUrl"]
    shown = sqs.get_queue_attributes(QueueUrl=source, AttributeNames=["RedrivePolicy"])
    assert json_loads(shown["Attributes"]["RedrivePolicy"]) == {
        "deadLetterTargetArn": dlq_arn, "maxReceiveCount": 1}
    assert sqs.list_dead_letter_source_queues(QueueUrl=dlq)["queueUrls"] == [source]
    sqs.send_message(QueueUrl=source, MessageBody="poison",
                     MessageAttributes={"k": {"DataType": "String", "StringValue": "v"}})
    first = sqs.receive_message(QueueUrl=source, VisibilityTimeout=1)["Messages"][0]
    # Received once and not deleted: the next receive moves it to the dead-letter queue.
    time.sleep(1.5)
    assert "Messages" not in sqs.receive_message(QueueUrl=source, WaitTimeSeconds=1)
    dead = sqs.receive_message(QueueUrl=dlq, WaitTimeSeconds=5, AttributeNames=["All"],
                               MessageAttributeNames=["All"], VisibilityTimeout=1)["Messages"][0]
    assert (dead["MessageId"], dead["Body"]) == (first["MessageId"], "poison")
    assert dead["Attributes"]["DeadLetterQueueSourceArn"].endswith(":" + source.rsplit("/", 1)[1])
    assert dead["MessageAttributes"] == {"k": {"DataType": "String", "StringValue": "v"}}
    # The redrive (SQS's StartMessageMoveTask) moves it back once it is visible again.
    time.sleep(1.5)
    assert sqs.start_message_move_task(SourceArn=dlq_arn)["TaskHandle"]
    back = sqs.receive_message(QueueUrl=source, WaitTimeSeconds=5)["Messages"][0]
    assert (back["MessageId"], back["Body"]) == (first["MessageId"], "poison")
    # Removing the policy.
    sqs.set_queue_attributes(QueueUrl=source, Attributes={"RedrivePolicy": ""})
    assert sqs.list_dead_letter_source_queues(QueueUrl=dlq)["queueUrls"] == []


def json_loads(text: str):
    import json

    return json.loads(text)
