"""Register services on a ``grpc.aio`` server with raw-bytes handlers and one guard per call.

Every method of every service ganport serves (its own, KServe, health, reflection) is registered
through :func:`add_service`, which receives the request as *bytes* (no grpcio deserializer) and
runs, in this order:

1. **authentication** (when a token is set and the service is not open): the ``authorization``
   metadata is compared in constant time; nothing else runs for an unauthenticated call, not even
   decoding its body;
2. **decoding** the body with the method's message class: a body that is not a valid message is
   ``INVALID_ARGUMENT`` (counted in ``ganport_decode_errors_total``, logged at most once per
   :data:`DECODE_LOG_INTERVAL` seconds). Decoding here rather than in grpcio matters: grpcio
   1.85 keeps ~16 KB of memory for every body its deserializer rejects, and logs a traceback;
3. the servicer's coroutine, with any exception mapped by :func:`.status.status_for` (never a
   traceback on the wire);
4. metrics (``ganport_requests_total`` and ``ganport_request_seconds`` by model, method and final
   code) and a debug log line.

Servicers are plain objects (usually subclasses of the generated ``*Servicer`` bases) whose
methods are coroutines ``(request, context) -> response`` for unary responses, and either async
generators or coroutines writing with ``context.write`` for streaming responses (the
``grpc.aio`` conventions). Streaming requests arrive as an async iterator of decoded messages.
"""

from __future__ import annotations

import hmac
import inspect
import logging
import time
from typing import Any, AsyncIterator, Callable, Iterable, Optional

import grpc
from google.protobuf import message as protobuf_message
from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor

from ganport.errors import InvalidInputError
from ganport.runtime.server.status import UnauthenticatedError, status_for

logger = logging.getLogger("ganport.runtime.server.requests")

#: Seconds between two log lines about undecodable request bodies.
DECODE_LOG_INTERVAL = 10.0


class CallGuard:
    """What every call goes through: token check, body decoding, error mapping, metrics.

    Args:
        token: the bearer token every call must carry (``authorization: Bearer <token>``), or
            None for no authentication.
        metrics: a :class:`~ganport.runtime.server.metrics.Metrics`, or None.
        model_names: callable returning the currently served model names (metric labels use
            only these, so a client cannot create unbounded series).
    """

    def __init__(self, token: Optional[str] = None, metrics=None,
                 model_names: Callable[[], Iterable[str]] = lambda: ()):
        if token is not None and not token:
            raise ValueError("the server token must not be empty")
        self._expected = None if token is None else f"Bearer {token}".encode("utf-8")
        self.metrics = metrics
        self._model_names = model_names
        self._decode_failures = 0
        self._decode_logged = 0  # failures already reported in the log
        self._decode_last_log = float("-inf")

    def check_token(self, context: grpc.aio.ServicerContext) -> None:
        """Raise :class:`UnauthenticatedError` unless the call carries the token."""
        if self._expected is None:
            return
        value = None
        for key, item in context.invocation_metadata() or ():
            if key == "authorization":
                value = item
                break
        if value is None:
            message = "missing token: send 'authorization: Bearer <token>' (gRPC metadata or HTTP header)"
        else:
            given = value if isinstance(value, bytes) else str(value).encode("utf-8", "replace")
            if hmac.compare_digest(given, self._expected):
                return
            message = "invalid token"
        if self.metrics is not None:
            self.metrics.auth_failures.inc()
        raise UnauthenticatedError(message)

    def decode(self, message_class: type, data: bytes) -> Any:
        """Parse ``data`` as ``message_class``; :class:`InvalidInputError` if it is not one."""
        try:
            return message_class.FromString(data)
        except (protobuf_message.DecodeError, ValueError, TypeError) as exc:
            self._decode_failures += 1
            if self.metrics is not None:
                self.metrics.decode_errors.inc()
            now = time.monotonic()
            if now - self._decode_last_log >= DECODE_LOG_INTERVAL:
                logger.warning("refused %d request body(ies) that were not valid protobuf (last: %s, %d bytes)",
                               self._decode_failures - self._decode_logged,
                               message_class.DESCRIPTOR.full_name, len(data))
                self._decode_logged = self._decode_failures
                self._decode_last_log = now
            raise InvalidInputError(f"the request body is not a valid {message_class.DESCRIPTOR.full_name} "
                                    f"message") from exc

    def record(self, model: str, method: str, code: grpc.StatusCode, started: float,
               context: grpc.aio.ServicerContext) -> None:
        elapsed = time.perf_counter() - started
        if self.metrics is not None:
            label = model if model in self._model_names() else ""
            self.metrics.observe_request(label, method, code.name, elapsed)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("rpc=%s model=%s code=%s ms=%.2f peer=%s", method, model or "-", code.name,
                         elapsed * 1000, context.peer())


def _model_of(request: object) -> str:
    """The model a request names, whichever API it belongs to ('' if none)."""
    for field in ("model", "model_name", "name"):
        value = getattr(request, field, None)
        if isinstance(value, str):
            return value
    return ""


def _mapped(exc: BaseException, method: str, model: str) -> tuple[grpc.StatusCode, str]:
    """``status_for(exc)``, logging the traceback (server side only) for unexpected errors."""
    code, message = status_for(exc)
    if code is grpc.StatusCode.INTERNAL:
        logger.error("rpc=%s model=%s failed with an unexpected error", method, model or "-", exc_info=exc)
    return code, message


