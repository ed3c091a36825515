"""HTTP/REST surface: KServe v2 (Open Inference Protocol) REST, PNG endpoints and the web page.

A Starlette ASGI app served by uvicorn as a task on the gRPC server's event loop, so HTTP and gRPC
share the batchers (requests from both merge into the same model calls). It only translates HTTP
to the shared core and back:

* KServe v2 REST (``/v2/...``): :mod:`.inference` (tensor bounds, infer, metadata,
  config, statistics), with Triton's binary tensor extension (``Inference-Header-Content-Length``)
  so an unmodified ``tritonclient.http`` client works;
* PNG endpoints (``/v1/models/...``): the :class:`~.servicer.GeneratorServicer` methods
  themselves (``Generate``, ``RenderWord``, ``Decode``), called with a request message built from
  the URL or JSON body, so validation, limits, seeds and labels are exactly those of gRPC and the
  images equal ``Generator.generate/render_word/decode`` for the same seed;
* ``/``: a small static web page (``static/index.html``, shipped in the wheel).

Every endpoint but health and the page checks the bearer token (``Authorization: Bearer T``,
with the same :class:`~.rpc.CallGuard` as gRPC) before anything else, errors are mapped by
:func:`.status.http_status_for` to ``{"error": "message"}`` bodies, request bodies larger than
the server's receive limit are refused with 413 before they are read, and every request is
recorded in the same metrics as gRPC, under the name of the equivalent RPC (``ModelInfer``,
``Generate``, ``RenderWord``, ``Decode``, ``ModelMetadata``...; the page is ``Page``), so
per-model numbers and statistics cover both protocols.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import socket
import tempfile
import time
import zlib
from importlib import resources
from pathlib import Path
from typing import Any, Awaitable, Callable, Optional

from ganport.extras import require

require("serve", "the ganport server")  # one line naming the extra, not a ModuleNotFoundError for grpc

import grpc  # noqa: E402
import numpy as np
from google.protobuf.json_format import MessageToDict
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ganport import __version__
from ganport.errors import GanportError, InvalidInputError, ResourceExhaustedError
from ganport.runtime.images import encode_png, make_grid
from ganport.runtime.server import codec, inference
from ganport.runtime.server.batcher import RequestDroppedError
from ganport.runtime.server.rpc import CallGuard
from ganport.runtime.server.servicer import MIB, GeneratorServicer, Limits, ModelRegistry, check_count
from ganport.runtime.server.status import (RequestTooLargeError, UnimplementedError,
                                           http_status_for)
from ganport.v1 import generator_pb2 as pb

logger = logging.getLogger("ganport.runtime.server.requests")

#: KServe v2 REST extensions this server implements (``GET /v2``).
EXTENSIONS = ["binary_tensor_data", "model_configuration", "statistics"]
#: Header giving the length of the JSON part of a binary-extension body (Triton's name).
HEADER_LENGTH = "inference-header-content-length"
# Model outputs bigger than this are serialized off the event loop.
_INLINE_BYTES = 256 * 1024
# A float32 written as JSON takes at most this many bytes (sign, digits, exponent, comma).
_JSON_BYTES_PER_FLOAT = 16
# per-glyph is the default: sent as UNSPECIFIED so the request equals a gRPC one that leaves it
# unset (same response-cache key).
_NOISE = {"per-glyph": pb.NOISE_MODE_UNSPECIFIED, "shared": pb.NOISE_MODE_SHARED}
_PAGE = "index.html"
# Content-Encoding -> zlib window bits (None: not compressed).
_DECODERS = {"identity": None, "": None, "gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


class _HttpContext:
    """What the shared code reads from a gRPC context, for one HTTP request."""

    def __init__(self, request: Request, timeout: Optional[float] = None):
        self._request = request
        self._deadline = None if timeout is None else time.monotonic() + timeout
        #: The request body (POST), read within the limits before the handler runs.
        self.body = b""

    def invocation_metadata(self):
        value = self._request.headers.get("authorization")
        return () if value is None else (("authorization", value),)

    def time_remaining(self) -> Optional[float]:
        return None if self._deadline is None else max(0.0, self._deadline - time.monotonic())

    def set_timeout(self, seconds: float) -> None:
        self._deadline = time.monotonic() + seconds

    def peer(self) -> str:
        client = self._request.client
        return "-" if client is None else f"{client.host}:{client.port}"


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), allow_nan=False).encode("utf-8")


def _json(value: Any, status: int = 200) -> Response:
    return Response(_json_bytes(value), status_code=status, media_type="application/json")


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing more than ``limit`` bytes (413) before reading past the limit.

    A ``Content-Length`` over the limit is refused without reading the body at all.
    """
    length = request.headers.get("content-length")
    if length is not None:
        try:
            declared = int(length)
        except ValueError:
            raise InvalidInputError(f"Content-Length must be an integer, got {length[:40]!r}") from None
        if declared > limit:
            raise RequestTooLargeError(f"request body of {declared} bytes exceeds the server's limit of "
                                       f"{limit} bytes ({limit / MIB:.1f} MiB)", hint="send fewer rows per request")
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in _DECODERS:
        raise InvalidInputError(f"unsupported Content-Encoding {encoding[:40]!r}; use gzip, deflate or none")
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise RequestTooLargeError(f"request body exceeds the server's limit of {limit} bytes "
                                       f"({limit / MIB:.1f} MiB)", hint="send fewer rows per request")
        chunks.append(chunk)
    body = b"".join(chunks)
    if _DECODERS[encoding] is None:
        return body
    # Compressed bodies (tritonclient's request_compression_algorithm): the limit applies to
    # the decompressed size too, checked while inflating.
    inflater = zlib.decompressobj(_DECODERS[encoding])
    try:
        data = inflater.decompress(body, limit + 1)
        if len(data) > limit or inflater.unconsumed_tail:
            raise RequestTooLargeError(f"decompressed request body exceeds the server's limit of {limit} bytes",
                                       hint="send fewer rows per request")
        data += inflater.flush()
    except zlib.error as exc:
        raise InvalidInputError(f"the request body is not valid {encoding} data: {exc}") from None
    if not inflater.eof:
        raise InvalidInputError(f"the request body is truncated {encoding} data")
    return data


