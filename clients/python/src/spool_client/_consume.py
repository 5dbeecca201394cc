"""Consumer: a StreamMessages call as an iterator of Delivery objects, acknowledged (or nacked,
or extended) on the stream.

A thread reads the server's responses: messages go to the iterator, answers resolve the futures
that `Delivery.ack()`, `nack()` and `extend()` returned, so waiting for an answer never depends on
the iterator being advanced. Requests of one kind waiting to be sent go out together, up to 16
handles a request.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import queue
import threading
from typing import Dict, Iterator, List, Optional, Tuple

import grpc
from google.protobuf import timestamp_pb2

from ._errors import SpoolError
from .pb import queue_pb2 as pb

# Handles in one acknowledgement, at most (the server's limit).
_MAX_BATCH = 16
# Tells the request generator, or the iterator, that the stream is over.
_END = object()

# What a request asks: ("ack", 0), ("nack", delay seconds) or ("extend", timeout seconds).
_Kind = Tuple[str, int]
# A request waiting to be sent or answered: its kind, the handle, the future of its answer.
_Pending = Tuple[_Kind, str, "concurrent.futures.Future"]


class Delivery:
    """A message pushed on a consumer stream: `message` (a pb.ReceivedMessage), to `ack()` once
    handled, or to `nack()`; `extend()` keeps it longer."""

    def __init__(self, message: pb.ReceivedMessage, consumer: Consumer) -> None:
        self.message = message
        self._consumer = consumer

    def ack(self) -> "concurrent.futures.Future[None]":
        """Deletes the message. The acknowledgement goes out on the stream now (batched with
        others waiting); the returned future resolves once the server answers, after the delete
        is durable, and raises SpoolError if it failed (cmq_code 4430: the handle expired).
        Ignoring the future does not cancel the acknowledgement."""
        return self._consumer._request(("ack", 0), self.message.receipt_handle)

    def nack(self, delay_seconds: int = 0) -> "concurrent.futures.Future[None]":
        """Gives the message up: it becomes visible again at once (or after `delay_seconds`,
        0..43200) and is delivered again, here or to another consumer, its dequeue_count one
        higher. The nack goes out on the stream now (batched with others waiting); the returned
        future resolves once the server answers, after the change is durable (the slot is free
        then), and raises SpoolError if it failed (cmq_code 4430: the handle expired). To let the
        message come back only after its visibility timeout, do nothing with it."""
        return self._consumer._request(("nack", delay_seconds), self.message.receipt_handle)

    def extend(
        self, visibility_timeout_seconds: int
    ) -> "concurrent.futures.Future[timestamp_pb2.Timestamp]":
        """Gives the consumer more time (a heartbeat): the message stays invisible to others for
        `visibility_timeout_seconds` (1..43200) from now, and keeps its slot until then. The
        future resolves with the new next_visible_time once the change is durable; the receipt
        handle is unchanged. Raises SpoolError as ChangeMessageVisibility would."""
        return self._consumer._request(
            ("extend", visibility_timeout_seconds), self.message.receipt_handle
        )


class Consumer:
    """The deliveries of one consumer stream, as an iterator; see Client.consume. Use it as a
    context manager, or call close(): messages delivered and not acknowledged come back after
    their visibility timeout."""

    def __init__(self, stub, start: pb.StreamMessagesRequest, metadata) -> None:
        self._acks: "queue.Queue[object]" = queue.Queue()
        self._deliveries: "queue.Queue[object]" = queue.Queue()
        self._pending: Dict[int, List[_Pending]] = {}
        self._lock = threading.Lock()
        # One count for ack_id, nack_id and extend_id.
        self._request_ids = itertools.count(1)
        self._closed = False
        self._call = stub.StreamMessages(self._requests(start), metadata=metadata)
        # Fail here, not in the first next(), when the server refuses the stream (NOT_FOUND,
        # PERMISSION_DENIED, a bad setting): it answers before any message.
        try:
            self._call.initial_metadata()
        except grpc.RpcError as error:
            raise SpoolError.from_rpc_error(error) from error
        if self._call.done() and self._call.code() != grpc.StatusCode.OK:
            raise SpoolError.from_rpc_error(self._call) from self._call
        self._reader = threading.Thread(target=self._read, name="spool-consumer", daemon=True)
        self._reader.start()

    def _requests(self, start: pb.StreamMessagesRequest):
        yield start
        held: object = None  # taken from the queue, of another kind than the last batch
        while True:
            first = held if held is not None else self._acks.get()
            held = None
            if first is _END:
                return
            batch: List[_Pending] = [first]  # type: ignore[list-item]
            kind = batch[0][0]
            while len(batch) < _MAX_BATCH:
                try:
                    more = self._acks.get_nowait()
                except queue.Empty:
                    break
                if more is _END or more[0] != kind:  # type: ignore[index]
                    held = more
                    break
                batch.append(more)  # type: ignore[arg-type]
            request_id = next(self._request_ids)
            with self._lock:
                self._pending[request_id] = batch
            handles = [handle for _, handle, _ in batch]
            name, seconds = kind
            if name == "ack":
                yield pb.StreamMessagesRequest(
                    acknowledge=pb.StreamAcknowledge(ack_id=request_id, receipt_handles=handles)
                )
            elif name == "nack":
                yield pb.StreamMessagesRequest(
                    nack=pb.StreamNack(
                        nack_id=request_id, receipt_handles=handles, delay_seconds=seconds
                    )
                )
            else:
                yield pb.StreamMessagesRequest(
                    extend=pb.StreamExtend(
                        extend_id=request_id,
                        receipt_handles=handles,
                        visibility_timeout_seconds=seconds,
                    )
                )

    def _read(self) -> None:
        try:
            for response in self._call:
                kind = response.WhichOneof("kind")
                if kind == "message":
                    self._deliveries.put(Delivery(response.message, self))
                elif kind == "acknowledged":
                    self._answer(response.acknowledged)
                elif kind in ("nacked", "extended"):
                    self._answer_visibility(getattr(response, kind))
            self._deliveries.put(_END)
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.CANCELLED and self._closed:
                self._deliveries.put(_END)
            else:
                self._deliveries.put(SpoolError.from_rpc_error(error))
        finally:
            self._fail_pending()

    def _answer(self, acknowledged: pb.StreamAcknowledged) -> None:
        with self._lock:
            batch = self._pending.pop(acknowledged.ack_id, [])
        failures = {failure.receipt_handle: failure for failure in acknowledged.failures}
        for _, handle, future in batch:
            failure = failures.get(handle)
            if failure is None:
                future.set_result(None)
            else:
                future.set_exception(_failure(failure))

    def _answer_visibility(self, answer: pb.StreamVisibilityChanged) -> None:
        with self._lock:
            batch = self._pending.pop(answer.request_id, [])
        changed = {entry.index: entry for entry in answer.changed}
        failures = {failure.index: failure for failure in answer.failures}
        for index, (kind, _, future) in enumerate(batch):
            if index in changed:
                # A nack resolves with nothing, as an ack does; an extension with its new time.
                future.set_result(
                    changed[index].next_visible_time if kind[0] == "extend" else None
                )
            elif index in failures:
                future.set_exception(_failure(failures[index]))
            else:
                future.set_exception(
                    SpoolError(
                        grpc.StatusCode.INTERNAL,
                        "the server's answer left this receipt handle out",
                    )
                )

    def _fail_pending(self) -> None:
        with self._lock:
            batches = list(self._pending.values())
            self._pending.clear()
        for batch in batches:
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(_ended())

    def _request(self, kind: _Kind, receipt_handle: str) -> "concurrent.futures.Future":
        future: "concurrent.futures.Future" = concurrent.futures.Future()
        if self._closed or self._call.done():
            future.set_exception(_ended())
        else:
            self._acks.put((kind, receipt_handle, future))
        return future

    def __iter__(self) -> Iterator[Delivery]:
        return self

    def __next__(self) -> Delivery:
        item = self._deliveries.get()
        if item is _END:
            self._deliveries.put(_END)
            raise StopIteration
        if isinstance(item, SpoolError):
            self._deliveries.put(_END)
            raise item
        return item  # type: ignore[return-value]

    def close(self) -> None:
        """Ends the stream (cancels the call); acknowledgements not yet answered fail."""
        self._closed = True
        self._acks.put(_END)
        self._call.cancel()

    def __enter__(self) -> Consumer:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _ended() -> SpoolError:
    return SpoolError(
        grpc.StatusCode.CANCELLED,
        "the consumer stream has ended; the message comes back after its visibility timeout",
    )


def _failure(failure) -> SpoolError:
    """A per-handle failure of an answer, as the error the unary call would have raised."""
    return SpoolError(_status_code(failure.code), failure.message, cmq_code=failure.cmq_code)


def _status_code(number: int) -> grpc.StatusCode:
    for code in grpc.StatusCode:
        if code.value[0] == number:
            return code
    return grpc.StatusCode.UNKNOWN


def start_request(
    queue_name: str, max_outstanding_messages: int, visibility_timeout_seconds: Optional[int]
) -> pb.StreamMessagesRequest:
    return pb.StreamMessagesRequest(
        start=pb.StreamStart(
            queue_name=queue_name,
            max_outstanding_messages=max_outstanding_messages,
            visibility_timeout_seconds=visibility_timeout_seconds,
        )
    )
