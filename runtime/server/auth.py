"""Bearer-token authentication as a gRPC server interceptor, and TLS credentials.

With a token configured, every call must carry the metadata ``authorization: Bearer <token>``;
others are refused with ``UNAUTHENTICATED`` before any handler runs. The health service stays
open so load balancers and orchestrators can probe without the secret.
"""

from __future__ import annotations

import hmac
import logging
from pathlib import Path
from typing import Optional, Sequence, Union

import grpc

from ganport.errors import GanportError

logger = logging.getLogger(__name__)

#: Methods reachable without a token (prefix match on the full method name).
OPEN_PREFIXES = ("/grpc.health.v1.Health/",)


def _denied(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same shape as ``handler`` that only aborts with UNAUTHENTICATED."""

    def abort(request_or_iterator, context):
        context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    kwargs = {"request_deserializer": handler.request_deserializer,
              "response_serializer": handler.response_serializer}
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(abort, **kwargs)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(abort, **kwargs)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(abort, **kwargs)
    return grpc.unary_unary_rpc_method_handler(abort, **kwargs)


class TokenAuthInterceptor(grpc.ServerInterceptor):
    """Refuses calls without ``authorization: Bearer <token>`` (constant-time comparison).

    Args:
        token: the shared secret.
        open_prefixes: method-name prefixes that need no token (health by default).
        metrics: optional metrics registry (counts refusals).

    Example:
        >>> server = grpc.server(executor, interceptors=[TokenAuthInterceptor("s3cret")])  # doctest: +SKIP
    """

    def __init__(self, token: str, open_prefixes: Sequence[str] = OPEN_PREFIXES, metrics=None):
        if not token:
            raise GanportError("the server token must not be empty")
        self._expected = f"Bearer {token}".encode("utf-8")
        self._open = tuple(open_prefixes)
        self._metrics = metrics

    def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method
        handler = continuation(handler_call_details)
        if handler is None or method.startswith(self._open):
            return handler  # unknown methods get UNIMPLEMENTED from grpc itself
        metadata = handler_call_details.invocation_metadata or ()
        value = next((v for k, v in metadata if k == "authorization"), None)
        if value is not None:
            given = value if isinstance(value, bytes) else str(value).encode("utf-8")
            if hmac.compare_digest(given, self._expected):
                return handler
            message = "invalid token"
        else:
            message = "missing token: send metadata 'authorization: Bearer <token>'"
        if self._metrics is not None:
            self._metrics.auth_failures.inc()
        logger.info("refused %s: %s", method, message)
        return _denied(handler, message)


def _read_pem(value: Union[str, bytes, Path], what: str) -> bytes:
    """PEM bytes given directly, or read from a file path."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str) and value.lstrip().startswith("-----BEGIN"):
        return value.encode("ascii")
    path = Path(value)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise GanportError(f"cannot read TLS {what} {path}: {exc.strerror or exc}") from None


def server_credentials(cert: Union[str, bytes, Path], key: Union[str, bytes, Path],
                       client_ca: Optional[Union[str, bytes, Path]] = None) -> grpc.ServerCredentials:
    """TLS credentials for the server from a certificate chain and private key (PEM, path or bytes).

    Args:
        cert: certificate chain (PEM).
        key: private key (PEM).
        client_ca: when given, clients must present a certificate signed by it (mutual TLS).
    """
    pair = (_read_pem(key, "key"), _read_pem(cert, "certificate"))
    if client_ca is None:
        return grpc.ssl_server_credentials([pair])
    return grpc.ssl_server_credentials([pair], root_certificates=_read_pem(client_ca, "client CA"),
                                       require_client_auth=True)


def channel_credentials(ca: Optional[Union[str, bytes, Path]] = None) -> grpc.ChannelCredentials:
    """TLS credentials for a client: trust ``ca`` (PEM, path or bytes), or the system roots."""
    return grpc.ssl_channel_credentials(root_certificates=None if ca is None else _read_pem(ca, "CA"))
