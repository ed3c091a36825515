"""The ``ganport.v1.GeneratorService`` implementation and the served-model registry.

Each RPC does the same three steps as the in-process :class:`~ganport.runtime.Generator`, with the
model call going through the model's :class:`~ganport.runtime.server.batcher.DynamicBatcher`:

1. validate and prepare inputs with the runtime's own pieces (``sample_latents``,
   ``resolve_labels``, ``plan_word``), so a bad request fails alone, before it can join a batch;
2. submit ``z``/``labels`` to the batcher and wait for exactly this request's rows;
3. convert with ``to_uint8`` / ``plan.compose`` and pack the answer (:mod:`.codec`).

So the images equal ``Generator.generate/decode/render_word`` for the same seed and inputs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import secrets
from dataclasses import dataclass
import itertools
from typing import Any, AsyncIterator, Callable, Iterable, Mapping, Optional

from ganport.extras import require

require("serve", "the ganport server")  # one line naming the extra, not a ModuleNotFoundError for grpc

import grpc  # noqa: E402
import numpy as np

from ganport.errors import InvalidInputError, ModelNotFoundError, ResourceExhaustedError
from ganport.runtime.images import to_uint8
from ganport.runtime.server import codec
from ganport.runtime.server.batcher import DynamicBatcher
from ganport.runtime.server.cache import ResponseCache
from ganport.runtime.server.status import UnsupportedError
from ganport.v1 import generator_pb2 as pb
from ganport.v1 import generator_pb2_grpc as pb_grpc

logger = logging.getLogger(__name__)

MIB = 1024 * 1024
_NOISE = {pb.NOISE_MODE_UNSPECIFIED: "per-glyph", pb.NOISE_MODE_PER_GLYPH: "per-glyph",
          pb.NOISE_MODE_SHARED: "shared"}
# Largest seed accepted by numpy's default_rng is unbounded, but the wire type is uint64 and
# random seeds stay in 63 bits so every client language can hold them in a signed integer.
_SEED_BITS = 63
#: Longest class name (or decimal index) accepted in ``Labels.names``.
MAX_LABEL_NAME = 256
#: Largest RenderWord ``height`` and ``|spacing|`` in pixels.
_MAX_WORD_HEIGHT = 1024
# Responses bigger than this are encoded in a worker thread, so the loop keeps serving.
_INLINE_PACK_BYTES = 256 * 1024
_GENERATIONS = itertools.count(1)


@dataclass(frozen=True)
class Limits:
    """Per-request limits; exceeding one is INVALID_ARGUMENT (or RESOURCE_EXHAUSTED for sizes).

    Args:
        max_count: most images per Generate/Decode/Encode call (one message).
        max_stream_count: most images per GenerateStream call.
        max_text_length: most characters per RenderWord text.
        max_send_bytes: largest response message (gRPC's send limit is set to the same).
        max_receive_bytes: largest request message (gRPC's receive limit is set to the same).
    """

    max_count: int = 1024
    max_stream_count: int = 65536
    max_text_length: int = 64
    max_send_bytes: int = 64 * MIB
    max_receive_bytes: int = 64 * MIB


class ServedModel:
    """One served model version: its :class:`Generator`, its batcher, and how it runs.

    Args:
        name: name it is served under.
        generator: the loaded :class:`~ganport.runtime.Generator`.
        batcher: the model's :class:`DynamicBatcher` (wrapping ``generator.run_prepared``).
        version: the version it is served as (a version folder's name; "1" for a flat package).
    """

    def __init__(self, name: str, generator: Any, batcher: DynamicBatcher, version: str = "1"):
        self.name = name
        self.version = str(version)
        self.generator = generator
        self.batcher = batcher
        #: Distinct for every ServedModel ever made: (re)loading a model gives it a new one, so
        #: cached responses of the old model can never answer for the new one.
        self.generation = next(_GENERATIONS)

    @property
    def info(self):
        """The model's :class:`~ganport.runtime.manifest.ModelInfo`."""
        return self.generator.info

    @property
    def backend(self) -> str:
        return str(getattr(self.generator, "backend_name", "onnx"))

    @property
    def device(self) -> str:
        return str(getattr(self.generator, "device", "cpu"))

    async def run(self, z: np.ndarray, labels: Optional[np.ndarray],
                  context: Optional[grpc.aio.ServicerContext]) -> np.ndarray:
        """Run ``z``/``labels`` through the batcher on behalf of one RPC and await the rows.

        The RPC's deadline travels with the request, and a cancelled RPC cancels the awaited
        future, so the batcher drops the request if it has not run by then.

        Returns:
            float32 ``[N, C, H, W]`` (read-only; a view into the batch output).
        """
        return await self.submit(z, labels, context)

    def submit(self, z: np.ndarray, labels: Optional[np.ndarray], context: Optional[grpc.aio.ServicerContext]):
        """Queue ``z``/``labels`` for this RPC; returns the batcher's asyncio future."""
        timeout = context.time_remaining() if context is not None else None
        return self.batcher.submit(z, labels, timeout=timeout)


def _version_key(version: str) -> tuple:
    return (0, int(version), "") if version.isdigit() else (1, 0, version)


class ModelRegistry(Mapping[str, ServedModel]):
    """The served models by name, each with one or more served versions.

    As a mapping, ``registry[name]`` is the model's default version, its highest served one.
    :meth:`get_model` resolves ``(name, version)`` for every API. Reading is safe from any
    thread. Models are added and removed only on the server's event loop (:meth:`add`,
    :meth:`remove`), copy-on-write: a lookup sees the old or the new state, never a half-changed
    one, and a call that already holds a model finishes with it. A removed model (or version)
    answers NOT_FOUND to calls that arrive afterwards.

    Args:
        models: ``{name: ServedModel}`` or an iterable of ServedModels (several versions of a
            name allowed).
    """

    def __init__(self, models: Mapping[str, ServedModel] | Iterable[ServedModel] = ()):
        served = list(models.values()) if isinstance(models, Mapping) else list(models)
        versions: dict[str, dict[str, ServedModel]] = {}
        for model in served:
            versions.setdefault(model.name, {})[model.version] = model
        self._set(versions)
        #: Called with a model name whenever a version of it is added, replaced or removed.
        self.listeners: list[Callable[[str], None]] = []
        #: ``(name, version) -> reason or None``: why a model (version "" = any) is not served,
        #: added to NOT_FOUND answers (the model repository sets it; must not touch the disk).
        self.why_not_served: Optional[Callable[[str, str], Optional[str]]] = None

    def _set(self, versions: dict[str, dict[str, ServedModel]]) -> None:
        ordered = {name: dict(sorted(by_version.items(), key=lambda item: _version_key(item[0])))
                   for name, by_version in sorted(versions.items()) if by_version}
        # One assignment: readers on other threads see the old or the new state.
        self._state = (ordered, {name: list(by_version.values())[-1] for name, by_version in ordered.items()})

    def _changed(self, name: str) -> None:
        for listener in self.listeners:
            listener(name)

    def __getitem__(self, name: str) -> ServedModel:
        return self._state[1][name]

    def __iter__(self):
        return iter(self._state[1])

    def __len__(self) -> int:
        return len(self._state[1])

    def versions(self, name: str) -> dict[str, ServedModel]:
        """``{version: ServedModel}`` of ``name`` in increasing version order (empty if not served)."""
        return dict(self._state[0].get(name, {}))

    def served(self) -> list[ServedModel]:
        """Every served version of every model, by name then version."""
        return [model for by_version in self._state[0].values() for model in by_version.values()]

    async def add(self, model: ServedModel) -> None:
        """Serve ``model`` as version ``model.version`` of ``model.name``; a model already served
        as that version is replaced at once (new calls go to the new one) and its queued work
        drains."""
        versions = {name: dict(by_version) for name, by_version in self._state[0].items()}
        old = versions.setdefault(model.name, {}).get(model.version)
        versions[model.name][model.version] = model
        self._set(versions)
        self._changed(model.name)
        if old is not None and old is not model:
            await old.batcher.close(drain=True)

    async def remove(self, name: str, version: Optional[str] = None) -> list[ServedModel]:
        """Stop serving ``version`` of ``name`` (every version when None): new calls get
        NOT_FOUND at once; returns the removed models after their queued work ran.

        Raises:
            ModelNotFoundError: ``name`` (or that version of it) is not served.
        """
        removed = [self.get_model(name, version)] if version else list(self.versions(name).values())
        if not removed:
            self.get_model(name)  # raises, naming the served models
        versions = {key: dict(value) for key, value in self._state[0].items()}
        for model in removed:
            versions[name].pop(model.version, None)
        self._set(versions)
        self._changed(name)
        for model in removed:
            await model.batcher.close(drain=True)
        return removed

    def get_model(self, name: str, version: Optional[str] = None) -> ServedModel:
        """The served model ``name`` at ``version`` (None or "": its default, the highest served
        version). Every API resolves its model here.

        Raises:
            ModelNotFoundError: no such model (naming the served models) or no such version
                (naming the served versions).
        """
        by_version = self._state[0].get(name)
        if not by_version:
            served = ", ".join(self._state[1]) or "none"
            shown = repr(name[:200]) if name else "(empty name)"
            raise ModelNotFoundError(f"model {shown} is not served here{self._why(name, version)}; "
                                     f"served models: {served}")
        if not version:
            return list(by_version.values())[-1]
        model = by_version.get(version)
        if model is None:
            raise ModelNotFoundError(f"model {name!r} has no version {version[:40]!r} served here"
                                     f"{self._why(name, version)}; served versions: {', '.join(by_version)}")
        return model

    def _why(self, name: str, version: Optional[str]) -> str:
        reason = self.why_not_served(name, version or "") if self.why_not_served is not None and name else None
        return f" ({reason})" if reason else ""

    async def close(self, drain: bool = True) -> None:
        """Close every batcher (running queued work first when ``drain``)."""
        for model in self.served():
            await model.batcher.close(drain=drain)


def model_info_message(model: ServedModel, limits: Limits,
                       versions: Iterable[Mapping[str, str]] = ()) -> pb.ModelInfo:
    """The wire ``ModelInfo`` for one served model version.

    Args:
        model: the version described.
        limits: the server's request limits.
        versions: every version of the model as ``{"version", "state", "reason"}``.
    """
    info = model.info
    return pb.ModelInfo(
        name=model.name, kind=info.kind, latent_dim=info.latent_dim, n_classes=info.n_classes,
        class_names=list(info.class_names), image_shape=list(info.image_shape),
        value_range=[float(v) for v in info.value_range], conditional=info.conditional,
        has_encoder=info.has_encoder, dataset=info.dataset, backend=model.backend, device=model.device,
        max_batch=model.batcher.max_batch, max_count=limits.max_count,
        max_stream_count=limits.max_stream_count, max_text_length=limits.max_text_length,
        manifest_json=json.dumps(info.to_dict(), sort_keys=True), version=model.version,
        versions=[pb.ModelVersion(version=v["version"], state=v["state"], reason=v["reason"]) for v in versions],
    )


def labels_from_message(message: pb.Labels, limit: int) -> Any:
    """The ``labels`` argument for ``Generator.resolve_labels`` (None when none were given).

    Args:
        message: the request's labels.
        limit: most labels accepted (the request's image count limit).

    Raises:
        InvalidInputError: both indices and names, more than ``limit`` labels, or a name longer
            than :data:`MAX_LABEL_NAME` characters.
    """
    if message.indices and message.names:
        raise InvalidInputError("give labels either as indices or as names, not both")
    given = len(message.indices) + len(message.names)
    if given > max(1, limit):
        raise InvalidInputError(f"{given} labels for at most {max(1, limit)} images: give one label or one per image")
    for name in message.names:
        if len(name) > MAX_LABEL_NAME:
            raise InvalidInputError(f"a label name has {len(name)} characters; class names and indices have at "
                                    f"most {MAX_LABEL_NAME}")
    if message.indices:
        return np.asarray(message.indices, dtype=np.int64)
    if message.names:
        return list(message.names)
    return None


def check_count(count: int, limit: int, what: str = "count") -> int:
    """Validate an image count against ``1..limit``."""
    if not 1 <= count <= limit:
        raise InvalidInputError(f"{what} must be in 1..{limit}, got {count}")
    return int(count)


def check_latents(model: "ServedModel", z: Any, max_count: int) -> np.ndarray:
    """Validate caller latents before they can join a batch, so one bad request fails alone.

    Shape, dtype and finiteness are the runtime's own checks (:meth:`Generator.check_latents`);
    the server adds its count limit.
    """
    z = model.generator.check_latents(z, name="latents")
    check_count(len(z), max_count, "number of latent vectors")
    return z


def new_seed() -> int:
    """A fresh random seed for requests that did not give one (returned to the caller)."""
    return secrets.randbits(_SEED_BITS)


def check_size(message, limit: int, hint: str) -> None:
    """Refuse a response bigger than the send limit with RESOURCE_EXHAUSTED (not a broken call)."""
    size = message.ByteSize()
    if size > limit:
        raise ResourceExhaustedError(f"response of {size / MIB:.1f} MiB exceeds the server's "
                                     f"{limit / MIB:.0f} MiB message limit", hint=hint)


class GeneratorServicer(pb_grpc.GeneratorServiceServicer):
    """Implements ``ganport.v1.GeneratorService`` over a :class:`ModelRegistry` (``grpc.aio``).

    Register it with :func:`ganport.runtime.server.rpc.add_service`, which authenticates,
    decodes, maps errors to status codes and records metrics around every method.

    Args:
        models: the served models.
        limits: request limits.
    """

    def __init__(self, models: ModelRegistry, limits: Limits, cache: Optional[ResponseCache] = None,
                 repository: Any = None):
        self.models = models
        self.limits = limits
        #: The :class:`~.repository.ModelRepository` (the state of versions that are not served),
        #: or None: only the served versions are reported.
        self.repository = repository
        self.cache = cache if cache is not None else ResponseCache(0)
        models.listeners.append(self.cache.drop_model)

    def _cache_key(self, model: ServedModel, method: str, request) -> Optional[tuple]:
        """The cache key of a deterministic request, or None (cache off)."""
        if not self.cache.enabled:
            return None
        return model.name, model.generation, method, request.SerializeToString(deterministic=True)

    # -- helpers -------------------------------------------------------------------------------
    def _check_response_estimate(self, model: ServedModel, count: int, encoding: int) -> None:
        """Refuse before computing when a one-message answer cannot fit the send limit."""
        estimate = count * codec.bytes_per_image(model.info.image_shape, encoding)
        if estimate > self.limits.max_send_bytes:
            raise ResourceExhaustedError(
                f"{count} images in {pb.ImageEncoding.Name(encoding)} would take about "
                f"{estimate / MIB:.1f} MiB, above the server's {self.limits.max_send_bytes / MIB:.0f} "
                f"MiB message limit", hint="use GenerateStream, a smaller count or the PNG encoding")

    async def _pack(self, model: ServedModel, images: np.ndarray, encoding: int) -> pb.ImageBatch:
        """Encode model output for the wire; big batches are encoded off the event loop."""
        if images.nbytes > _INLINE_PACK_BYTES:
            return await asyncio.to_thread(codec.images_to_batch, images, encoding, model.info.value_range)
        return codec.images_to_batch(images, encoding, model.info.value_range)

    def _prepare_generate(self, model: ServedModel, request: pb.GenerateRequest, limit: int):
        """Validate a GenerateRequest; returns (count, encoding, seed, z, labels)."""
        count = check_count(request.count, limit)
        encoding = codec.resolve_encoding(request.encoding)
        seed = int(request.seed) if request.HasField("seed") else new_seed()
        gen = model.generator
        # Exactly what Generator.generate does, so the same seed gives the same images.
        z = gen.sample_latents(count, seed)
        labels = gen.resolve_labels(labels_from_message(request.labels, limit), count)
        return count, encoding, seed, z, labels

    # -- RPCs ----------------------------------------------------------------------------------
    def _versions(self, name: str) -> list[dict[str, str]]:
        """Every version of ``name`` with its state (READY/UNAVAILABLE) and reason."""
        if self.repository is not None:
            return self.repository.versions(name)
        return [{"version": v, "state": "READY", "reason": ""} for v in self.models.versions(name)]

    async def ListModels(self, request, context):
        return pb.ListModelsResponse(models=[model_info_message(m, self.limits, self._versions(m.name))
                                             for m in self.models.values()])

    async def GetModel(self, request, context):
        model = self.models.get_model(request.model, request.version)
        return model_info_message(model, self.limits, self._versions(model.name))

    async def Generate(self, request, context):
        model = self.models.get_model(request.model, request.version)
        key = self._cache_key(model, "Generate", request) if request.HasField("seed") else None
        if key is not None and (cached := self.cache.get(key)) is not None:
            return cached
        count, encoding, seed, z, labels = self._prepare_generate(model, request, self.limits.max_count)
        self._check_response_estimate(model, count, encoding)
        images = await model.run(z, labels, context)
        response = pb.GenerateResponse(model=model.name, version=model.version, seed=seed,
                                       labels=[] if labels is None else labels.tolist(),
                                       images=await self._pack(model, images, encoding))
        check_size(response, self.limits.max_send_bytes, "use GenerateStream or a smaller count")
        if key is not None:
            self.cache.put(key, response)
        return response

    async def GenerateStream(self, request, context) -> AsyncIterator[pb.GenerateChunk]:
        model = self.models.get_model(request.model, request.version)
        count, encoding, seed, z, labels = self._prepare_generate(model, request, self.limits.max_stream_count)
        if request.chunk_size < 0:
            raise InvalidInputError(f"chunk_size must be >= 0, got {request.chunk_size}")
        per_image = codec.bytes_per_image(model.info.image_shape, encoding)
        # Leave headroom for the chunk's own fields (labels, offsets).
        fit = int(self.limits.max_send_bytes * 0.9) // per_image
        if fit < 1:
            raise ResourceExhaustedError(f"one image takes about {per_image / MIB:.1f} MiB, above the "
                                         f"server's message limit", hint="use the PNG encoding")
        chunk = min(request.chunk_size or model.batcher.max_batch, fit)
        starts = list(range(0, count, chunk))

        def submit(start: int):
            stop = min(start + chunk, count)
            return model.submit(z[start:stop], None if labels is None else labels[start:stop], context)

        # Keep one chunk in flight while the previous one is sent: the model never waits on the
        # network, and memory stays bounded to two chunks whatever the count.
        pending = submit(starts[0])
        try:
            for index, start in enumerate(starts):
                images = await pending
                pending = submit(starts[index + 1]) if index + 1 < len(starts) else None
                stop = start + len(images)
                yield pb.GenerateChunk(model=model.name, version=model.version, seed=seed, offset=start, total=count,
                                       labels=[] if labels is None else labels[start:stop].tolist(),
                                       images=await self._pack(model, images, encoding))
        finally:
            if pending is not None and not pending.done():
                model.batcher.cancel(pending)

    async def Decode(self, request, context):
        model = self.models.get_model(request.model, request.version)
        key = self._cache_key(model, "Decode", request)
        if key is not None and (cached := self.cache.get(key)) is not None:
            return cached
        encoding = codec.resolve_encoding(request.encoding)
        if not request.HasField("latents"):
            raise InvalidInputError("latents are required: a FloatTensor of shape [N, latent_dim]")
        z = check_latents(model, codec.tensor_to_array(request.latents), self.limits.max_count)
        labels = model.generator.resolve_labels(labels_from_message(request.labels, len(z)), len(z))
        self._check_response_estimate(model, len(z), encoding)
        images = await model.run(z, labels, context)
        response = pb.DecodeResponse(model=model.name, version=model.version,
                                     labels=[] if labels is None else labels.tolist(),
                                     images=await self._pack(model, images, encoding))
        check_size(response, self.limits.max_send_bytes, "decode fewer latents per call")
        if key is not None:
            self.cache.put(key, response)
        return response

    async def Encode(self, request, context):
        model = self.models.get_model(request.model, request.version)
        if not model.info.has_encoder:
            raise UnsupportedError(f"model {model.name!r} (kind {model.info.kind}) has no encoder: "
                                   f"Encode works only for AAE models")
        if not request.HasField("images"):
            raise InvalidInputError("images are required")
        # Refuse an oversized batch from its declared size, before decoding any of it.
        declared = max(len(request.images.png), int(request.images.shape[0]) if request.images.shape else 0)
        if declared > self.limits.max_count:
            check_count(declared, self.limits.max_count, "number of images")
        images = codec.batch_to_array(request.images)
        check_count(len(images), self.limits.max_count, "number of images")
        # The encoder is not batched (Encode is rare); it runs off the event loop.
        latents = await asyncio.to_thread(model.generator.encode, images)
        return pb.EncodeResponse(model=model.name, version=model.version, latents=codec.array_to_tensor(latents))

    async def RenderWord(self, request, context):
        model = self.models.get_model(request.model, request.version)
        key = self._cache_key(model, "RenderWord", request) if request.HasField("seed") else None
        if key is not None and (cached := self.cache.get(key)) is not None:
            return cached
        encoding = codec.resolve_encoding(request.encoding, allowed=(codec.PNG, codec.RAW_UINT8))
        text = request.text
        if len(text) > self.limits.max_text_length:
            raise InvalidInputError(f"text has {len(text)} characters; the limit is "
                                    f"{self.limits.max_text_length}")
        if request.noise not in _NOISE:
            raise InvalidInputError(f"unknown noise mode {request.noise}: valid modes are "
                                    f"{', '.join(pb.NoiseMode.Name(v) for v in _NOISE)}")
        if request.HasField("height") and not 1 <= request.height <= _MAX_WORD_HEIGHT:
            raise InvalidInputError(f"height must be in 1..{_MAX_WORD_HEIGHT} pixels, got {request.height}")
        if request.HasField("spacing") and abs(request.spacing) > _MAX_WORD_HEIGHT:
            raise InvalidInputError(f"spacing must be in -{_MAX_WORD_HEIGHT}..{_MAX_WORD_HEIGHT} pixels, "
                                    f"got {request.spacing}")
        seed = int(request.seed) if request.HasField("seed") else new_seed()
        plan = model.generator.plan_word(
            text, seed=seed, noise=_NOISE[request.noise],
            spacing=request.spacing if request.HasField("spacing") else None,
            height=request.height if request.HasField("height") else None)
        self._check_word_size(model, plan)
        glyphs = to_uint8(await model.run(plan.z, plan.labels, context), model.info.value_range)
        word = plan.compose(glyphs)
        response = pb.RenderWordResponse(model=model.name, version=model.version, seed=seed,
                                         labels=plan.labels.tolist(),
                                         image=codec.uint8_to_batch(word[None], encoding))
        check_size(response, self.limits.max_send_bytes, "render a shorter text or a smaller height")
        if key is not None:
            self.cache.put(key, response)
        return response

    def _check_word_size(self, model: ServedModel, plan) -> None:
        """Refuse a word image that could not be sent, before running the model."""
        c, h, w = model.info.image_shape
        # A glyph is at most its full width scaled to the output height; spaces are narrower.
        width = len(plan.text) * (math.ceil(w * plan.height / h) + abs(plan.spacing)) + 2 * plan.height
        estimate = width * plan.height * len(plan.lines) * c
        if estimate > self.limits.max_send_bytes:
            raise ResourceExhaustedError(f"the rendered word would take about {estimate / MIB:.1f} MiB, "
                                         f"above the server's message limit",
                                         hint="render a shorter text or a smaller height")