def _code_of(context: grpc.aio.ServicerContext, default: grpc.StatusCode) -> grpc.StatusCode:
    code = context.code() if hasattr(context, "code") else None
    return code if isinstance(code, grpc.StatusCode) else default


def _unary_request(guard: CallGuard, name: str, request_class: type, is_open: bool):
    """``(bytes, context) -> message`` with auth first; raises mapped errors."""

    def prepare(data: bytes, context) -> Any:
        if not is_open:
            guard.check_token(context)
        return guard.decode(request_class, data)

    return prepare


def _stream_requests(guard: CallGuard, request_class: type,
                     iterator: AsyncIterator[bytes]) -> AsyncIterator[Any]:
    async def decoded():
        async for data in iterator:
            yield guard.decode(request_class, data)

    return decoded()


class _Call:
    """One call's guard: maps any exception to a status, then records metrics and the log line.

    Used as ``call = _Call(...)``; ``try: ... except BaseException as exc: await call.failed(exc);
    raise`` ``finally: call.record()`` around a handler's body (plain statements, not an ``async
    with``: this runs on every request). The body sets ``call.model`` once the request is decoded.
    """

    __slots__ = ("guard", "method", "context", "model", "code", "started")

    def __init__(self, guard: CallGuard, method: str, context: grpc.aio.ServicerContext):
        self.guard = guard
        self.method = method
        self.context = context
        self.model = ""
        self.code = grpc.StatusCode.OK
        self.started = time.perf_counter()

    async def failed(self, exc: BaseException) -> None:
        """Set the status for ``exc``; an error of ours aborts the call (raises ``AbortError``)."""
        if isinstance(exc, grpc.aio.AbortError):  # the servicer aborted itself (e.g. health)
            self.code = _code_of(self.context, grpc.StatusCode.UNKNOWN)
            return
        if not isinstance(exc, Exception):  # cancelled, or the stream was closed
            self.code = grpc.StatusCode.CANCELLED
            return
        self.code, message = _mapped(exc, self.method, self.model)
        await self.context.abort(self.code, message)

    def record(self) -> None:
        self.guard.record(self.model, self.method, self.code, self.started, self.context)


def _handler(guard: CallGuard, name: str, method_descriptor, impl: Callable, is_open: bool):
    """One ``grpc.RpcMethodHandler`` for ``impl`` with raw-bytes requests."""
    request_class = message_factory.GetMessageClass(method_descriptor.input_type)
    serialize = message_factory.GetMessageClass(method_descriptor.output_type).SerializeToString
    client_streaming = method_descriptor.client_streaming
    server_streaming = method_descriptor.server_streaming
    prepare = _unary_request(guard, name, request_class, is_open)

    def begin(call: _Call, request_or_iterator) -> Any:
        """Authenticate, then decode (a stream's messages are decoded as they arrive)."""
        if client_streaming:
            if not is_open:
                guard.check_token(call.context)
            return _stream_requests(guard, request_class, request_or_iterator)
        request = prepare(request_or_iterator, call.context)
        call.model = _model_of(request)
        return request

    if not server_streaming:
        async def behaviour(request_or_iterator, context):
            call = _Call(guard, name, context)
            try:
                return await impl(begin(call, request_or_iterator), context)
            except BaseException as exc:
                await call.failed(exc)
                raise
            finally:
                call.record()
    elif inspect.isasyncgenfunction(impl):
        async def behaviour(request_or_iterator, context):
            call = _Call(guard, name, context)
            try:
                async for item in impl(begin(call, request_or_iterator), context):
                    yield item
            except BaseException as exc:
                await call.failed(exc)
                raise
            finally:
                call.record()
    else:  # a coroutine that writes with context.write (e.g. grpc_health's Watch)
        async def behaviour(request_or_iterator, context):
            call = _Call(guard, name, context)
            try:
                await impl(begin(call, request_or_iterator), context)
            except BaseException as exc:
                await call.failed(exc)
                raise
            finally:
                call.record()

    factory = {(False, False): grpc.unary_unary_rpc_method_handler,
               (False, True): grpc.unary_stream_rpc_method_handler,
               (True, False): grpc.stream_unary_rpc_method_handler,
               (True, True): grpc.stream_stream_rpc_method_handler}[(client_streaming, server_streaming)]
    return factory(behaviour, request_deserializer=None, response_serializer=serialize)


def add_service(server: grpc.aio.Server, service: ServiceDescriptor, servicer: Any, guard: CallGuard, *,
                is_open: bool = False) -> None:
    """Register every method of ``service`` on ``server``, implemented by ``servicer``'s methods.

    Args:
        server: the ``grpc.aio`` server.
        service: the service's descriptor (e.g. ``generator_pb2.DESCRIPTOR.services_by_name[...]``);
            its message classes decode the requests and encode the responses.
        servicer: object with one coroutine / async generator per RPC, named as the RPC.
        guard: the :class:`CallGuard` (token, metrics).
        is_open: no token needed (the health service, so probes work without the secret).
    """
    handlers = {method.name: _handler(guard, method.name, method, getattr(servicer, method.name), is_open)
                for method in service.methods}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))
