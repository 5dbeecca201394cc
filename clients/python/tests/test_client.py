"""spool_client.Client against a real server: every RPC, and the errors with their CMQ codes."""

from __future__ import annotations

import datetime
import time

import pytest
import spool_client
from spool_client import Client, SpoolError, parse_endpoint
from spool_client.pb import queue_pb2 as pb

import grpc


def expect_error(call, code: grpc.StatusCode, cmq_code: int, *args, **kwargs) -> SpoolError:
    with pytest.raises(SpoolError) as caught:
        call(*args, **kwargs)
    error = caught.value
    assert error.code == code, error
    assert error.cmq_code == cmq_code, error
    assert error.reason, error
    assert error.message, error
    assert isinstance(error.__cause__, grpc.RpcError)
    return error


# -- the client itself ------------------------------------------------------------------------


def test_every_rpc_has_a_method():
    service = pb.DESCRIPTOR.services_by_name["QueueService"]
    for method in service.methods:
        snake = "".join("_" + c.lower() if c.isupper() else c for c in method.name).lstrip("_")
        assert callable(getattr(Client, snake, None)), f"Client has no method for {method.name}"


@pytest.mark.parametrize(
    "endpoint, target, secure",
    [
        ("127.0.0.1:50051", "127.0.0.1:50051", False),
        ("http://127.0.0.1:50051", "127.0.0.1:50051", False),
        ("http://localhost:50051/", "localhost:50051", False),
        ("https://spool.example:443", "spool.example:443", True),
        ("dns:///spool:50051", "dns:///spool:50051", False),
    ],
)
def test_parse_endpoint(endpoint, target, secure):
    assert parse_endpoint(endpoint) == (target, secure)


def test_accepts_http_endpoints(server, queue_name):
    with Client(server.endpoint) as client:
        assert client.create_queue(queue_name).name == queue_name


def test_unreachable_server_is_unavailable_without_cmq_code(closed_address):
    with Client(closed_address, timeout=10) as client:
        with pytest.raises(SpoolError) as caught:
            client.get_queue("Any")
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert caught.value.cmq_code is None
    assert caught.value.reason is None
    with Client(closed_address) as client, pytest.raises(SpoolError) as caught:
        client.wait_until_ready(timeout=0.2)
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE


def test_error_text_names_code_cmq_code_and_reason(client):
    error = expect_error(client.get_queue, grpc.StatusCode.NOT_FOUND, 4440, "Nope")
    assert error.reason == "QUEUE_NOT_FOUND"
    assert error.metadata["cmq_code"] == "4440"
    assert str(error) == 'queue "Nope" does not exist (NOT_FOUND, cmq_code 4440, QUEUE_NOT_FOUND)'


# -- queues -----------------------------------------------------------------------------------


def test_create_queue_with_defaults(client, queue_name):
    before = time.time()
    queue = client.create_queue(queue_name)
    assert queue.name == queue_name
    attributes = queue.attributes
    assert attributes.visibility_timeout_seconds == 30
    assert attributes.polling_wait_seconds == 0
    assert attributes.max_message_size == 65536
    assert attributes.message_retention_seconds == 345600
    assert attributes.rewind_seconds == 0
    assert attributes.max_backlog == 100_000_000
    assert queue.create_time.seconds >= int(before) - 1
    assert queue.update_time == queue.create_time
    assert queue.stats == pb.QueueStats()


def test_create_queue_with_attributes_is_idempotent(client, queue_name):
    attributes = dict(
        visibility_timeout_seconds=10,
        polling_wait_seconds=5,
        max_message_size=2048,
        message_retention_seconds=3600,
        rewind_seconds=600,
        max_backlog=1000,
    )
    created = client.create_queue(queue_name, **attributes)
    for name, value in attributes.items():
        assert getattr(created.attributes, name) == value
    assert client.create_queue(queue_name, **attributes) == created
    expect_error(
        client.create_queue,
        grpc.StatusCode.ALREADY_EXISTS,
        4460,
        queue_name,
        visibility_timeout_seconds=11,
    )


