"""Python client for Spool, a durable message queue with the queue model of Tencent Cloud CMQ.

- `Client`: one method per RPC of spool.v1.QueueService (proto/spool/v1/queue.proto).
- `SpoolError`: what a failed call raises; `cmq_code` is CMQ's error number.
- `spool_client.pb`: the generated protobuf messages (`queue_pb2`) and stub (`queue_pb2_grpc`).
- `spool_client.cmq`: the CMQ Python SDK's names (Account, QueueMeta, Message, ...), so code
  written for CMQ runs against Spool with a changed import.
"""

from ._client import (
    DEFAULT_ENDPOINT,
    Client,
    dead_letter_policy,
    new_deduplication_id,
    parse_endpoint,
)
from ._errors import SpoolError

__all__ = [
    "Client",
    "DEFAULT_ENDPOINT",
    "SpoolError",
    "dead_letter_policy",
    "new_deduplication_id",
    "parse_endpoint",
]
