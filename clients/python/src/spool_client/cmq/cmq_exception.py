"""The CMQ SDK's exceptions (cmq/cmq_exception.py), raised by the facade.

As in CMQ, everything raised is a CMQExceptionBase with `code` (CMQ's error number) and `message`:

- CMQServerException: the server refused the call; `code` is CMQ's number (4000 bad parameter,
  4100 unknown or missing credentials, 4101 no permission for the action on the queue, 4400 too
  large, 4410 backlog full, 4420 server busy (its receive limits), 4430 bad or expired receipt
  handle, 4440 no such queue, 4450 too many queues, 4460 queue exists, 6000 server unavailable, 6010 batch delete failed,
  6050 rewind not enabled, 7000 no message). `data` holds the details: for Spool errors
  {"reason": ..., "grpcCode": ...}; for 6010 {"errorList": [{"code", "message", "receiptHandle"}]}.
- CMQClientNetworkException: no answer from the server (not listening, connection lost,
  deadline passed).
- CMQClientParameterException: an argument refused before anything was sent.
- CMQServerNetworkException: any other failed call (a gRPC error without Spool's details);
  `status` is the gRPC status code's number.
"""

from __future__ import annotations

from typing import Any, Dict, Optional


class CMQExceptionBase(Exception):
    """Base of every exception the facade raises."""

    def __init__(self, message: str, code: int = -1, data: Optional[Dict[str, Any]] = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = {} if data is None else data

    def get_info(self) -> str:
        return "Code:%s, Message:%s, Data:%s\n" % (self.code, self.message, self.data)

    def __str__(self) -> str:
        return "%s  %s" % (type(self).__name__, self.get_info())


class CMQClientException(CMQExceptionBase):
    """A failure on the client's side."""


class CMQClientNetworkException(CMQClientException):
    """The server could not be reached: check the endpoint and that the server runs."""


class CMQClientParameterException(CMQClientException):
    """An argument is malformed; the message says which."""


class CMQServerNetworkException(CMQExceptionBase):
    """A call failed without an answer from Spool itself (e.g. a proxy's error).

    In CMQ's SDK this is an HTTP status other than 200; here `status` is the gRPC status code.
    """

    def __init__(self, status: int = 200, header: Optional[Dict[str, str]] = None, data: str = ""):
        super().__init__(data, -1, {})
        self.status = status
        self.header = {} if header is None else header
        self.data = data

    def __str__(self) -> str:
        header = "\n".join("%s: %s" % (k, v) for k, v in self.header.items())
        return "CMQServerNetworkException Status: %s\nHeader: %s\nData: %s\n" % (
            self.status,
            header,
            self.data,
        )


class CMQServerException(CMQExceptionBase):
    """The server refused the call; `code` is CMQ's error number. Spool has no request ids:
    `request_id` is empty."""

    def __init__(
        self,
        message: str,
        request_id: str = "",
        code: int = -1,
        data: Optional[Dict[str, Any]] = None,
    ):
        super().__init__(message, code, data)
        self.request_id = request_id

    def __str__(self) -> str:
        return "CMQServerException  %s\nRequestID:%s" % (self.get_info(), self.request_id)


__all__ = [
    "CMQClientException",
    "CMQClientNetworkException",
    "CMQClientParameterException",
    "CMQExceptionBase",
    "CMQServerException",
    "CMQServerNetworkException",
]