def test_create_queue_refuses_bad_names_and_values(client, queue_name):
    expect_error(client.create_queue, grpc.StatusCode.INVALID_ARGUMENT, 4000, "1-starts-with-digit")
    expect_error(client.create_queue, grpc.StatusCode.INVALID_ARGUMENT, 4000, "x" * 65)
    expect_error(
        client.create_queue,
        grpc.StatusCode.INVALID_ARGUMENT,
        4000,
        queue_name,
        visibility_timeout_seconds=0,
    )


def test_get_update_delete_queue(client, queue_name):
    client.create_queue(queue_name, visibility_timeout_seconds=10)
    assert client.get_queue(queue_name).attributes.visibility_timeout_seconds == 10

    updated = client.update_queue(queue_name, polling_wait_seconds=3, max_backlog=50)
    assert updated.attributes.polling_wait_seconds == 3
    assert updated.attributes.max_backlog == 50
    assert updated.attributes.visibility_timeout_seconds == 10  # unchanged
    assert client.get_queue(queue_name) == updated
    assert client.update_queue(queue_name).attributes == updated.attributes  # nothing to change
    expect_error(
        client.update_queue,
        grpc.StatusCode.INVALID_ARGUMENT,
        4000,
        queue_name,
        polling_wait_seconds=31,
    )

    assert client.delete_queue(queue_name) is None
    expect_error(client.get_queue, grpc.StatusCode.NOT_FOUND, 4440, queue_name)
    expect_error(client.delete_queue, grpc.StatusCode.NOT_FOUND, 4440, queue_name)
    expect_error(client.update_queue, grpc.StatusCode.NOT_FOUND, 4440, queue_name, max_backlog=1)


def test_list_queues_pages_by_prefix(client, queue_name):
    names = [f"{queue_name}_{i}" for i in range(5)]
    for name in reversed(names):
        client.create_queue(name)

    first = client.list_queues(queue_name, page_size=2)
    assert [q.name for q in first.queues] == names[:2]
    assert first.total_count == 5
    assert first.next_page_token
    second = client.list_queues(queue_name, page_size=2, page_token=first.next_page_token)
    assert [q.name for q in second.queues] == names[2:4]
    third = client.list_queues(queue_name, page_size=2, page_token=second.next_page_token)
    assert [q.name for q in third.queues] == names[4:]
    assert third.next_page_token == ""

    assert [q.name for q in client.iter_queues(queue_name, page_size=2)] == names
    assert [q.name for q in client.list_queues(queue_name).queues] == names
    assert client.list_queues(queue_name + "_none").total_count == 0
    expect_error(
        client.list_queues, grpc.StatusCode.INVALID_ARGUMENT, 4000, queue_name, page_size=1001
    )


def test_rewind_queue(client, queue_name):
    client.create_queue(queue_name, rewind_seconds=3600)
    start = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=1)
    client.send_message(queue_name, b"once")
    (message,) = client.receive_messages(queue_name)
    client.delete_message(queue_name, message.receipt_handle)
    assert client.get_queue(queue_name).stats.rewindable_messages == 1

    assert client.rewind_queue(queue_name, start) == 1
    (again,) = client.receive_messages(queue_name)
    assert again.message_id == message.message_id
    assert again.dequeue_count == 2
    client.delete_message(queue_name, again.receipt_handle)
    # Unix seconds work too, ints and floats.
    assert client.rewind_queue(queue_name, int(start.timestamp())) == 1
    assert client.rewind_queue(queue_name, time.time() + 0.0) == 0
    expect_error(
        client.rewind_queue,
        grpc.StatusCode.INVALID_ARGUMENT,
        4000,
        queue_name,
        time.time() - 7200,  # before the rewind window
    )
    with pytest.raises(TypeError):
        client.rewind_queue(queue_name, "yesterday")


def test_rewind_needs_a_rewind_window(client, queue_name):
    client.create_queue(queue_name)
    expect_error(
        client.rewind_queue, grpc.StatusCode.FAILED_PRECONDITION, 6050, queue_name, time.time()
    )
    expect_error(client.rewind_queue, grpc.StatusCode.NOT_FOUND, 4440, "Nope", time.time())


# -- messages ---------------------------------------------------------------------------------


