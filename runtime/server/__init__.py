"""The ganport gRPC (and HTTP) server: batched generation, word rendering, latent decoding for any client.

Torch-free: it serves ONNX packages in the edge install. Modules:

* :mod:`.server`: :func:`create_server` (assembles everything), :class:`GanportServer`;
* :mod:`.servicer`: the ``ganport.v1.GeneratorService`` implementation;
* :mod:`.kserve`: the KServe v2 / Open Inference Protocol subset (for ``tritonclient``);
* :mod:`.inference`: the protocol-neutral Open Inference Protocol core (gRPC and REST);
* :mod:`.rest`: HTTP: KServe v2 REST, PNG endpoints and the web page (Starlette + uvicorn);
* :mod:`.batcher`: per-model dynamic batching;
* :mod:`.metrics`: counters/histograms, Prometheus text on an optional HTTP port;
* :mod:`.auth`: bearer-token interceptor and TLS credentials;
* :mod:`.status`: error -> status code mapping; :mod:`.codec`: arrays <-> messages;
* :mod:`.client`: :class:`GanportClient`; :mod:`.cli`: ``ganport serve`` / ``ganport client``.

Example:
    >>> from ganport.runtime.server import create_server     # doctest: +SKIP
    >>> server, port = create_server("127.0.0.1:0", "packages/")
    >>> server.start()
"""

from __future__ import annotations

__all__ = ["create_server", "GanportServer", "GanportClient"]


def __getattr__(name: str):
    # Lazy: `import ganport.runtime.server.cli` (done for every CLI start) must stay cheap.
    if name in ("create_server", "GanportServer"):
        from ganport.runtime.server import server

        return getattr(server, name)
    if name == "GanportClient":
        from ganport.runtime.server.client import GanportClient

        return GanportClient
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
