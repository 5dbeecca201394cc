"""SpoolError: a call that failed, with the google.rpc.ErrorInfo detail the server attached."""

from __future__ import annotations

from typing import Mapping, Optional

from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2

import grpc

# The trailer in which gRPC servers send a serialized google.rpc.Status with error details.
_STATUS_DETAILS_KEY = "grpc-status-details-bin"
# google.rpc.ErrorInfo.domain of every error Spool reports.
ERROR_DOMAIN = "spool"


class SpoolError(Exception):
    """A failed call.

    `code` is the gRPC status code; `reason` (e.g. "QUEUE_NOT_FOUND") and `cmq_code` (CMQ's error
    number, e.g. 4440) come from the ErrorInfo detail that Spool attaches to every error it
    reports. They are None when the failure came from elsewhere: no server listening
    (UNAVAILABLE), a deadline that passed (DEADLINE_EXCEEDED), a proxy, ...
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        reason: Optional[str] = None,
        cmq_code: Optional[int] = None,
        metadata: Optional[Mapping[str, str]] = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason
        self.cmq_code = cmq_code
        self.metadata = dict(metadata or {})

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> SpoolError:
        """Reads the status, message and ErrorInfo detail of a failed gRPC call."""
        # Errors raised by a call are also grpc.Call objects; other RpcErrors may lack these.
        code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
        message = (error.details() if hasattr(error, "details") else None) or str(error)
        trailers = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
        info = _error_info(trailers or ())
        if info is None:
            return cls(code, message)
        cmq_code = info.metadata.get("cmq_code")
        return cls(
            code,
            message,
            reason=info.reason or None,
            cmq_code=int(cmq_code) if cmq_code and cmq_code.isdigit() else None,
            metadata=info.metadata,
        )

    def __str__(self) -> str:
        tags = [self.code.name if self.code is not None else "UNKNOWN"]
        if self.cmq_code is not None:
            tags.append(f"cmq_code {self.cmq_code}")
        if self.reason:
            tags.append(self.reason)
        return f"{self.message} ({', '.join(tags)})"

    def __repr__(self) -> str:
        return (
            f"SpoolError({self.code!r}, {self.message!r}, reason={self.reason!r}, "
            f"cmq_code={self.cmq_code!r})"
        )


def _error_info(trailers) -> Optional[error_details_pb2.ErrorInfo]:
    """The ErrorInfo in a call's google.rpc.Status trailer, preferring Spool's domain."""
    found = None
    for key, value in trailers:
        if key != _STATUS_DETAILS_KEY:
            continue
        try:
            status = status_pb2.Status.FromString(value)
        except DecodeError:  # a malformed trailer is no reason to hide the call's own error
            return None
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                if info.domain == ERROR_DOMAIN:
                    return info
                found = found or info
    return found
