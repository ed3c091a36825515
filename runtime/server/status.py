"""Error -> gRPC status mapping and the guard every RPC handler runs inside.

The rules (docs/ARCHITECTURE.md, "Errors"): ``InvalidInputError`` -> ``INVALID_ARGUMENT``,
``ModelNotFoundError`` -> ``NOT_FOUND``, ``ResourceExhaustedError`` -> ``RESOURCE_EXHAUSTED``,
a request dropped by the batcher -> ``DEADLINE_EXCEEDED`` / ``CANCELLED`` / ``UNAVAILABLE``,
any other ``GanportError`` -> ``FAILED_PRECONDITION``, anything else -> ``INTERNAL`` with a generic
message; the traceback goes to the server log, never on the wire, and the server keeps serving.

:func:`unary_rpc` and :func:`stream_rpc` wrap servicer methods: they apply the mapping, record
the request in the metrics and write one structured debug log line per request.
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Callable, Iterator

import grpc

from ganport.errors import (GanportError, InvalidInputError, ModelNotFoundError,
                            ResourceExhaustedError)
from ganport.runtime.server.batcher import RequestDroppedError

logger = logging.getLogger("ganport.runtime.server.requests")

INTERNAL_MESSAGE = "internal error, see server log"

_DROP_CODES = {
    "deadline": grpc.StatusCode.DEADLINE_EXCEEDED,
    "cancelled": grpc.StatusCode.CANCELLED,
    "shutdown": grpc.StatusCode.UNAVAILABLE,
}


class UnsupportedError(GanportError):
    """The model cannot do what was asked (e.g. Encode without an encoder): FAILED_PRECONDITION."""


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
    if isinstance(exc, GanportError):
        return grpc.StatusCode.FAILED_PRECONDITION, str(exc)
    return grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE


def _model_of(request: object) -> str:
    """The model a request names, whichever API it belongs to ('' if none)."""
    for field in ("model", "model_name", "name"):
        value = getattr(request, field, None)
        if isinstance(value, str):
            return value
    return ""


class _Call:
    """Book-keeping for one RPC: timing, final code, metrics and the log line."""

    def __init__(self, owner, method: str, request, context):
        self.owner = owner
        self.method = method
        self.model = _model_of(request)
        self.context = context
        self.code = grpc.StatusCode.OK
        self.started = time.perf_counter()

    def fail(self, exc: BaseException):
        """Map ``exc``, log it, and abort the RPC (raises, as ``context.abort`` does)."""
        self.code, message = status_for(exc)
        if self.code is grpc.StatusCode.INTERNAL:
            logger.exception("rpc=%s model=%s failed with an unexpected error", self.method, self.model)
        self.context.abort(self.code, message)

    def finish(self) -> None:
        elapsed = time.perf_counter() - self.started
        metrics = getattr(self.owner, "metrics", None)
        # Unknown model names are not used as labels (a client could create unbounded series).
        label = self.model if self.model in getattr(self.owner, "model_names", ()) else ""
        if metrics is not None:
            metrics.observe_request(label, self.method, self.code.name, elapsed)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("rpc=%s model=%s code=%s ms=%.2f peer=%s", self.method, self.model or "-",
                         self.code.name, elapsed * 1000, self.context.peer())


def unary_rpc(method: Callable) -> Callable:
    """Decorate a unary servicer method ``(self, request, context) -> response``.

    The owner (``self``) may define ``metrics`` (a ``Metrics``) and ``model_names``.
    """
    name = method.__name__

    @functools.wraps(method)
    def wrapper(self, request, context):
        call = _Call(self, name, request, context)
        try:
            return method(self, request, context)
        except Exception as exc:  # noqa: BLE001 - mapped to a status, never a traceback on the wire
            call.fail(exc)
        finally:
            call.finish()

    return wrapper


def stream_rpc(method: Callable[..., Iterator]) -> Callable[..., Iterator]:
    """Decorate a server-streaming servicer method (a generator); see :func:`unary_rpc`."""
    name = method.__name__

    @functools.wraps(method)
    def wrapper(self, request, context):
        call = _Call(self, name, request, context)
        try:
            yield from method(self, request, context)
        except GeneratorExit:
            call.code = grpc.StatusCode.CANCELLED  # the client went away mid-stream
            raise
        except Exception as exc:  # noqa: BLE001 - mapped to a status
            call.fail(exc)
        finally:
            call.finish()

    return wrapper
