"""Signed requests on a server with an auth file: boto3's SigV4 and the CMQ SDK's signature,
made with a principal's signing key; a wrong secret, a stale timestamp and a replayed nonce
are refused, and grants apply as on gRPC."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import boto3
import botocore.auth
import pytest
from botocore.exceptions import ClientError
from cmq.account import Account
from cmq.cmq_exception import CMQServerException
from cmq.queue import Message, QueueMeta

from conftest import run_server

KEY_ID = "AKIDSPOOLTEST"
SECRET = "a-signing-secret-of-spool-tests"


@pytest.fixture(scope="module")
def protected(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("spool-signed")
    auth_file = workdir / "principals.toml"
    auth_file.write_text(
        "[[principals]]\n"
        'name = "sdk-app"\n'
        f'signing_key_id = "{KEY_ID}"\n'
        f'signing_secret = "{SECRET}"\n'
        "[[principals.grants]]\n"
        'queues = "signed-*"\n'
        'actions = ["send", "receive", "admin"]\n',
        encoding="utf-8",
    )
    with run_server(workdir, ["--auth-file", str(auth_file)]) as server:
        yield server


def sqs_client(server, secret=SECRET, key_id=KEY_ID):
    return boto3.client("sqs", endpoint_url=server.endpoint, region_name="eu-west-3",
                        aws_access_key_id=key_id, aws_secret_access_key=secret)


def error_code(excinfo) -> str:
    return excinfo.value.response["Error"]["Code"]


def test_sigv4_signed_requests_work_and_grants_apply(protected):
    sqs = sqs_client(protected)
    url = sqs.create_queue(QueueName=f"signed-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="signed")
    assert sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1)["Messages"][0]["Body"] == "signed"
    with pytest.raises(ClientError) as excinfo:
        sqs.create_queue(QueueName="other-queue")
    assert error_code(excinfo) == "AccessDenied"
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_sigv4_refuses_a_wrong_secret_an_unknown_key_and_a_stale_date(protected, monkeypatch):
    with pytest.raises(ClientError) as excinfo:
        sqs_client(protected, secret="not-the-secret").list_queues()
    assert error_code(excinfo) == "SignatureDoesNotMatch"
    with pytest.raises(ClientError) as excinfo:
        sqs_client(protected, key_id="AKIDUNKNOWN").list_queues()
    assert error_code(excinfo) == "InvalidClientTokenId"
    # A request signed an hour ago (botocore reads the time through this function).
    assert hasattr(botocore.auth, "get_current_datetime")
    real = botocore.auth.get_current_datetime
    monkeypatch.setattr(botocore.auth, "get_current_datetime",
                        lambda *a, **k: real(*a, **k) - __import__("datetime").timedelta(hours=1))
    with pytest.raises(ClientError) as excinfo:
        sqs_client(protected).list_queues()
    assert error_code(excinfo) == "SignatureDoesNotMatch"
    assert "expired" in str(excinfo.value)


def cmq_queue(server, name, secret=SECRET, method="sha256"):
    account = Account(server.endpoint, KEY_ID, secret)
    account.set_sign(method)
    return account, account.get_queue(name)


@pytest.mark.parametrize("method", ["sha1", "sha256"])
def test_cmq_signed_requests_work(protected, method):
    name = f"signed-{uuid.uuid4().hex[:8]}"
    _, queue = cmq_queue(protected, name, method=method)
    meta = QueueMeta()
    meta.queueName = name
    queue.create(meta)
    queue.send_message(Message("signed"))
    assert queue.receive_message(1).msgBody == "signed"


def test_cmq_refuses_a_wrong_secret_a_stale_timestamp_and_a_replayed_nonce(protected):
    name = f"signed-{uuid.uuid4().hex[:8]}"
    _, queue = cmq_queue(protected, name, secret="not-the-secret")
    with pytest.raises(CMQServerException) as excinfo:
        queue.create(QueueMeta())
    assert excinfo.value.code == 4100
    account, queue = cmq_queue(protected, name)
    queue.create(QueueMeta())
    client = account.cmq_client
    stale = {"queueName": name, "msgBody": "x", "Timestamp": int(time.time()) - 3600}
    with pytest.raises(CMQServerException) as excinfo:
        client.check_status(client.request("SendMessage", stale))
    assert excinfo.value.code == 4100 and "Timestamp" in excinfo.value.message
    once = {"queueName": name, "msgBody": "x", "Nonce": 424242}
    client.check_status(client.request("SendMessage", once))
    with pytest.raises(CMQServerException) as excinfo:
        client.check_status(client.request("SendMessage", once))
    assert excinfo.value.code == 4100 and "Nonce" in excinfo.value.message
    # Grants apply: the principal may not touch other queues.
    _, other = cmq_queue(protected, "other-queue")
    with pytest.raises(CMQServerException) as excinfo:
        other.send_message(Message("x"))
    assert excinfo.value.code == 4101


def test_cmq_topic_actions_are_signed_and_granted_like_queue_actions(protected):
    from cmq.subscription import SubscriptionMeta
    from cmq.topic import Message as TopicMessage, TopicMeta

    name = f"signed-{uuid.uuid4().hex[:8]}"
    account, queue = cmq_queue(protected, f"{name}-q")
    queue.create(QueueMeta())
    topic = account.get_topic(name)
    topic.create(TopicMeta())
    meta = SubscriptionMeta()
    meta.Endpoint, meta.Protocal = f"{name}-q", "queue"
    account.get_subscription(name, "sub").create(meta)
    topic.publish_message(TopicMessage("signed fan-out"))
    assert queue.receive_message(1).msgBody == "signed fan-out"
    # A wrong secret: 4100, on a topic action as on a queue's.
    wrong, _ = cmq_queue(protected, f"{name}-q", secret="not-the-secret")
    with pytest.raises(CMQServerException) as excinfo:
        wrong.get_topic(name).publish_message(TopicMessage("x"))
    assert excinfo.value.code == 4100
    # A replayed nonce: 4100.
    client = account.cmq_client
    once = {"topicName": name, "msgBody": "x", "Nonce": 434343}
    client.check_status(client.request("PublishMessage", once))
    with pytest.raises(CMQServerException) as excinfo:
        client.check_status(client.request("PublishMessage", once))
    assert excinfo.value.code == 4100 and "Nonce" in excinfo.value.message
    # Grants: topic names are granted as queue names are.
    with pytest.raises(CMQServerException) as excinfo:
        account.get_topic("other-topic").create(TopicMeta())
    assert excinfo.value.code == 4101