def test_send_and_receive_message(client, queue_name):
    client.create_queue(queue_name, visibility_timeout_seconds=60)
    before = int(time.time())
    message_id = client.send_message(queue_name, "I am test message.")
    assert message_id

    (message,) = client.receive_messages(queue_name, wait_seconds=3)
    assert message.message_id == message_id
    assert message.body == b"I am test message."
    assert message.receipt_handle
    assert message.dequeue_count == 1
    assert message.enqueue_time.seconds >= before - 1
    assert message.first_dequeue_time.ToNanoseconds() >= message.enqueue_time.ToNanoseconds()
    visible_in = message.next_visible_time.seconds - message.first_dequeue_time.seconds
    assert 59 <= visible_in <= 61
    stats = client.get_queue(queue_name).stats
    assert (stats.active_messages, stats.inactive_messages) == (0, 1)
    assert stats.HasField("oldest_message_time")

    assert client.delete_message(queue_name, message.receipt_handle) is None
    client.delete_message(queue_name, message.receipt_handle)  # again: already deleted is fine
    assert client.get_queue(queue_name).stats == pb.QueueStats()


def test_bodies_are_bytes(client, queue_name):
    client.create_queue(queue_name, max_message_size=1024)
    binary = bytes(range(256)) * 4  # every byte value, 1024 bytes: the queue's maximum
    text = "消息 ✓ \x00 end"
    client.send_message(queue_name, binary)
    client.send_message(queue_name, text)
    client.send_message(queue_name, bytearray(b"\xff\xfe"))
    bodies = [m.body for m in client.receive_messages(queue_name, max_messages=3)]
    assert bodies == [binary, text.encode("utf-8"), b"\xff\xfe"]

    expect_error(
        client.send_message, grpc.StatusCode.INVALID_ARGUMENT, 4400, queue_name, binary + b"!"
    )
    expect_error(client.send_message, grpc.StatusCode.INVALID_ARGUMENT, 4000, queue_name, b"")
    with pytest.raises(TypeError):
        client.send_message(queue_name, 42)


def test_send_to_missing_queue(client):
    expect_error(client.send_message, grpc.StatusCode.NOT_FOUND, 4440, "Nope", b"x")
    expect_error(client.batch_send_messages, grpc.StatusCode.NOT_FOUND, 4440, "Nope", [b"x"])
    expect_error(client.receive_messages, grpc.StatusCode.NOT_FOUND, 4440, "Nope")
    expect_error(client.batch_delete_messages, grpc.StatusCode.NOT_FOUND, 4440, "Nope", ["0" * 32])


def test_delayed_message(client, queue_name):
    client.create_queue(queue_name)
    client.send_message(queue_name, b"later", delay_seconds=1)
    stats = client.get_queue(queue_name).stats
    assert (stats.active_messages, stats.delayed_messages) == (0, 1)
    assert client.receive_messages(queue_name, wait_seconds=0) == []
    (message,) = client.receive_messages(queue_name, wait_seconds=10)
    assert message.body == b"later"


def test_batch_send_messages(client, queue_name):
    client.create_queue(queue_name)
    ids = client.batch_send_messages(queue_name, [b"a", "b", bytearray(b"c")])
    assert len(ids) == 3 and len(set(ids)) == 3
    received = client.receive_messages(queue_name, max_messages=16)
    assert [(m.message_id, m.body) for m in received] == list(zip(ids, [b"a", b"b", b"c"]))

    # delay_seconds applies to plain bodies; a BatchSendEntry carries its own.
    client.batch_send_messages(
        queue_name,
        [b"delayed", pb.BatchSendEntry(body=b"now", delay_seconds=0)],
        delay_seconds=600,
    )
    stats = client.get_queue(queue_name).stats
    assert (stats.active_messages, stats.delayed_messages) == (1, 1)

    # All or nothing: 1 to 16 entries.
    expect_error(client.batch_send_messages, grpc.StatusCode.INVALID_ARGUMENT, 4000, queue_name, [])
    expect_error(
        client.batch_send_messages, grpc.StatusCode.INVALID_ARGUMENT, 4400, queue_name, [b"x"] * 17
    )
    expect_error(
        client.batch_send_messages, grpc.StatusCode.INVALID_ARGUMENT, 4000, queue_name, [b"x", b""]
    )
    assert client.get_queue(queue_name).stats.active_messages == 1


