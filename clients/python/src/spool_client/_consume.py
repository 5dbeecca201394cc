"""Consumer: a StreamMessages call as an iterator of Delivery objects, acknowledged on the stream.

A thread reads the server's responses: messages go to the iterator, answers to acknowledgements
resolve the futures that `Delivery.ack()` returned, so waiting for an answer never depends on the
iterator being advanced. Acknowledgements waiting to be sent go out together, up to 16 a request.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import queue
import threading
from typing import Dict, Iterator, List, Optional, Tuple

import grpc

from ._errors import SpoolError
from .pb import queue_pb2 as pb

# Handles in one acknowledgement, at most (the server's limit).
_MAX_BATCH = 16
# Tells the request generator, or the iterator, that the stream is over.
_END = object()

_Ack = Tuple[str, "concurrent.futures.Future[None]"]


class Delivery:
    """A message pushed on a consumer stream: `message` (a pb.ReceivedMessage), to `ack()` once
    handled, or to `nack()`."""

    def __init__(self, message: pb.ReceivedMessage, consumer: Consumer) -> None:
        self.message = message
        self._consumer = consumer

    def ack(self) -> "concurrent.futures.Future[None]":
        """Deletes the message. The acknowledgement goes out on the stream now (batched with
        others waiting); the returned future resolves once the server answers, after the delete
        is durable, and raises SpoolError if it failed (cmq_code 4430: the handle expired).
        Ignoring the future does not cancel the acknowledgement."""
        return self._consumer._acknowledge(self.message.receipt_handle)

    def nack(self) -> None:
        """Gives the message up: it is not deleted and comes back (here or to another consumer)
        when its visibility timeout ends, which also frees its slot. Spool has no call that makes
        a message visible earlier yet; when it does, this will use it."""


class Consumer:
    """The deliveries of one consumer stream, as an iterator; see Client.consume. Use it as a
    context manager, or call close(): messages delivered and not acknowledged come back after
    their visibility timeout."""

    def __init__(self, stub, start: pb.StreamMessagesRequest, metadata) -> None:
        self._acks: "queue.Queue[object]" = queue.Queue()
        self._deliveries: "queue.Queue[object]" = queue.Queue()
        self._pending: Dict[int, List[_Ack]] = {}
        self._lock = threading.Lock()
        self._ack_ids = itertools.count(1)
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
        while True:
            first = self._acks.get()
            if first is _END:
                return
            batch: List[_Ack] = [first]  # type: ignore[list-item]
            ending = False
            while len(batch) < _MAX_BATCH:
                try:
                    more = self._acks.get_nowait()
                except queue.Empty:
                    break
                if more is _END:
                    ending = True
                    break
                batch.append(more)  # type: ignore[arg-type]
            ack_id = next(self._ack_ids)
            with self._lock:
                self._pending[ack_id] = batch
            yield pb.StreamMessagesRequest(
                acknowledge=pb.StreamAcknowledge(
                    ack_id=ack_id, receipt_handles=[handle for handle, _ in batch]
                )
            )
            if ending:
                return

    def _read(self) -> None:
        try:
            for response in self._call:
                kind = response.WhichOneof("kind")
                if kind == "message":
                    self._deliveries.put(Delivery(response.message, self))
                elif kind == "acknowledged":
                    self._answer(response.acknowledged)
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
        for handle, future in batch:
            failure = failures.get(handle)
            if failure is None:
                future.set_result(None)
            else:
                future.set_exception(
                    SpoolError(
                        _status_code(failure.code), failure.message, cmq_code=failure.cmq_code
                    )
                )

    def _fail_pending(self) -> None:
        with self._lock:
            batches = list(self._pending.values())
            self._pending.clear()
        for batch in batches:
            for _, future in batch:
                if not future.done():
                    future.set_exception(_ended())

    def _acknowledge(self, receipt_handle: str) -> "concurrent.futures.Future[None]":
        future: "concurrent.futures.Future[None]" = concurrent.futures.Future()
        if self._closed or self._call.done():
            future.set_exception(_ended())
        else:
            self._acks.put((receipt_handle, future))
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
