"""TLS credentials for the server and the client.

Bearer-token authentication is checked per call by :class:`ganport.runtime.server.rpc.CallGuard`
(before the request body is even decoded); the health service stays open so load balancers and
orchestrators can probe without the secret.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Union

import grpc

from ganport.errors import GanportError

logger = logging.getLogger(__name__)

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
        raise GanportError(f"cannot read TLS {what} {path}: {exc.strerror or exc}") from exc


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
