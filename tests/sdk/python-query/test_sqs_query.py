"""boto3 1.26 / botocore 1.29, unchanged, whose SQS model speaks the query protocol
(form-encoded Action=..., XML answers), against Spool's HTTP port: the same actions as the JSON
protocol (tests/sdk/python/test_sqs.py), over the same implementation."""

from __future__ import annotations

import hashlib
import json
import time
import urllib.request
import uuid

import pytest
from botocore.exceptions import ClientError


def fresh(prefix: str = "query") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8")).hexdigest()


def error_code(excinfo) -> str:
    return excinfo.value.response["Error"]["Code"]


def json_call(server, action: str, payload: dict) -> dict:
    """One call of the JSON protocol, by hand (this venv's botocore speaks only the query one)."""
    request = urllib.request.Request(
        server.endpoint + "/",
        data=json.dumps(payload).encode(),
        headers={"X-Amz-Target": f"AmazonSQS.{action}",
                 "Content-Type": "application/x-amz-json-1.0"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read() or b"{}")


def test_queue_lifecycle_list_and_attributes(sqs, server):
    name = fresh()
    url = sqs.create_queue(
        QueueName=name, Attributes={"VisibilityTimeout": "7", "MaximumMessageSize": "2048"}
    )["QueueUrl"]
    assert url == f"{server.endpoint}/000000000000/{name}"
    assert sqs.create_queue(QueueName=name)["QueueUrl"] == url
    assert sqs.get_queue_url(QueueName=name)["QueueUrl"] == url
    assert sqs.list_queues(QueueNamePrefix=name)["QueueUrls"] == [url]
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert (attributes["VisibilityTimeout"], attributes["MaximumMessageSize"]) == ("7", "2048")
    assert attributes["QueueArn"] == f"arn:aws:sqs:us-east-1:000000000000:{name}"
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"VisibilityTimeout": "9"})
    one = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["VisibilityTimeout"])
    assert one["Attributes"] == {"VisibilityTimeout": "9"}
    with pytest.raises(ClientError) as excinfo:
        sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "8"})
    assert error_code(excinfo) == "QueueAlreadyExists"
    # Pages: MaxResults and NextToken.
    prefix = fresh("page")
    urls = [sqs.create_queue(QueueName=f"{prefix}-{i}")["QueueUrl"] for i in range(3)]
    first = sqs.list_queues(QueueNamePrefix=prefix, MaxResults=2)
    assert first["QueueUrls"] == urls[:2]
    second = sqs.list_queues(QueueNamePrefix=prefix, MaxResults=2, NextToken=first["NextToken"])
    assert second["QueueUrls"] == urls[2:] and "NextToken" not in second
    sqs.delete_queue(QueueUrl=url)
    # SQS's XML error, which botocore maps to its modeled exception.
    with pytest.raises(sqs.exceptions.QueueDoesNotExist) as excinfo:
        sqs.get_queue_url(QueueName=name)
    assert error_code(excinfo) == "AWS.SimpleQueueService.NonExistentQueue"
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_messages_with_attributes_md5s_and_visibility(sqs):
    url = sqs.create_queue(QueueName=fresh())["QueueUrl"]
    body = "héllo <wörld> & ✓\r\nline two"
    attributes = {
        "kind": {"DataType": "String", "StringValue": "order & <co>"},
        "count": {"DataType": "Number.int", "StringValue": "42"},
        "blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01\xff"},
    }
    # botocore checks MD5OfMessageBody and MD5OfMessageAttributes of every answer.
    sent = sqs.send_message(QueueUrl=url, MessageBody=body, MessageAttributes=attributes)
    assert sent["MD5OfMessageBody"] == md5(body)
    got = sqs.receive_message(QueueUrl=url, AttributeNames=["All"],
                              MessageAttributeNames=["All"], WaitTimeSeconds=1)
    [message] = got["Messages"]
    assert message["Body"] == body and message["MessageId"] == sent["MessageId"]
    assert message["MD5OfMessageAttributes"] == sent["MD5OfMessageAttributes"]
    assert message["MessageAttributes"]["blob"]["BinaryValue"] == b"\x00\x01\xff"
    assert message["MessageAttributes"]["count"] == {"DataType": "Number.int",
                                                     "StringValue": "42"}
    assert message["Attributes"]["ApproximateReceiveCount"] == "1"
    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"],
                                  VisibilityTimeout=0)
    again = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=5, VisibilityTimeout=30)
    [message] = again["Messages"]
    sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    assert "Messages" not in sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0)


