#!/usr/bin/env python3
"""Writes the seed inputs of the fuzz targets into fuzz/seeds/<target>/ (run once; the
corpora in fuzz/corpus/ grew from them). Each seed is a small valid input, so the fuzzer
starts inside every path rather than having to find the wire format first."""

import hashlib
import pathlib
import struct

ROOT = pathlib.Path(__file__).resolve().parent
REPO = ROOT.parent


def varint(n):
    out = b""
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out += bytes([byte | 0x80])
        else:
            return out + bytes([byte])


def field(number, value):
    """A protobuf field: ints as varints, bytes/str as length-delimited."""
    if isinstance(value, int):
        return varint(number << 3) + varint(value)
    if isinstance(value, str):
        value = value.encode()
    return varint(number << 3 | 2) + varint(len(value)) + value


METHODS = [
    "CreateQueue", "GetQueue", "UpdateQueue", "DeleteQueue", "ListQueues", "RewindQueue",
    "SendMessage", "BatchSendMessages", "ReceiveMessages", "DeleteMessage",
    "BatchDeleteMessages", "ChangeMessageVisibility", "BatchChangeMessageVisibility",
    "PurgeQueue", "PeekMessages", "StreamMessages",
]
HANDLE = b"@RH@" + b"." * 51  # replaced by the last received handle (spool::fuzzing)


def call(method, *messages):
    selector = METHODS.index(method) + 16 * (len(messages) - 1)
    out = bytes([selector])
    for message in messages:
        out += struct.pack(">H", len(message)) + message
    return out


def attrs(**kw):
    numbers = dict(visibility_timeout_seconds=1, polling_wait_seconds=2, max_message_size=3,
                   message_retention_seconds=4, rewind_seconds=5, max_backlog=6)
    return b"".join(field(numbers[k], v) for k, v in kw.items())


Q = field(1, "q")
handlers = {
    "lifecycle": call("CreateQueue", Q + field(2, attrs(rewind_seconds=3600)))
    + call("GetQueue", Q) + call("ListQueues", field(1, "q") + field(2, 5))
    + call("UpdateQueue", Q + field(2, attrs(visibility_timeout_seconds=5)))
    + call("PurgeQueue", Q) + call("DeleteQueue", Q),
    "send_receive_delete": call("CreateQueue", Q)
    + call("SendMessage", Q + field(2, "hello"))
    + call("BatchSendMessages", Q + field(2, field(1, "a")) + field(2, field(1, "b") + field(2, 1)))
    + call("PeekMessages", Q + field(2, 16))
    + call("ReceiveMessages", Q + field(3, 0))
    + call("DeleteMessage", Q + field(2, HANDLE)),
    "visibility": call("CreateQueue", Q) + call("SendMessage", Q + field(2, "x"))
    + call("ReceiveMessages", Q)
    + call("ChangeMessageVisibility", Q + field(2, HANDLE) + field(3, 0))
    + call("ReceiveMessages", Q)
    + call("BatchChangeMessageVisibility", Q + field(2, field(1, HANDLE) + field(2, 10)))
    + call("BatchDeleteMessages", Q + field(2, HANDLE) + field(2, "junk")),
    "rewind": call("CreateQueue", Q + field(2, attrs(rewind_seconds=3600)))
    + call("SendMessage", Q + field(2, "x")) + call("ReceiveMessages", Q)
    + call("DeleteMessage", Q + field(2, HANDLE))
    + call("RewindQueue", Q + field(2, field(1, 1))),
    "stream": call("CreateQueue", Q) + call("SendMessage", Q + field(2, "x"))
    + call("SendMessage", Q + field(2, "y"))
    + call("StreamMessages", field(1, Q + field(2, 2)), field(2, field(1, 7) + field(2, "junk"))),
}

seeds = {
    "handlers": handlers,
    "receipt_handle": {"short": b"AQ", "fields": bytes(range(29))},
    "queue_attributes": {
        "name": b"\x06orders" + attrs(visibility_timeout_seconds=30, max_backlog=10),
        "rewind": b"\x01q" + attrs(message_retention_seconds=60, rewind_seconds=61),
    },
    "config_file": {
        "deploy": (REPO / "deploy/base/spool.toml").read_bytes(),
        "docker": (REPO / "deploy/docker/spool.toml").read_bytes(),
        "postgres": b'postgres_url = "postgres://u@h:5432/d?sslmode=verify-full"\n'
        b'max_connections = 10\nhandshake_timeout_seconds = 5\n',
    },
    "auth_file": {
        "token": b"Bearer secret\nworker\n[[principals]]\nname = \"w\"\ntoken_sha256 = \""
        + hashlib.sha256(b"secret").hexdigest().encode()
        + b"\"\n[[principals.grants]]\nqueues = \"orders-*\"\nactions = [\"send\", \"receive\"]\n",
        "cert": b"\nworker\n[[principals]]\nname = \"w\"\nclient_cert_name = \"worker\"\n"
        b"[[principals.grants]]\nqueues = \"q\"\nactions = [\"admin\"]\n",
    },
}

for target, inputs in seeds.items():
    folder = ROOT / "seeds" / target
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in inputs.items():
        (folder / name).write_bytes(data)
