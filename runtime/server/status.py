"""Error -> gRPC status mapping.

The rules (docs/ARCHITECTURE.md, "Errors"): ``InvalidInputError`` -> ``INVALID_ARGUMENT``,
``ModelNotFoundError`` -> ``NOT_FOUND``, ``ResourceExhaustedError`` -> ``RESOURCE_EXHAUSTED``,
``UnauthenticatedError`` -> ``UNAUTHENTICATED``, ``UnimplementedError`` -> ``UNIMPLEMENTED``,
a request dropped by the batcher -> ``DEADLINE_EXCEEDED`` / ``CANCELLED`` / ``UNAVAILABLE``,
any other ``GanportError`` -> ``FAILED_PRECONDITION``, anything else -> ``INTERNAL`` with a generic
message; the traceback goes to the server log, never on the wire, and the server keeps serving.
:mod:`.rpc` applies it to every call.
"""

from __future__ import annotations

import grpc

from ganport.errors import (GanportError, InvalidInputError, ModelNotFoundError,
                            ResourceExhaustedError)
from ganport.runtime.server.batcher import RequestDroppedError

INTERNAL_MESSAGE = "internal error, see server log"

_DROP_CODES = {
    "deadline": grpc.StatusCode.DEADLINE_EXCEEDED,
    "cancelled": grpc.StatusCode.CANCELLED,
    "shutdown": grpc.StatusCode.UNAVAILABLE,
}


class UnsupportedError(GanportError):
    """The model cannot do what was asked (e.g. Encode without an encoder): FAILED_PRECONDITION."""


class UnauthenticatedError(GanportError):
    """The call carries no token or a wrong one: UNAUTHENTICATED."""


class UnimplementedError(GanportError):
    """The call is part of the protocol but not served here: UNIMPLEMENTED."""


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and wire message for an exception raised while handling a request.

    Example:
        >>> status_for(InvalidInputError("bad label 12"))
        (<StatusCode.INVALID_ARGUMENT: (3, 'invalid argument')>, 'bad label 12')
    """
    if isinstance(exc, RequestDroppedError):
        return _DROP_CODES.get(exc.reason, grpc.StatusCode.UNAVAILABLE), str(exc)
    if isinstance(exc, InvalidInputError):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    if isinstance(exc, ModelNotFoundError):
        return grpc.StatusCode.NOT_FOUND, str(exc)
    if isinstance(exc, ResourceExhaustedError):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc)
    if isinstance(exc, UnauthenticatedError):
        return grpc.StatusCode.UNAUTHENTICATED, str(exc)
    if isinstance(exc, UnimplementedError):
        return grpc.StatusCode.UNIMPLEMENTED, str(exc)
    if isinstance(exc, GanportError):
        return grpc.StatusCode.FAILED_PRECONDITION, str(exc)
    return grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE
