"""Against protected servers: the CMQ facade with an auth file (its keys are a bearer token), and
the client over TLS with a CA of the test's own."""

from __future__ import annotations

import uuid

import grpc
import pytest
from conftest import SECRET_ID, SECRET_KEY
from spool_client import Client, SpoolError
from spool_client.cmq import Account, CMQServerException, Message, QueueMeta
from spool_client.cmq.account import bearer_token


def granted_name() -> str:
    """A queue name the test principal's grant ("cmq-*") covers."""
    return "cmq-" + uuid.uuid4().hex[:12]


def test_cmq_code_runs_unchanged_with_the_principals_keys(protected_server):
    account = Account(protected_server.endpoint, SECRET_ID, SECRET_KEY)
    queue = account.get_queue(granted_name())
    meta = QueueMeta()
    meta.visibilityTimeout = 10
    queue.create(meta)
    queue.send_message(Message("I am test message."))
    message = queue.receive_message(1)
    assert message.msgBody == "I am test message."
    queue.delete_message(message.receiptHandle)
    total, listed, _ = account.list_queue("cmq-")
    assert queue.queue_name in [entry["queueName"] for entry in listed]
    assert total == len(listed)
    account.close()


def test_wrong_or_missing_keys_are_cmq_4100_and_other_queues_4101(protected_server):
    for secret_id, secret_key in [(SECRET_ID, "wrong"), ("other-id", SECRET_KEY), ("", "")]:
        with Account(protected_server.endpoint, secret_id, secret_key) as account:
            with pytest.raises(CMQServerException) as caught:
                account.get_queue(granted_name()).get_attributes()
            assert caught.value.code == 4100, caught.value
            assert caught.value.data["grpcCode"] == "UNAUTHENTICATED"
    with Account(protected_server.endpoint, SECRET_ID, SECRET_KEY) as account:
        with pytest.raises(CMQServerException) as caught:
            account.get_queue("billing").create(QueueMeta())
        assert caught.value.code == 4101, caught.value
        assert "billing" in caught.value.message and "admin" in caught.value.message


def test_the_token_is_secret_id_colon_secret_key():
    assert bearer_token("AKID", "key") == "AKID:key"
    assert bearer_token("AKID", "") is None


def test_tls_with_the_servers_ca_and_a_token(tls_server):
    token = f"{SECRET_ID}:{SECRET_KEY}"
    with Client(tls_server.endpoint, ca_cert=tls_server.ca_cert, token=token) as client:
        name = granted_name()
        client.create_queue(name)
        client.send_message(name, b"over TLS")
        assert [m.body for m in client.receive_messages(name, wait_seconds=0)] == [b"over TLS"]
    # The CA as bytes works as well as its path.
    pem = tls_server.ca_cert.read_bytes()
    with Client(tls_server.endpoint, ca_cert=pem) as client:
        with pytest.raises(SpoolError) as caught:
            client.list_queues()
        assert caught.value.code == grpc.StatusCode.UNAUTHENTICATED
        assert caught.value.cmq_code == 4100


def test_tls_without_the_ca_or_in_plaintext_fails(tls_server):
    # The system's roots do not know the test's CA.
    with Client(tls_server.endpoint, timeout=5) as client:
        with pytest.raises(SpoolError) as caught:
            client.list_queues()
        assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    with Client(f"http://{tls_server.server.address}", timeout=5) as client:
        with pytest.raises(SpoolError) as caught:
            client.list_queues()
        assert caught.value.code == grpc.StatusCode.UNAVAILABLE


def test_tls_settings_need_https_and_tokens_must_be_printable():
    with pytest.raises(ValueError, match="https://"):
        Client("http://127.0.0.1:1", ca_cert=b"pem")
    with pytest.raises(ValueError, match="together"):
        Client("https://127.0.0.1:1", client_cert=b"pem")
    with pytest.raises(ValueError, match="printable ASCII"):
        Client("127.0.0.1:1", token="two words")