def test_batches_with_a_failed_entry_and_purge(sqs):
    url = sqs.create_queue(QueueName=fresh())["QueueUrl"]
    sent = sqs.send_message_batch(QueueUrl=url, Entries=[
        {"Id": "a", "MessageBody": "one"},
        {"Id": "b", "MessageBody": "two", "DelaySeconds": 0,
         "MessageAttributes": {"n": {"DataType": "Number", "StringValue": "1"}}},
        {"Id": "late", "MessageBody": "x", "DelaySeconds": 901},
    ])
    assert sorted(entry["Id"] for entry in sent["Successful"]) == ["a", "b"]
    [failed] = sent["Failed"]
    assert failed["Id"] == "late" and failed["SenderFault"] is True
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
    handles = {m["Body"]: m["ReceiptHandle"] for m in got["Messages"]}
    assert sorted(handles) == ["one", "two"]
    changed = sqs.change_message_visibility_batch(QueueUrl=url, Entries=[
        {"Id": "c1", "ReceiptHandle": handles["one"], "VisibilityTimeout": 60},
        {"Id": "c2", "ReceiptHandle": "not-a-handle", "VisibilityTimeout": 60},
    ])
    assert [entry["Id"] for entry in changed["Successful"]] == ["c1"]
    assert [entry["Id"] for entry in changed["Failed"]] == ["c2"]
    deleted = sqs.delete_message_batch(QueueUrl=url, Entries=[
        {"Id": "d1", "ReceiptHandle": handles["one"]},
        {"Id": "d2", "ReceiptHandle": handles["two"]},
    ])
    assert sorted(entry["Id"] for entry in deleted["Successful"]) == ["d1", "d2"]
    with pytest.raises(ClientError) as excinfo:
        sqs.send_message_batch(QueueUrl=url, Entries=[
            {"Id": str(i), "MessageBody": "x"} for i in range(11)])
    assert error_code(excinfo) == "AWS.SimpleQueueService.TooManyEntriesInBatchRequest"
    sqs.send_message(QueueUrl=url, MessageBody="to purge")
    sqs.purge_queue(QueueUrl=url)
    attributes = sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]
    assert attributes == {"ApproximateNumberOfMessages": "0"}


def test_dead_letters_and_the_other_protocol(sqs, server):
    dead = sqs.create_queue(QueueName=fresh("dead"))["QueueUrl"]
    dead_arn = sqs.get_queue_attributes(QueueUrl=dead, AttributeNames=["QueueArn"])[
        "Attributes"]["QueueArn"]
    policy = json.dumps({"deadLetterTargetArn": dead_arn, "maxReceiveCount": 1})
    source = sqs.create_queue(QueueName=fresh("source"),
                              Attributes={"RedrivePolicy": policy})["QueueUrl"]
    assert sqs.list_dead_letter_source_queues(QueueUrl=dead)["queueUrls"] == [source]
    # Sent over the JSON protocol, received over the query protocol, and the other way.
    json_call(server, "SendMessage", {"QueueUrl": source, "MessageBody": "from JSON"})
    [message] = sqs.receive_message(QueueUrl=source, WaitTimeSeconds=1,
                                    VisibilityTimeout=1)["Messages"]
    assert message["Body"] == "from JSON"
    sqs.send_message(QueueUrl=dead, MessageBody="from the query protocol")
    got = json_call(server, "ReceiveMessage", {"QueueUrl": dead, "WaitTimeSeconds": 1})
    assert [m["Body"] for m in got["Messages"]] == ["from the query protocol"]
    # Over maxReceiveCount: a receive after its visibility timeout moves it to the dead-letter
    # queue (received nowhere); then the dead-letter queue holds both messages.
    def dead_count() -> int:
        attributes = sqs.get_queue_attributes(
            QueueUrl=dead, AttributeNames=["ApproximateNumberOfMessages",
                                           "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
        return sum(int(value) for value in attributes.values())

    deadline = time.monotonic() + 15
    while dead_count() < 2 and time.monotonic() < deadline:
        assert "Messages" not in sqs.receive_message(QueueUrl=source, WaitTimeSeconds=1)
    assert dead_count() == 2


def test_sigv4_signed_query_requests(tmp_path_factory):
    """With an auth file: botocore's SigV4 over a form body is verified like the JSON one's."""
    import boto3

    from conftest import run_server

    workdir = tmp_path_factory.mktemp("spool-query-signed")
    auth_file = workdir / "principals.toml"
    auth_file.write_text(
        "[[principals]]\n"
        'name = "query-app"\n'
        'signing_key_id = "AKIDQUERY"\n'
        'signing_secret = "a-query-protocol-signing-secret"\n'
        "[[principals.grants]]\n"
        'queues = "signed-*"\n'
        'actions = ["send", "receive", "admin"]\n',
        encoding="utf-8",
    )

    def client(server, secret):
        return boto3.client("sqs", endpoint_url=server.endpoint, region_name="eu-west-3",
                            aws_access_key_id="AKIDQUERY", aws_secret_access_key=secret)

    with run_server(workdir, ["--auth-file", str(auth_file)]) as server:
        signed = client(server, "a-query-protocol-signing-secret")
        url = signed.create_queue(QueueName=fresh("signed"))["QueueUrl"]
        signed.send_message(QueueUrl=url, MessageBody="signed & sent")
        [message] = signed.receive_message(QueueUrl=url, WaitTimeSeconds=1)["Messages"]
        assert message["Body"] == "signed & sent"
        with pytest.raises(ClientError) as excinfo:
            client(server, "not-the-secret").list_queues()
        assert error_code(excinfo) == "SignatureDoesNotMatch"
        assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        with pytest.raises(ClientError) as excinfo:
            signed.create_queue(QueueName="other-queue")
        assert error_code(excinfo) == "AccessDenied"