def _parse_json(data: bytes, what: str = "request body") -> Any:
    try:
        return json.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise InvalidInputError(f"the {what} is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidInputError(f"the {what} is nested too deeply") from None


def _object(value: Any, what: str) -> dict:
    if not isinstance(value, dict):
        raise InvalidInputError(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def _query_int(request: Request, name: str, default: Optional[int] = None, low: Optional[int] = None,
               high: Optional[int] = None) -> Optional[int]:
    """An integer query parameter (``default`` when absent), checked against ``low..high``."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInputError(f"query parameter {name!r} must be an integer, got {raw[:40]!r}") from None
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"{low if low is not None else '-inf'}..{high if high is not None else 'inf'}"
        raise InvalidInputError(f"query parameter {name!r} must be in {bounds}, got {value}")
    return value


def _flatten(data: Any, depth: int) -> Any:
    """KServe JSON ``data`` may be flat or nested row-major lists: flatten up to ``depth`` levels."""
    if not isinstance(data, list):
        raise InvalidInputError("tensor 'data' must be a JSON list of numbers")
    for _ in range(depth):
        if not data or not isinstance(data[0], list):
            break
        flat = []
        for row in data:
            if not isinstance(row, list):
                raise InvalidInputError("tensor 'data' mixes numbers and lists")
            flat.extend(row)
        data = flat
    return data


async def _wait_for_disconnect(request: Request) -> None:
    """Return when the client closes the connection (call only once the body has been read)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _unless_disconnected(request: Request, work: Awaitable[Response]) -> Response:
    """Await ``work``; if the client goes away first, cancel it (a queued model request is then
    dropped by the batcher, as for a cancelled gRPC call) and raise a ``cancelled`` drop."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_wait_for_disconnect(request))
    try:
        await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        task.cancel()
        watcher.cancel()
        raise
    if task.done():
        watcher.cancel()
        return task.result()
    task.cancel()
    try:
        await task
    except BaseException:  # noqa: BLE001 - the client is gone; nothing can be answered
        pass
    raise RequestDroppedError("the client closed the connection before the answer was ready", "cancelled")


def _png_response(png: bytes, headers: dict[str, str]) -> Response:
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-store", **headers})


def _labels_header(labels) -> str:
    return ",".join(str(int(v)) for v in labels)


class RestApp:
    """The HTTP endpoints over the served models; :attr:`app` is the Starlette ASGI app.

    Args:
        models: the served models (shared with gRPC).
        limits: request limits (the receive limit bounds request bodies).
        metrics: the server's :class:`~.metrics.Metrics` (statistics, request counts).
        guard: the :class:`~.rpc.CallGuard` (token check, request metrics) shared with gRPC.
        is_ready: callable telling whether the server is serving (False while draining).
        servicer: the :class:`GeneratorServicer` the PNG endpoints call.
    """

    def __init__(self, models: ModelRegistry, limits: Limits, metrics: Any, guard: CallGuard,
                 is_ready: Callable[[], bool], servicer: Optional[GeneratorServicer] = None):
        self.models = models
        self.limits = limits
        self.metrics = metrics
        self.guard = guard
        self.is_ready = is_ready
        self.servicer = servicer or GeneratorServicer(models, limits)
        #: The model repository (``index(ready_only)``, async ``load(name)``/``unload(name)``) when
        #: the server has one (set by ``create_server``); without it load/unload answer 501.
        self.repository: Optional[Any] = None
        e = self._endpoint
        routes = [
            Route("/", e("Page", self.page, is_open=True), methods=["GET"]),
            Route("/v2/health/live", e("ServerLive", self.server_live, is_open=True), methods=["GET"]),
            Route("/v2/health/ready", e("ServerReady", self.server_ready, is_open=True), methods=["GET"]),
            Route("/v2", e("ServerMetadata", self.server_metadata), methods=["GET"]),
            Route("/v2/models/stats", e("ModelStatistics", self.statistics), methods=["GET"]),
            Route("/v2/repository/index", e("RepositoryIndex", self.repository_index), methods=["POST"]),
            Route("/v2/repository/models/{name}/load", e("RepositoryModelLoad", self.load), methods=["POST"]),
            Route("/v2/repository/models/{name}/unload", e("RepositoryModelUnload", self.unload), methods=["POST"]),
            Route("/v1/models", e("ListModels", self.list_models), methods=["GET"]),
        ]
        # Each model route also exists under .../versions/{version}/ (absent: the default version).
        for prefix in ("/v1/models/{name}", "/v1/models/{name}/versions/{version}"):
            routes += [
                Route(prefix, e("GetModel", self.get_model), methods=["GET"]),
                Route(prefix + "/generate.png", e("Generate", self.generate_png), methods=["GET"]),
                Route(prefix + "/render.png", e("RenderWord", self.render_png), methods=["GET"]),
                Route(prefix + "/decode.png", e("Decode", self.decode_png), methods=["POST"]),
            ]
        for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
            routes += [
                Route(prefix, e("ModelMetadata", self.model_metadata), methods=["GET"]),
                Route(prefix + "/ready", e("ModelReady", self.model_ready), methods=["GET"]),
                Route(prefix + "/config", e("ModelConfig", self.model_config), methods=["GET"]),
                Route(prefix + "/stats", e("ModelStatistics", self.statistics), methods=["GET"]),
                Route(prefix + "/infer", e("ModelInfer", self.infer), methods=["POST"]),
            ]
        self.app = Starlette(routes=routes, exception_handlers={HTTPException: self._http_exception})

    # -- plumbing ------------------------------------------------------------------------------
    @staticmethod
    async def _http_exception(request: Request, exc: HTTPException) -> Response:
        """Starlette's own errors (unknown path 404, wrong method 405) as JSON errors."""
        if exc.status_code == 404:
            message = f"no endpoint {request.url.path!r}; see GET /v2 and GET /v1/models"
        elif exc.status_code == 405:
            message = f"method {request.method} is not allowed for {request.url.path!r}"
        else:
            message = str(exc.detail)
        return _error(exc.status_code, message)

    def _endpoint(self, method: str, handler: Callable[[Request, _HttpContext], Awaitable[Response]],
                  is_open: bool = False):
        """Wrap a handler: token first, then the handler; errors mapped; request recorded."""
        guard = self.guard

        async def endpoint(request: Request) -> Response:
            started = time.perf_counter()
            context = _HttpContext(request)
            model = request.path_params.get("name", "")
            code = grpc.StatusCode.OK
            try:
                if not is_open:
                    guard.check_token(context)
                if request.method == "POST":
                    context.body = await read_body(request, self.limits.max_receive_bytes)
                return await _unless_disconnected(request, handler(request, context))
            except Exception as exc:  # noqa: BLE001 - mapped to a status, never a traceback
                status, code, message = http_status_for(exc)
                if status >= 500 and code is grpc.StatusCode.INTERNAL:
                    logger.error("http %s %s model=%s failed with an unexpected error", request.method,
                                 request.url.path, model or "-", exc_info=exc)
                headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
                response = _error(status, message)
                if headers:
                    response.headers.update(headers)
                return response
            finally:
                guard.record(model, method, code, started, context)

        endpoint.__name__ = method
        return endpoint

    # -- page ----------------------------------------------------------------------------------
    async def page(self, request: Request, context: _HttpContext) -> Response:
        html = resources.files("ganport.runtime.server").joinpath("static", _PAGE).read_bytes()
        return Response(html, media_type="text/html; charset=utf-8", headers={"Cache-Control": "no-cache"})

    # -- KServe v2: server ---------------------------------------------------------------------
    async def server_live(self, request: Request, context: _HttpContext) -> Response:
        return _json({"live": True})

    async def server_ready(self, request: Request, context: _HttpContext) -> Response:
        ready = bool(self.is_ready())
        return _json({"ready": ready}, 200 if ready else 503)

    async def server_metadata(self, request: Request, context: _HttpContext) -> Response:
        extensions = list(EXTENSIONS)
        if self.repository is not None:
            extensions.append("model_repository")
        return _json({"name": "ganport", "version": __version__, "extensions": extensions})

    # -- KServe v2: models ---------------------------------------------------------------------
    def _model(self, request: Request):
        return self.models.get_model(request.path_params["name"], request.path_params.get("version"))

    async def model_metadata(self, request: Request, context: _HttpContext) -> Response:
        model = self._model(request)
        return _json(inference.model_metadata(model, list(self.models.versions(model.name))))

    async def model_ready(self, request: Request, context: _HttpContext) -> Response:
        # tritonclient.http's is_model_ready is "status == 200": not ready must not be 200.
        model = self._model(request)
        ready = bool(self.is_ready())
        return _json({"name": model.name, "ready": ready}, 200 if ready else 503)

    async def model_config(self, request: Request, context: _HttpContext) -> Response:
        model = self._model(request)
        policy = self.repository.policy(model.name) if self.repository is not None else None
        return _json(inference.model_config(model, policy))

    async def statistics(self, request: Request, context: _HttpContext) -> Response:
        return _json({"model_stats": inference.models_statistics(self.models, self.metrics,
                                                                 request.path_params.get("name", ""),
                                                                 request.path_params.get("version", ""))})

    # -- KServe v2: repository -----------------------------------------------------------------
    async def repository_index(self, request: Request, context: _HttpContext) -> Response:
        ready = False
        if context.body.strip():
            options = _object(_parse_json(context.body), "the request body")
            ready = options.get("ready", False)
            if not isinstance(ready, bool):
                raise InvalidInputError(f"'ready' must be true or false, got {ready!r}")
        if self.repository is not None:
            return _json(self.repository.index(ready_only=ready))
        return _json(inference.repository_index(self.models))

    def _repository_request(self, context: _HttpContext) -> None:
        """Validate a load/unload body: empty or ``{}`` (no config overrides or model files)."""
        if context.body.strip():
            options = _object(_parse_json(context.body), "the request body")
            parameters = options.get("parameters") or {}
            if isinstance(parameters, dict) and parameters.get("unload_dependents") is False:
                # What tritonclient.http's unload_model sends by default: nothing to do.
                parameters = {k: v for k, v in parameters.items() if k != "unload_dependents"}
            if parameters:
                raise InvalidInputError("load/unload parameters (config overrides, model files, "
                                        "unload_dependents) are not supported: packages load from the "
                                        "served directory as they are")

    async def load(self, request: Request, context: _HttpContext) -> Response:
        self._repository_request(context)
        name = request.path_params["name"]
        if self.repository is None:
            raise UnimplementedError(f"this server cannot load models while running (asked for {name!r}); "
                                     f"served models: {', '.join(self.models)}",
                                     hint="put the package in MODELS_DIR and restart `ganport serve`")
        await self.repository.load(name)
        return _json({})

    async def unload(self, request: Request, context: _HttpContext) -> Response:
        self._repository_request(context)
        name = request.path_params["name"]
        if self.repository is None:
            raise UnimplementedError(f"this server cannot unload models while running (asked for {name!r})",
                                     hint="remove the package from MODELS_DIR and restart `ganport serve`")
        await self.repository.unload(name)
        return _json({})

    # -- KServe v2: infer ----------------------------------------------------------------------
    async def infer(self, request: Request, context: _HttpContext) -> Response:
        model = self._model(request)
        body = context.body
        header_length = request.headers.get(HEADER_LENGTH)
        if len(body) > _INLINE_BYTES:  # parsing big JSON would hold up every other request on the loop
            parsed = await asyncio.to_thread(self._parse_infer, model, body, header_length, context)
        else:
            parsed = self._parse_infer(model, body, header_length, context)
        payload, tensors, binary_out = parsed
        rows = len(tensors["z"]) if "z" in tensors and tensors["z"].ndim == 2 else 0
        check_count(rows or 1, self.limits.max_count, "number of latent vectors")
        estimate = rows * math.prod(model.info.image_shape) * (4 if binary_out else _JSON_BYTES_PER_FLOAT)
        if estimate > self.limits.max_send_bytes:
            raise ResourceExhaustedError(
                f"the answer for {rows} rows would take about {estimate / MIB:.1f} MiB, above the server's "
                f"{self.limits.max_send_bytes / MIB:.3g} MiB message limit",
                hint="send fewer rows per request" + ("" if binary_out else " or ask for binary output"))
        images = await inference.infer(model, tensors, self.limits, context)
        described: dict[str, Any] = {"name": inference.OUTPUT, "datatype": "FP32", "shape": list(images.shape)}
        response: dict[str, Any] = {"model_name": model.name, "model_version": model.version,
                                    "outputs": [described]}
        request_id = payload.get("id")
        if isinstance(request_id, str) and request_id:
            response["id"] = request_id
        if binary_out:
            data = images.tobytes()
            described["parameters"] = {"binary_data_size": len(data)}
            head = _json_bytes(response)
            return Response(head + data, media_type="application/octet-stream",
                            headers={"Inference-Header-Content-Length": str(len(head))})

        def encode() -> bytes:
            described["data"] = images.ravel().tolist()
            return _json_bytes(response)

        encoded = await asyncio.to_thread(encode) if images.nbytes > _INLINE_BYTES else encode()
        return Response(encoded, media_type="application/json")

    def _parse_infer(self, model, body: bytes, header_length: Optional[str], context: _HttpContext
                     ) -> tuple[dict, dict[str, np.ndarray], bool]:
        """Decode an infer request body: ``(payload, input tensors, binary output wanted)``."""
        if header_length is None:
            header, binary = body, b""
        else:
            try:
                length = int(header_length)
            except ValueError:
                raise InvalidInputError(f"Inference-Header-Content-Length must be an integer, "
                                        f"got {header_length[:40]!r}") from None
            if not 0 < length <= len(body):
                raise InvalidInputError(f"Inference-Header-Content-Length is {length} but the body has "
                                        f"{len(body)} bytes")
            header, binary = body[:length], memoryview(body)[length:]
        payload = _object(_parse_json(header, "inference request"), "the inference request")
        parameters = _object(payload.get("parameters") or {}, "'parameters'")
        timeout_us = parameters.get("timeout")
        if timeout_us is not None:
            if isinstance(timeout_us, bool) or not isinstance(timeout_us, int) or timeout_us < 0:
                raise InvalidInputError(f"parameter 'timeout' must be microseconds (an integer >= 0), "
                                        f"got {timeout_us!r}")
            if timeout_us > 0:
                context.set_timeout(timeout_us / 1e6)
        tensors = self._read_inputs(payload.get("inputs"), binary)
        binary_default = parameters.get("binary_data_output", False)
        if not isinstance(binary_default, bool):
            raise InvalidInputError(f"parameter 'binary_data_output' must be true or false, got {binary_default!r}")
        outputs = payload.get("outputs") or []
        if not isinstance(outputs, list):
            raise InvalidInputError("'outputs' must be a list")
        binary_out = binary_default
        names = []
        for output in outputs:
            output = _object(output, "each entry of 'outputs'")
            names.append(output.get("name"))
            options = _object(output.get("parameters") or {}, f"parameters of output {output.get('name')!r}")
            if "classification" in options:
                raise InvalidInputError("the classification extension is not supported: the output is an image")
            if "binary_data" in options:
                if not isinstance(options["binary_data"], bool):
                    raise InvalidInputError("output parameter 'binary_data' must be true or false")
                binary_out = options["binary_data"]
        inference.check_outputs(model, names)
        return payload, tensors, binary_out

    def _read_inputs(self, inputs: Any, binary: memoryview | bytes) -> dict[str, np.ndarray]:
        """Decode the request's input tensors (JSON ``data`` or binary extension)."""
        if not isinstance(inputs, list) or not inputs:
            raise InvalidInputError("'inputs' must be a non-empty list of tensors "
                                    "({\"name\", \"datatype\", \"shape\", \"data\"})")
        tensors: dict[str, np.ndarray] = {}
        offset = 0
        for item in inputs:
            item = _object(item, "each entry of 'inputs'")
            name, datatype, shape = item.get("name"), item.get("datatype"), item.get("shape")
            if not isinstance(name, str):
                raise InvalidInputError("every input needs a 'name' (a string)")
            if name in tensors:
                raise InvalidInputError(f"input {name!r} given twice")
            if not isinstance(datatype, str):
                raise InvalidInputError(f"input {name!r} needs a 'datatype' (a string such as \"FP32\")")
            if not isinstance(shape, list) or any(isinstance(v, bool) or not isinstance(v, int) for v in shape):
                raise InvalidInputError(f"input {name!r} needs a 'shape' (a list of integers)")
            options = _object(item.get("parameters") or {}, f"parameters of input {name!r}")
            size = options.get("binary_data_size")
            if size is not None:
                if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                    raise InvalidInputError(f"input {name!r}: binary_data_size must be an integer >= 0")
                if offset + size > len(binary):
                    raise InvalidInputError(f"input {name!r}: binary_data_size {size} at offset {offset} runs past "
                                            f"the {len(binary)} bytes of binary data after the JSON header")
                tensors[name] = inference.tensor_from_bytes(name, datatype, shape,
                                                            bytes(binary[offset:offset + size]), self.limits)
                offset += size
            else:
                if "data" not in item:
                    raise InvalidInputError(f"input {name!r} has no 'data' and no binary_data_size parameter")
                inference.check_input(name, datatype, shape, self.limits)  # bounds before touching data
                values = _flatten(item["data"], len(shape) - 1)
                if datatype.startswith("INT") and not all(type(v) is int for v in values):
                    # numpy would truncate 1.5 to 1 and read true as 1: a label must be an integer.
                    raise InvalidInputError(f"input {name!r}: values must be {datatype} numbers (JSON integers)")
                tensors[name] = inference.tensor_from_values(name, datatype, shape, values, self.limits)
        if offset != len(binary):
            raise InvalidInputError(f"{len(binary)} bytes of binary data after the JSON header but the inputs' "
                                    f"binary_data_size add up to {offset}")
        return tensors

    # -- plain endpoints: JSON and PNG -----------------------------------------------------------
    async def list_models(self, request: Request, context: _HttpContext) -> Response:
        reply = await self.servicer.ListModels(pb.ListModelsRequest(), context)
        return _json([self._info(m) for m in reply.models])

    async def get_model(self, request: Request, context: _HttpContext) -> Response:
        reply = await self.servicer.GetModel(pb.GetModelRequest(**self._target(request)), context)
        return _json(self._info(reply))

    @staticmethod
    def _target(request: Request) -> dict[str, str]:
        """The request message's ``model`` and ``version`` fields from the URL."""
        return {"model": request.path_params["name"], "version": request.path_params.get("version", "")}

    @staticmethod
    def _info(message: pb.ModelInfo) -> dict[str, Any]:
        info = MessageToDict(message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
        info.pop("manifest_json", None)
        return info

    @staticmethod
    def _labels(values: list) -> pb.Labels:
        """Labels from the URL or JSON: class indices (ints) or class names / decimal strings."""
        if not values:
            return pb.Labels()
        if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            if any(v < 0 or v >= 2 ** 63 for v in values):
                raise InvalidInputError("label indices must be non-negative integers")
            return pb.Labels(indices=values)
        if all(isinstance(v, str) for v in values):
            return pb.Labels(names=values)
        raise InvalidInputError("labels must all be class indices (integers) or all class names (strings)")

    @staticmethod
    def _seed(request: Request) -> dict[str, int]:
        seed = _query_int(request, "seed", low=0, high=2 ** 63 - 1)
        return {} if seed is None else {"seed": seed}

    async def _grid_png(self, images: np.ndarray, nrow: Optional[int]) -> bytes:
        def encode() -> bytes:
            return encode_png(images[0] if len(images) == 1 else make_grid(images, nrow=nrow), compress_level=1)

        return await asyncio.to_thread(encode) if images.nbytes > _INLINE_BYTES else encode()

    async def generate_png(self, request: Request, context: _HttpContext) -> Response:
        count = _query_int(request, "n", 16, 1, self.limits.max_count)
        nrow = _query_int(request, "nrow", None, 1, count)
        labels = self._labels(request.query_params.getlist("label"))
        reply = await self.servicer.Generate(pb.GenerateRequest(
            **self._target(request), count=count, labels=labels, encoding=pb.IMAGE_ENCODING_RAW_UINT8,
            **self._seed(request)), context)
        png = await self._grid_png(codec.batch_to_array(reply.images), nrow)
        return _png_response(png, {"X-Ganport-Seed": str(reply.seed), "X-Ganport-Labels": _labels_header(reply.labels),
                                   "X-Ganport-Version": reply.version})

    async def render_png(self, request: Request, context: _HttpContext) -> Response:
        text = request.query_params.get("text")
        if text is None:
            raise InvalidInputError("query parameter 'text' is required (the word to render)")
        noise = request.query_params.get("noise", "per-glyph")
        if noise not in _NOISE:
            raise InvalidInputError(f"query parameter 'noise' must be one of {', '.join(_NOISE)}, got {noise[:40]!r}")
        options: dict[str, int] = {}
        height = _query_int(request, "height")
        if height is not None:
            options["height"] = max(-2 ** 31, min(height, 2 ** 31 - 1))  # range checked by RenderWord
        spacing = _query_int(request, "spacing")
        if spacing is not None:
            options["spacing"] = max(-2 ** 31, min(spacing, 2 ** 31 - 1))
        reply = await self.servicer.RenderWord(pb.RenderWordRequest(
            **self._target(request), text=text, noise=_NOISE[noise],  # encoding: PNG, the default
            **options, **self._seed(request)), context)
        return _png_response(reply.image.png[0], {"X-Ganport-Seed": str(reply.seed),
                                                  "X-Ganport-Labels": _labels_header(reply.labels),
                                                  "X-Ganport-Version": reply.version})

    async def decode_png(self, request: Request, context: _HttpContext) -> Response:
        body = context.body
        if len(body) > _INLINE_BYTES:
            payload = await asyncio.to_thread(_parse_json, body)
        else:
            payload = _parse_json(body)
        payload = _object(payload, "the request body")
        unknown = sorted(set(payload) - {"latents", "labels", "nrow"})
        if unknown:
            raise InvalidInputError(f"unknown field(s) {', '.join(map(repr, unknown))}; "
                                    f"fields are 'latents', 'labels', 'nrow'")
        latents = payload.get("latents")
        if not isinstance(latents, list) or not latents or not all(isinstance(row, list) for row in latents):
            raise InvalidInputError("'latents' must be a non-empty list of latent vectors (lists of numbers), "
                                    "shape [N, latent_dim]")
        try:
            z = np.asarray(latents, dtype=np.float32)
        except (TypeError, ValueError, OverflowError):
            raise InvalidInputError("'latents' must be a rectangular list of lists of numbers") from None
        labels = payload.get("labels")
        if labels is None:
            labels = []
        elif not isinstance(labels, list):
            labels = [labels]
        nrow = payload.get("nrow")
        if nrow is not None and (isinstance(nrow, bool) or not isinstance(nrow, int) or not 1 <= nrow <= len(z)):
            raise InvalidInputError(f"'nrow' must be an integer in 1..{len(z)}, got {nrow!r}")
        reply = await self.servicer.Decode(pb.DecodeRequest(
            **self._target(request), latents=codec.array_to_tensor(z), labels=self._labels(labels),
            encoding=pb.IMAGE_ENCODING_RAW_UINT8), context)
        png = await self._grid_png(codec.batch_to_array(reply.images), nrow)
        return _png_response(png, {"X-Ganport-Labels": _labels_header(reply.labels),
                                   "X-Ganport-Version": reply.version})


# -------------------------------------------------------------------------------------- serving

def bind_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (0 = a free port), not yet listening.

    Raises:
        OSError: the address cannot be bound.
    """
    host = host.strip("[]") or "0.0.0.0"
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.set_inheritable(True)
    except OSError:
        sock.close()
        raise
    return sock


def _is_path(value: Any) -> bool:
    return isinstance(value, Path) or (isinstance(value, str) and not value.lstrip().startswith("-----BEGIN"))


class HttpServer:
    """uvicorn serving a :class:`RestApp` on an existing event loop, from a pre-bound socket.

    Args:
        app: the ASGI app.
        sock: the bound socket (see :func:`bind_socket`).
        tls: ``(cert, key)`` as file paths, PEM strings or PEM bytes; None for plain HTTP.
    """

    def __init__(self, app: Any, sock: socket.socket, tls: Optional[tuple] = None):
        import uvicorn

        self.sock = sock
        self.host, self.port = sock.getsockname()[:2]
        self.tls = tls is not None
        ssl_options: dict[str, Any] = {}
        temp_dir = None
        if tls is not None:
            cert, key = tls
            if not (_is_path(cert) and _is_path(key)):
                # uvicorn reads PEM from files: write PEM given in memory to a private folder
                # for the moment the SSL context is built.
                temp_dir = tempfile.TemporaryDirectory(prefix="ganport-tls-")
                paths = []
                for value, name in ((cert, "cert.pem"), (key, "key.pem")):
                    path = Path(temp_dir.name) / name
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                    with os.fdopen(fd, "wb") as out:
                        out.write(value if isinstance(value, bytes) else str(value).encode("ascii"))
                    paths.append(str(path))
                cert, key = paths
            ssl_options = {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}
        uvicorn_log = logging.getLogger("uvicorn.error")
        if uvicorn_log.level == logging.NOTSET:
            uvicorn_log.setLevel(logging.WARNING)  # no "Uvicorn running on ..." banner: we print our own
        self.config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off", http="h11",
                                     ws="none", server_header=False, timeout_graceful_shutdown=5,
                                     **ssl_options)
        try:
            self.config.load()  # builds the SSL context now, so a bad cert fails at create_server
        except (OSError, ValueError) as exc:
            raise GanportError(f"cannot set up TLS for HTTP: {exc}") from exc
        finally:
            if temp_dir is not None:
                temp_dir.cleanup()
        self.server = uvicorn.Server(self.config)
        self._task: Optional[asyncio.Task] = None

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    async def start(self) -> None:
        """Start serving (on the running loop); returns once the socket accepts connections."""
        self._task = asyncio.get_running_loop().create_task(self._serve(), name="ganport-http")
        while not self.server.started:
            if self._task.done():
                self._task.result()  # raises what stopped it
                raise GanportError("the HTTP server stopped while starting")
            await asyncio.sleep(0.01)

    async def _serve(self) -> None:
        try:
            await self.server.serve(sockets=[self.sock])
        except SystemExit as exc:  # uvicorn exits the process when its startup fails: not ours to end
            raise GanportError("the HTTP server failed to start (see the log)") from exc

    async def stop(self, grace: Optional[float]) -> None:
        """Stop accepting, give requests in flight ``grace`` seconds, then close them."""
        if self._task is None:
            self.sock.close()
            return
        self.config.timeout_graceful_shutdown = None if grace is None else max(0.0, float(grace))
        self.server.should_exit = True
        try:
            await self._task
        except Exception:  # noqa: BLE001 - stopping must go on (the batchers still close)
            logger.exception("the HTTP server failed while stopping")
        finally:
            self.sock.close()