def test_receive_returns_what_is_visible_without_waiting_to_fill(client, queue_name):
    client.create_queue(queue_name, polling_wait_seconds=10)
    client.batch_send_messages(queue_name, [b"1", b"2"])
    started = time.monotonic()
    assert len(client.receive_messages(queue_name, max_messages=16)) == 2
    assert time.monotonic() - started < 5
    expect_error(
        client.receive_messages,
        grpc.StatusCode.INVALID_ARGUMENT,
        4000,
        queue_name,
        max_messages=17,
    )


def test_receive_waits_then_ends_empty(client, queue_name):
    # "No message" (CMQ 7000) is an empty result, not an error.
    client.create_queue(queue_name, polling_wait_seconds=1)
    started = time.monotonic()
    assert client.receive_messages(queue_name) == []  # the queue's polling wait: 1 s
    assert 0.8 <= time.monotonic() - started < 10
    started = time.monotonic()
    assert client.receive_messages(queue_name, wait_seconds=0) == []
    assert time.monotonic() - started < 0.8


def test_receive_ends_before_the_client_timeout(server, queue_name):
    with Client(server.address, timeout=1) as client:
        client.create_queue(queue_name)
        started = time.monotonic()
        assert client.receive_messages(queue_name, wait_seconds=20) == []
        assert time.monotonic() - started < 10


def test_visibility_timeout_and_stale_handles(client, queue_name):
    client.create_queue(queue_name)
    client.send_message(queue_name, b"m")
    (first,) = client.receive_messages(queue_name, visibility_timeout_seconds=1)
    assert first.next_visible_time.seconds - first.first_dequeue_time.seconds <= 2
    time.sleep(1.2)
    (second,) = client.receive_messages(queue_name, wait_seconds=5)
    assert second.message_id == first.message_id
    assert second.dequeue_count == 2
    assert second.receipt_handle != first.receipt_handle
    assert second.first_dequeue_time == first.first_dequeue_time

    error = expect_error(
        client.delete_message,
        grpc.StatusCode.FAILED_PRECONDITION,
        4430,
        queue_name,
        first.receipt_handle,
    )
    assert error.reason == "RECEIPT_HANDLE_STALE"
    expect_error(
        client.delete_message, grpc.StatusCode.INVALID_ARGUMENT, 4000, queue_name, "not-a-handle"
    )
    client.delete_message(queue_name, second.receipt_handle)


def test_batch_delete_messages_reports_each_failure(client, queue_name):
    client.create_queue(queue_name)
    client.batch_send_messages(queue_name, [b"1", b"2", b"3"])
    handles = [m.receipt_handle for m in client.receive_messages(queue_name, max_messages=3)]
    assert client.batch_delete_messages(queue_name, handles[:1]) == []

    failures = client.batch_delete_messages(queue_name, handles[1:] + ["bogus"])
    assert len(failures) == 1
    (failure,) = failures
    assert failure.receipt_handle == "bogus"
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert failure.cmq_code == 4000
    assert failure.message
    assert client.get_queue(queue_name).stats == pb.QueueStats()

    expect_error(
        client.batch_delete_messages, grpc.StatusCode.INVALID_ARGUMENT, 4000, queue_name, []
    )
    expect_error(
        client.batch_delete_messages,
        grpc.StatusCode.INVALID_ARGUMENT,
        4400,
        queue_name,
        handles * 6,
    )


def test_backlog_full(client, queue_name):
    client.create_queue(queue_name, max_backlog=2)
    client.batch_send_messages(queue_name, [b"1", b"2"])
    error = expect_error(
        client.send_message, grpc.StatusCode.RESOURCE_EXHAUSTED, 4410, queue_name, b"3"
    )
    assert error.reason == "BACKLOG_FULL"


# -- visibility changes, purge, peek ----------------------------------------------------------


def test_change_message_visibility_heartbeat_and_nack(client, queue_name):
    client.create_queue(queue_name, visibility_timeout_seconds=30)
    client.send_message(queue_name, b"work")
    [first] = client.receive_messages(queue_name)
    extended = client.change_message_visibility(queue_name, first.receipt_handle, 600)
    assert extended.seconds > time.time() + 500
    assert client.receive_messages(queue_name, wait_seconds=0) == []
    client.change_message_visibility(queue_name, first.receipt_handle, 0)
    [again] = client.receive_messages(queue_name)
    assert (again.message_id, again.dequeue_count) == (first.message_id, 2)
    expect_error(
        client.change_message_visibility,
        grpc.StatusCode.FAILED_PRECONDITION,
        4430,
        queue_name,
        first.receipt_handle,
        10,
    )
    error = expect_error(
        client.change_message_visibility,
        grpc.StatusCode.INVALID_ARGUMENT,
        4000,
        queue_name,
        again.receipt_handle,
        43201,
    )
    assert "visibility_timeout_seconds" in error.message


