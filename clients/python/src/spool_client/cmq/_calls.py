"""How the facade turns the Spool client's failures into the CMQ SDK's exceptions."""

from __future__ import annotations

import contextlib
from typing import Iterator

import grpc

from .._errors import SpoolError
from .cmq_exception import (
    CMQClientNetworkException,
    CMQClientParameterException,
    CMQExceptionBase,
    CMQServerException,
    CMQServerNetworkException,
)

# CMQ's numbers for the cases that the facade itself reports.
BAD_PARAMETER = 4000
BATCH_DELETE_FAILED = 6010
NO_MESSAGE = 7000

# gRPC codes that mean the call got no answer from the server.
_NETWORK_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def translate(error: SpoolError) -> CMQExceptionBase:
    """The CMQ exception for a failed call: Spool's own errors carry CMQ's number."""
    if error.cmq_code is not None:
        data = {"reason": error.reason, "grpcCode": error.code.name}
        return CMQServerException(error.message, "", error.cmq_code, data)
    if error.code in _NETWORK_CODES:
        return CMQClientNetworkException(error.message)
    return CMQServerNetworkException(error.code.value[0], {}, error.message)


@contextlib.contextmanager
def cmq_errors() -> Iterator[None]:
    """Raises the CMQ exceptions for what fails inside: a call, or building its request."""
    try:
        yield
    except SpoolError as error:
        raise translate(error) from error
    except (TypeError, ValueError) as error:
        # Protobuf refuses values of the wrong type or out of a field's range (a negative
        # uint32) while the request is built, before anything is sent.
        raise CMQClientParameterException(str(error), BAD_PARAMETER) from error
