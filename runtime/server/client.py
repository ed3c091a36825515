"""A thin Python client over the generated ``ganport.v1`` stubs (used by ``ganport client``).

It only adds what every caller needs: the channel (TLS, message limits), the bearer token, and
array conversion of the answers. Errors stay ``grpc.RpcError`` (``.code()``, ``.details()``).

Example:
    >>> with GanportClient("127.0.0.1:50051") as client:               # doctest: +SKIP
    ...     images = client.generate("glyphs", 16, seed=3, labels="A")  # uint8 [16, H, W, C]
    ...     word = client.render_word("glyphs", "HELLO", seed=1)        # uint8 [H, W, C]
    ...     older = client.generate("glyphs", 4, seed=3, version="1")   # a named version

Every call that names a model takes ``version`` ("" = the model's default, its highest served
version); an unknown one is NOT_FOUND naming the served versions.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, Union

from ganport.extras import require

require("serve", "the ganport client")  # one line naming the extra, not a ModuleNotFoundError for grpc

import grpc  # noqa: E402
import numpy as np

from ganport.errors import InvalidInputError
from ganport.runtime.server import codec
from ganport.runtime.server.auth import channel_credentials
from ganport.v1 import generator_pb2 as pb
from ganport.v1 import generator_pb2_grpc as pb_grpc

logger = logging.getLogger(__name__)

MIB = 1024 * 1024
_NOISE = {"per-glyph": pb.NOISE_MODE_PER_GLYPH, "shared": pb.NOISE_MODE_SHARED}


def make_labels(labels: Any) -> Optional[pb.Labels]:
    """A ``Labels`` message from one label or a sequence (ints -> indices, strings -> names)."""
    if labels is None:
        return None
    items = [labels] if isinstance(labels, (str, int, np.integer)) else list(labels)
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in items):
        return pb.Labels(indices=[int(v) for v in items])
    return pb.Labels(names=[str(v) for v in items])


class GanportClient:
    """Client for a ganport server.

    Args:
        target: ``host:port``.
        token: bearer token sent with every call (servers started with ``--token``).
        tls_ca: PEM path/bytes of the CA to trust for a TLS server; ``tls=True`` with no CA
            uses the system roots.
        tls: use TLS (implied by ``tls_ca``).
        timeout: default deadline per call in seconds (None: no deadline).
        max_message_mb: receive/send limit in MiB (match the server's).
    """

    def __init__(self, target: str, *, token: Optional[str] = None,
                 tls_ca: Optional[Union[str, Path, bytes]] = None, tls: bool = False,
                 timeout: Optional[float] = 60.0, max_message_mb: float = 64):
        limit = int(max_message_mb * MIB)
        options = [("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)]
        if tls or tls_ca is not None:
            self.channel = grpc.secure_channel(target, channel_credentials(tls_ca), options=options)
        else:
            self.channel = grpc.insecure_channel(target, options=options)
        self.stub = pb_grpc.GeneratorServiceStub(self.channel)
        self.timeout = timeout
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()

    def _call(self, method, request, timeout: Optional[float] = None):
        return method(request, timeout=timeout or self.timeout, metadata=self._metadata)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> "GanportClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- calls ---------------------------------------------------------------------------------
    def health(self, service: str = "") -> str:
        """The server's health status name (``SERVING``, ``NOT_SERVING``...) for ``service``."""
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        reply = self._call(health_pb2_grpc.HealthStub(self.channel).Check,
                           health_pb2.HealthCheckRequest(service=service))
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)

    # -- model repository (the KServe Repository* calls) ------------------------------------------
    def _kserve(self):
        from ganport.runtime.server.kserve import KServeStub

        return KServeStub(self.channel)

    def repository_index(self) -> list[dict[str, str]]:
        """Every version of every model of the server's models directory:
        ``[{"name", "version", "state", "reason"}]``."""
        from ganport.runtime.server.kserve import messages

        reply = self._call(self._kserve().RepositoryIndex, messages.RepositoryIndexRequest())
        return [{"name": m.name, "version": m.version, "state": m.state, "reason": m.reason} for m in reply.models]

    def load_model(self, model: str) -> None:
        """Load (or reload) model ``model`` of the server's models directory: the versions its
        version policy selects."""
        from ganport.runtime.server.kserve import messages

        self._call(self._kserve().RepositoryModelLoad, messages.RepositoryModelLoadRequest(model_name=model))

    def unload_model(self, model: str) -> None:
        """Stop serving every version of ``model`` (after its queued work has run)."""
        from ganport.runtime.server.kserve import messages

        self._call(self._kserve().RepositoryModelUnload, messages.RepositoryModelUnloadRequest(model_name=model))

    def list_models(self) -> list[pb.ModelInfo]:
        """Every served model's ``ModelInfo``."""
        return list(self._call(self.stub.ListModels, pb.ListModelsRequest()).models)

    def get_model(self, model: str, *, version: str = "") -> pb.ModelInfo:
        """One model's ``ModelInfo`` (of ``version``; "" = the default, its highest served version)."""
        return self._call(self.stub.GetModel, pb.GetModelRequest(model=model, version=str(version)))

    def generate_response(self, model: str, count: int, *, seed: Optional[int] = None, labels: Any = None,
                          encoding: str = "uint8", version: str = "") -> pb.GenerateResponse:
        """The raw ``GenerateResponse`` (``.version``: the version that answered)."""
        request = pb.GenerateRequest(model=model, count=count, labels=make_labels(labels),
                                     encoding=codec.encoding_from_name(encoding), version=str(version))
        if seed is not None:
            request.seed = seed
        return self._call(self.stub.Generate, request)

    def generate(self, model: str, count: int, *, seed: Optional[int] = None, labels: Any = None,
                 encoding: str = "uint8", version: str = "") -> np.ndarray:
        """``count`` images: uint8 NHWC (``uint8``/``png``) or float32 NCHW (``float32``)."""
        return codec.batch_to_array(self.generate_response(model, count, seed=seed, labels=labels,
                                                           encoding=encoding, version=version).images)

    def generate_stream(self, model: str, count: int, *, seed: Optional[int] = None, labels: Any = None,
                        encoding: str = "uint8", chunk_size: int = 0, version: str = "") -> Iterator[pb.GenerateChunk]:
        """Stream ``GenerateChunk`` messages for a large request."""
        request = pb.GenerateRequest(model=model, count=count, labels=make_labels(labels),
                                     encoding=codec.encoding_from_name(encoding), chunk_size=chunk_size,
                                     version=str(version))
        if seed is not None:
            request.seed = seed
        return self._call(self.stub.GenerateStream, request)

    def decode(self, model: str, latents: np.ndarray, *, labels: Any = None, encoding: str = "uint8",
               version: str = "") -> np.ndarray:
        """Images for caller-supplied latents ``[N, latent_dim]``."""
        request = pb.DecodeRequest(model=model, latents=codec.array_to_tensor(latents),
                                   labels=make_labels(labels), encoding=codec.encoding_from_name(encoding),
                                   version=str(version))
        return codec.batch_to_array(self._call(self.stub.Decode, request).images)

    def encode(self, model: str, images: np.ndarray, *, version: str = "") -> np.ndarray:
        """Latents for uint8 NHWC or float32 NCHW images (AAE models)."""
        images = np.asarray(images)
        if images.dtype == np.uint8:
            batch = codec.uint8_to_batch(images, codec.RAW_UINT8)
        else:
            batch = codec.images_to_batch(images, codec.RAW_FLOAT32)
        reply = self._call(self.stub.Encode, pb.EncodeRequest(model=model, images=batch, version=str(version)))
        return codec.tensor_to_array(reply.latents)

    def render_word(self, model: str, text: str, *, seed: Optional[int] = None, noise: str = "per-glyph",
                    spacing: Optional[int] = None, height: Optional[int] = None, version: str = "") -> np.ndarray:
        """The rendered word, uint8 ``[H, W, C]``."""
        if noise not in _NOISE:
            raise InvalidInputError(f"unknown noise mode {noise!r}: valid modes are {', '.join(_NOISE)}")
        request = pb.RenderWordRequest(model=model, text=text, noise=_NOISE[noise], encoding=codec.RAW_UINT8,
                                       version=str(version))
        for field, value in (("seed", seed), ("spacing", spacing), ("height", height)):
            if value is not None:
                setattr(request, field, value)
        return codec.batch_to_array(self._call(self.stub.RenderWord, request).image)[0]


def stream_to_array(chunks: Sequence[pb.GenerateChunk]) -> np.ndarray:
    """Concatenate streamed chunks' images in offset order."""
    ordered = sorted(chunks, key=lambda c: c.offset)
    return np.concatenate([codec.batch_to_array(c.images) for c in ordered])
