"""Error -> gRPC status mapping.

The rules (docs/ARCHITECTURE.md, "Errors"): ``InvalidInputError`` -> ``INVALID_ARGUMENT``,
``ModelNotFoundError`` -> ``NOT_FOUND``, ``ResourceExhaustedError`` -> ``RESOURCE_EXHAUSTED``,
``UnauthenticatedError`` -> ``UNAUTHENTICATED``, ``UnimplementedError`` -> ``UNIMPLEMENTED``,
a request dropped by the batcher -> ``DEADLINE_EXCEEDED`` / ``CANCELLED`` / ``UNAVAILABLE``,
any other ``GanportError`` -> ``FAILED_PRECONDITION``, anything else -> ``INTERNAL`` with a generic
message; the traceback goes to the server log, never on the wire, and the server keeps serving.
:mod:`.rpc` applies it to every call.

The HTTP surface (:mod:`.rest`) uses the same table through :func:`http_status_for`: each gRPC code
has one HTTP status (:data:`HTTP_STATUS`), the usual google.rpc mapping: ``INVALID_ARGUMENT`` and
``FAILED_PRECONDITION`` (any other ``GanportError``) -> 400, ``UNAUTHENTICATED`` -> 401,
``NOT_FOUND`` -> 404, ``RESOURCE_EXHAUSTED`` -> 429 (a request body over the size limit,
:class:`RequestTooLargeError`, -> 413), ``CANCELLED`` -> 499, ``INTERNAL`` -> 500,
``UNIMPLEMENTED`` -> 501, ``UNAVAILABLE`` -> 503, ``DEADLINE_EXCEEDED`` -> 504.
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


class RequestTooLargeError(ResourceExhaustedError):
    """A request body is bigger than the server accepts: RESOURCE_EXHAUSTED (HTTP 413)."""


#: gRPC status code -> HTTP status (google.rpc's mapping; 499 is "client closed request").
HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


def http_status_for(exc: BaseException) -> tuple[int, grpc.StatusCode, str]:
    """The HTTP status, the equivalent gRPC code and the wire message for an exception.

    Example:
        >>> http_status_for(ModelNotFoundError("model 'x' is not served here"))[0]
        404
    """
    code, message = status_for(exc)
    if isinstance(exc, RequestTooLargeError):
        return 413, code, message
    return HTTP_STATUS.get(code, 500), code, message


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