def test_batch_change_message_visibility_reports_each_failure(client, queue_name):
    client.create_queue(queue_name)
    client.batch_send_messages(queue_name, [b"a", b"b"])
    received = client.receive_messages(queue_name, max_messages=2)
    answer = client.batch_change_message_visibility(
        queue_name,
        [
            (received[0].receipt_handle, 0),
            pb.ChangeVisibilityEntry(receipt_handle="bogus", visibility_timeout_seconds=5),
            (received[1].receipt_handle, 120),
        ],
    )
    assert [changed.index for changed in answer.changed] == [0, 2]
    [failure] = answer.failures
    assert (failure.index, failure.receipt_handle, failure.cmq_code) == (1, "bogus", 4000)
    assert "entries[1].receipt_handle" in failure.message
    stats = client.get_queue(queue_name).stats
    assert (stats.active_messages, stats.inactive_messages) == (1, 1)


def test_purge_queue_and_rewind_it(client, queue_name):
    client.create_queue(queue_name, rewind_seconds=600)
    before = time.time() - 1
    client.batch_send_messages(queue_name, [b"a", b"b"])
    client.send_message(queue_name, b"later", delay_seconds=600)
    client.receive_messages(queue_name)
    assert client.purge_queue(queue_name) == 3
    stats = client.get_queue(queue_name).stats
    assert (stats.active_messages, stats.inactive_messages, stats.delayed_messages) == (0, 0, 0)
    assert stats.rewindable_messages == 3
    assert client.rewind_queue(queue_name, before) == 3
    expect_error(client.purge_queue, grpc.StatusCode.NOT_FOUND, 4440, queue_name + "-missing")


def test_peek_messages_changes_nothing(client, queue_name):
    client.create_queue(queue_name)
    ids = client.batch_send_messages(queue_name, [b"1", b"2", b"3"])
    peeked = client.peek_messages(queue_name, max_messages=2)
    assert [(m.message_id, m.body, m.dequeue_count) for m in peeked] == [
        (ids[0], b"1", 0),
        (ids[1], b"2", 0),
    ]
    assert not peeked[0].HasField("first_dequeue_time")
    assert client.get_queue(queue_name).stats.active_messages == 3
    received = client.receive_messages(queue_name, max_messages=16)
    assert [m.message_id for m in received] == ids
    assert client.peek_messages(queue_name) == []
    expect_error(
        client.peek_messages, grpc.StatusCode.INVALID_ARGUMENT, 4000, queue_name, max_messages=17
    )


def test_consume_pushes_up_to_max_outstanding_and_acks_are_answered(server, queue_name):
    with Client(server.endpoint, timeout=10) as client:
        client.create_queue(queue_name)
        for body in (b"m1", b"m2", b"m3"):
            client.send_message(queue_name, body)
        with client.consume(queue_name, max_outstanding_messages=2) as consumer:
            first = next(consumer)
            second = next(consumer)
            assert (first.message.body, second.message.body) == (b"m1", b"m2")
            stats = client.get_queue(queue_name).stats
            assert (stats.active_messages, stats.inactive_messages) == (1, 2)
            assert first.ack().result(timeout=10) is None
            third = next(consumer)
            assert third.message.body == b"m3"
            second.ack().result(timeout=10)
            del third
        stats = client.get_queue(queue_name).stats
        # m3 was let go: it stays in flight until its visibility timeout.
        assert (stats.active_messages, stats.inactive_messages) == (0, 1)
        expect_error(client.consume, grpc.StatusCode.NOT_FOUND, 4440, queue_name + "-missing")


