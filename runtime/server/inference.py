"""The Open Inference Protocol (KServe v2) core, shared by the gRPC and REST surfaces.

Protocol surfaces (``kserve.py`` for gRPC, a REST module for HTTP) only translate their wire
format to and from numpy arrays; everything else is here, written once: tensor decoding with
bounds checked before any arithmetic, the model's metadata, and inference through the model's
batcher. Names follow the protocol: tensors ``z`` (FP32 ``[N, latent_dim]``), ``label`` (INT64
or INT32, ``[N]`` or ``[N, 1]``; conditional models only), output ``image`` (FP32
``[N, C, H, W]``, in the model's value range).
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import numpy as np

from ganport.errors import InvalidInputError, ModelNotFoundError
from ganport.runtime.server.servicer import Limits, ModelRegistry, ServedModel, check_latents

#: The only model version ganport serves; an empty version means the same.
MODEL_VERSION = "1"
#: KServe ``platform`` per ganport backend (Triton's names).
PLATFORMS = {"onnx": "onnxruntime_onnx", "torchscript": "pytorch_libtorch", "pt2": "pytorch_pt2"}
#: Protocol datatype -> little-endian numpy dtype.
DTYPES = {"FP32": np.dtype("<f4"), "INT64": np.dtype("<i8"), "INT32": np.dtype("<i4")}
#: Datatypes accepted per input name.
ACCEPTED = {"z": ("FP32",), "label": ("INT64", "INT32")}
#: The one output.
OUTPUT = "image"
# Largest non-batch dimension accepted in a tensor shape (latent sizes are far smaller).
_MAX_INNER_DIM = 65536
_NUMPY_TO_PROTOCOL = {"float32": "FP32", "int64": "INT64"}


def find_model(models: ModelRegistry, name: str, version: str = "") -> ServedModel:
    """The served model ``name`` at ``version`` ("" = the default).

    Raises:
        ModelNotFoundError: no such model, or no such version.
    """
    model = models.get_model(name)
    if version not in ("", MODEL_VERSION):
        raise ModelNotFoundError(f"model {name!r} has no version {version!r}; available: {MODEL_VERSION!r}")
    return model


def check_input(name: str, datatype: str, shape: Sequence[Any], limits: Limits) -> tuple[np.dtype, tuple[int, ...]]:
    """Validate one input's name, datatype and shape before reading its data.

    Every dimension is bounded (batch size by ``limits.max_count``) before any product is taken,
    so no shape can overflow or ask for a huge allocation.

    Returns:
        ``(numpy dtype, shape)``.

    Raises:
        InvalidInputError: unknown input, wrong datatype, wrong rank or a dimension out of range.
    """
    if name not in ACCEPTED:
        raise InvalidInputError(f"unknown input {name!r}; inputs are 'z' and 'label'")
    if datatype not in ACCEPTED[name]:
        raise InvalidInputError(f"input {name!r} must be {' or '.join(ACCEPTED[name])}, got {datatype or '(none)'}")
    try:
        dims = tuple(int(v) for v in shape)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidInputError(f"input {name!r}: shape must be a list of integers, got {shape!r}") from exc
    ranks = (2,) if name == "z" else (1, 2)
    if len(dims) not in ranks:
        expected = "[N, latent_dim]" if name == "z" else "[N] or [N, 1]"
        raise InvalidInputError(f"input {name!r} must have shape {expected}, got {list(dims)}")
    limit = max(limits.max_count, _MAX_INNER_DIM)
    if any(v < 1 or v > limit for v in dims):
        raise InvalidInputError(f"input {name!r} has an invalid shape {list(dims)}: every dimension must be in "
                                f"1..{limit} (batch size at most {limits.max_count})")
    return DTYPES[datatype], dims


def tensor_from_bytes(name: str, datatype: str, shape: Sequence[Any], data: bytes, limits: Limits) -> np.ndarray:
    """An input tensor from raw little-endian bytes (gRPC ``raw_input_contents``, REST binary data)."""
    dtype, dims = check_input(name, datatype, shape, limits)
    expected = math.prod(dims) * dtype.itemsize
    if len(data) != expected:
        raise InvalidInputError(f"input {name!r}: {len(data)} bytes of raw data, shape {list(dims)} "
                                f"{datatype} needs {expected}")
    return np.frombuffer(data, dtype=dtype).reshape(dims)


def tensor_from_values(name: str, datatype: str, shape: Sequence[Any], values: Sequence[Any],
                       limits: Limits) -> np.ndarray:
    """An input tensor from a flat list of numbers (gRPC typed contents, REST JSON ``data``)."""
    dtype, dims = check_input(name, datatype, shape, limits)
    count = math.prod(dims)
    if len(values) != count:
        raise InvalidInputError(f"input {name!r}: {len(values)} values, shape {list(dims)} needs {count}")
    try:
        # Out-of-range floats become inf (refused later as non-finite latents), without a warning.
        with np.errstate(over="ignore", invalid="ignore"):
            array = np.asarray(values, dtype=dtype)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidInputError(f"input {name!r}: values must be {datatype} numbers") from exc
    if array.shape != (count,):
        raise InvalidInputError(f"input {name!r}: data must be a flat list of {count} numbers")
    return array.reshape(dims)


def check_outputs(model: ServedModel, names: Sequence[str]) -> None:
    """Only ``image`` may be requested."""
    for name in names:
        if name != OUTPUT:
            raise InvalidInputError(f"model {model.name!r} has no output {name!r}; its only output is {OUTPUT!r}")


async def infer(model: ServedModel, tensors: dict[str, np.ndarray], limits: Limits, context: Optional[Any] = None
                ) -> np.ndarray:
    """Run validated input tensors through the model's batcher.

    Args:
        model: the served model.
        tensors: ``{"z": float32 [N, latent_dim], "label": int [N] or [N, 1]}`` (label only for
            conditional models).
        limits: request limits.
        context: the gRPC context (deadline, cancellation), or None.

    Returns:
        float32 ``[N, C, H, W]`` little-endian, C-contiguous.

    Raises:
        InvalidInputError: missing or unexpected inputs, label shape, NaN latents, bad labels.
    """
    info = model.info
    expected = {"z", "label"} if info.conditional else {"z"}
    missing = sorted(expected - set(tensors))
    if missing:
        raise InvalidInputError(f"missing input(s) {', '.join(missing)}; model {model.name!r} "
                                f"takes {', '.join(sorted(expected))}")
    extra = sorted(set(tensors) - expected)
    if extra:
        raise InvalidInputError(f"unexpected input(s) {', '.join(extra)}; model {model.name!r} "
                                f"takes {', '.join(sorted(expected))}")
    z = check_latents(model, tensors["z"], limits.max_count)
    labels = None
    if info.conditional:
        label = tensors["label"]
        if label.ndim == 2 and label.shape[1] == 1:  # Triton's [N, 1] form (what its config declares)
            label = label[:, 0]
        if label.shape != (len(z),):
            raise InvalidInputError(f"input 'label' must have shape [{len(z)}] or [{len(z)}, 1] (one per row of z), "
                                    f"got {list(label.shape)}")
        labels = model.generator.resolve_labels(label.astype(np.int64), len(z))
    return np.ascontiguousarray(await model.run(z, labels, context), dtype="<f4")


def model_metadata(model: ServedModel) -> dict[str, Any]:
    """The protocol's model metadata: ``name``, ``versions``, ``platform``, ``inputs``, ``outputs``.

    Each tensor is ``{"name", "datatype", "shape"}`` with ``-1`` for the batch axis.
    """
    spec = model.info.io_spec()

    def describe(entries):
        return [{"name": e["name"], "datatype": _NUMPY_TO_PROTOCOL.get(e["dtype"], e["dtype"].upper()),
                 "shape": list(e["shape"])} for e in entries]

    return {"name": model.name, "versions": [MODEL_VERSION],
            "platform": PLATFORMS.get(model.backend, model.backend),
            "inputs": describe(spec["inputs"]), "outputs": describe(spec["outputs"])}


#: Triton ``backend`` per ganport backend.
TRITON_BACKENDS = {"onnx": "onnxruntime", "torchscript": "pytorch", "pt2": "pytorch"}
_CONFIG_TYPES = {"float32": "TYPE_FP32", "int64": "TYPE_INT64"}


def model_config(model: ServedModel) -> dict[str, Any]:
    """The model's configuration in Triton's ``ModelConfig`` shape (as Triton's JSON shows it).

    Matches the ``config.pbtxt`` that ``ganport export --format triton`` writes: implicit batch
    axis with ``max_batch_size`` = the batcher's max batch (rows per model call; ganport splits
    bigger requests, up to its ``max_count``), dims without the batch axis, the ``[N]`` label
    declared as ``dims: [1]`` with ``reshape: {shape: []}`` (a Triton client sends ``[N, 1]``;
    ganport accepts ``[N]`` too), dynamic batching with the server's max delay.
    """
    spec = model.info.io_spec()

    def tensor(entry: dict[str, Any]) -> dict[str, Any]:
        dims = [int(d) for d in entry["shape"][1:]]
        described: dict[str, Any] = {"name": entry["name"], "data_type": _CONFIG_TYPES.get(entry["dtype"], "TYPE_FP32"),
                                     "dims": dims or [1]}
        if not dims:
            described["reshape"] = {"shape": []}
        return described

    device = model.device
    return {
        "name": model.name,
        "platform": PLATFORMS.get(model.backend, model.backend),
        "backend": TRITON_BACKENDS.get(model.backend, model.backend),
        "version_policy": {"latest": {"num_versions": 1}},
        "max_batch_size": int(model.batcher.max_batch),
        "input": [tensor(e) for e in spec["inputs"]],
        "output": [tensor(e) for e in spec["outputs"]],
        "dynamic_batching": {"max_queue_delay_microseconds": int(round(model.batcher.max_delay * 1e6))},
        "instance_group": [{"name": model.name, "count": 1,
                            "kind": "KIND_GPU" if device.startswith("cuda") else "KIND_CPU"}],
        "parameters": {"ganport.kind": {"string_value": model.info.kind}},
    }


def model_statistics(model: ServedModel, metrics: Any) -> dict[str, Any]:
    """The model's statistics in Triton's ``ModelStatistics`` shape, from the server's metrics.

    ``inference_stats.success``/``fail``: requests (every protocol, every method) with status OK /
    not OK, and their total handling time; ``queue``: time requests waited before their first model
    call; ``compute_infer``: model calls and their duration; ``inference_count``: images
    generated; ``execution_count``: model calls (batches). Durations are in nanoseconds.
    """
    name = model.name
    stats = metrics.model_stats(name)
    requests, ok = stats["requests"], stats["ok"]
    handled_ns = int(metrics.count("ganport_request_seconds_sum", model=name) * 1e9)
    share = ok / requests if requests else 0.0
    queue_count = int(metrics.count("ganport_queue_seconds_count", model=name))

    def duration(count: int, ns: int) -> dict[str, int]:
        return {"count": int(count), "ns": int(ns)}

    zero = duration(0, 0)
    return {
        "name": name, "version": MODEL_VERSION, "last_inference": 0,
        "inference_count": stats["images"], "execution_count": stats["batches"],
        "inference_stats": {
            "success": duration(ok, handled_ns * share), "fail": duration(requests - ok, handled_ns * (1 - share)),
            "queue": duration(queue_count, stats["queue_seconds_sum"] * 1e9),
            "compute_input": zero,
            "compute_infer": duration(stats["batches"], stats["compute_seconds_sum"] * 1e9),
            "compute_output": zero, "cache_hit": zero, "cache_miss": zero,
        },
        "batch_stats": [],
    }


def models_statistics(models: ModelRegistry, metrics: Any, name: str = "", version: str = "") -> list[dict[str, Any]]:
    """:func:`model_statistics` of ``name`` (ModelNotFoundError if not served), or of every model when empty."""
    chosen = [find_model(models, name, version)] if name else list(models.values())
    return [model_statistics(model, metrics) for model in chosen]


def repository_index(models: ModelRegistry) -> list[dict[str, str]]:
    """Every served model as a repository index entry: ``name``, ``version``, ``state``, ``reason``."""
    return [{"name": name, "version": MODEL_VERSION, "state": "READY", "reason": ""} for name in models]