def test_consume_nack_redelivers_and_extend_keeps_the_message(server, queue_name):
    with Client(server.endpoint, timeout=10) as client:
        client.create_queue(queue_name)
        client.send_message(queue_name, b"m1")
        with client.consume(
            queue_name, max_outstanding_messages=1, visibility_timeout_seconds=1
        ) as consumer:
            first = next(consumer)
            assert first.nack().result(timeout=10) is None
            again = next(consumer)
            assert (again.message.body, again.message.dequeue_count) == (b"m1", 2)
            # Extended past its 1 s timeout: still in flight, and its handle still deletes it.
            until = again.extend(30).result(timeout=10)
            assert until.seconds >= again.message.next_visible_time.seconds + 20
            time.sleep(2.5)
            assert client.get_queue(queue_name).stats.inactive_messages == 1
            again.ack().result(timeout=10)
            assert client.get_queue(queue_name).stats.inactive_messages == 0
            # A handle past its timeout fails per handle, as ChangeMessageVisibility would.
            client.send_message(queue_name, b"m2")
            late = next(consumer)
            time.sleep(1.5)
            with pytest.raises(SpoolError) as caught:
                late.extend(30).result(timeout=10)
            assert caught.value.cmq_code == 4430, caught.value
            with pytest.raises(SpoolError) as caught:
                late.nack().result(timeout=10)
            assert caught.value.cmq_code == 4430, caught.value


# -- attributes, idempotent sends, dead letters -------------------------------------------------


def test_attributes_travel_with_the_message(client, queue_name):
    client.create_queue(queue_name)
    trace = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
    client.send_message(queue_name, b"one", attributes=trace)
    client.batch_send_messages(
        queue_name, [pb.BatchSendEntry(body=b"two", attributes={"k": "v"}), b"three"]
    )
    peeked = client.peek_messages(queue_name, max_messages=16)
    assert [dict(m.attributes) for m in peeked] == [trace, {"k": "v"}, {}]
    received = client.receive_messages(queue_name, max_messages=16)
    assert [(m.body, dict(m.attributes)) for m in received] == [
        (b"one", trace),
        (b"two", {"k": "v"}),
        (b"three", {}),
    ]
    error = expect_error(
        client.send_message,
        grpc.StatusCode.INVALID_ARGUMENT,
        4000,
        queue_name,
        b"x",
        attributes={"bad key": "v"},
    )
    assert "attributes" in error.message and "1..=64" in error.message


def test_a_deduplication_id_makes_a_send_idempotent(client, queue_name):
    client.create_queue(queue_name, deduplication_window_seconds=600)
    assert client.get_queue(queue_name).attributes.deduplication_window_seconds == 600
    first = client.send_message(queue_name, b"order", deduplication_id="order-1")
    assert client.send_message(queue_name, b"order again", deduplication_id="order-1") == first
    ids = client.batch_send_messages(
        queue_name,
        [
            pb.BatchSendEntry(body=b"a", deduplication_id="a"),
            pb.BatchSendEntry(body=b"a again", deduplication_id="a"),
            pb.BatchSendEntry(body=b"order", deduplication_id="order-1"),
        ],
    )
    assert ids[0] == ids[1] and ids[2] == first
    # Without an id of the caller's, each send gets its own: equal bodies are two messages.
    assert client.send_message(queue_name, b"same") != client.send_message(queue_name, b"same")
    bodies = [m.body for m in client.receive_messages(queue_name, max_messages=16)]
    assert bodies == [b"order", b"a", b"same", b"same"]
    expect_error(
        client.send_message,
        grpc.StatusCode.INVALID_ARGUMENT,
        4000,
        queue_name,
        b"x",
        deduplication_id="x" * 129,
    )


def test_a_send_whose_answer_is_lost_is_retried_without_a_duplicate(server, queue_name):
    """The first attempt reaches the real server and is stored, but its answer is lost (as when
    a connection breaks): the client's retry carries the same deduplication id, so the queue
    holds the message once and the caller gets its id."""
    with Client(server.endpoint, timeout=10) as client:
        client.create_queue(queue_name)
        real = client._stub.SendMessage
        attempts = []

        def lose_the_first_answer(request, **kwargs):
            attempts.append(request.deduplication_id)
            answer = real(request, **kwargs)
            if len(attempts) == 1:
                raise _Unavailable()
            return answer

        client._stub.SendMessage = lose_the_first_answer
        message_id = client.send_message(queue_name, b"once")
        assert len(attempts) == 2 and attempts[0] == attempts[1] and attempts[0]
        received = client.receive_messages(queue_name, max_messages=16)
        assert [(m.message_id, m.body) for m in received] == [(message_id, b"once")]


class _Unavailable(grpc.RpcError):
    """What grpc raises when a call's connection breaks."""

    def code(self):
        return grpc.StatusCode.UNAVAILABLE

    def details(self):
        return "connection reset"

    def trailing_metadata(self):
        return ()


def test_dead_letter_queue_and_redrive(client, queue_name):
    dlq = queue_name + "-dlq"
    expect_error(
        client.create_queue,
        grpc.StatusCode.INVALID_ARGUMENT,
        4000,
        queue_name,
        dead_letter_policy=spool_client.dead_letter_policy(dlq, 1),
    )
    client.create_queue(dlq)
    client.create_queue(
        queue_name,
        visibility_timeout_seconds=1,
        dead_letter_policy=spool_client.dead_letter_policy(dlq, 1),
    )
    assert client.list_dead_letter_source_queues(dlq) == [queue_name]
    message_id = client.send_message(queue_name, b"poison", attributes={"k": "v"})
    assert len(client.receive_messages(queue_name)) == 1
    time.sleep(1.2)
    # The second receive moves it instead of delivering it again, then waits for the next.
    assert client.receive_messages(queue_name, wait_seconds=1) == []
    [dead] = client.receive_messages(dlq, wait_seconds=5)
    assert (dead.message_id, dead.body, dict(dead.attributes)) == (message_id, b"poison", {"k": "v"})
    assert (dead.dead_letter_source_queue, dead.dead_letter_receive_count) == (queue_name, 1)
    client.change_message_visibility(dlq, dead.receipt_handle, 0)
    answer = client.redrive_messages(dlq)
    assert (answer.redriven_messages, answer.skipped_messages) == (1, 0)
    [back] = client.peek_messages(queue_name)
    assert (back.message_id, back.dequeue_count, back.dead_letter_source_queue) == (
        message_id,
        0,
        "",
    )
    error = expect_error(client.delete_queue, grpc.StatusCode.FAILED_PRECONDITION, 4000, dlq)
    assert queue_name in error.message
    client.update_queue(queue_name, dead_letter_policy=spool_client.dead_letter_policy("", 0))
    client.delete_queue(dlq)


def test_topics_fan_out_publishes_to_subscribed_queues(client, queue_name):
    topic = queue_name + "-topic"
    eu, everything = queue_name + "-eu", queue_name + "-all"
    client.create_queue(eu)
    client.create_queue(everything)
    created = client.create_topic(topic, filter_type=pb.FILTER_TYPE_ROUTING_KEYS)
    assert created.attributes.filter_type == pb.FILTER_TYPE_ROUTING_KEYS
    client.subscribe(topic, "eu", eu, binding_keys=["order.eu.*"])
    client.subscribe(topic, "all", everything)
    expect_error(
        client.subscribe,
        grpc.StatusCode.INVALID_ARGUMENT,
        4000,
        topic,
        "tags",
        eu,
        filter_tags=["red"],
    )
    answer = client.publish_message(
        topic, "an order", routing_key="order.eu.created", attributes={"k": "v"}
    )
    assert sorted(copy.queue_name for copy in answer.copies) == sorted([eu, everything])
    [copy] = client.receive_messages(eu)
    assert (copy.body, copy.source_topic, dict(copy.attributes)) == (b"an order", topic, {"k": "v"})
    results = client.batch_publish_messages(
        topic, [pb.BatchPublishEntry(body=b"us", routing_key="order.us.created"), b"no key"]
    )
    assert [len(result.copies) for result in results] == [1, 1]
    assert client.get_topic(topic).stats.published_messages == 3
    names = [s.name for s in client.list_subscriptions(topic).subscriptions]
    assert names == ["all", "eu"]
    # A queue deleted takes its subscription with it.
    client.delete_queue(eu)
    assert [s.name for s in client.list_subscriptions(topic).subscriptions] == ["all"]
    client.unsubscribe(topic, "all")
    assert topic in [t.name for t in client.list_topics(topic).topics]
    client.delete_topic(topic)
    expect_error(client.get_topic, grpc.StatusCode.NOT_FOUND, 4440, topic)
