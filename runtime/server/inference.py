"""The Open Inference Protocol (KServe v2) core, shared by the gRPC and REST surfaces.

Protocol surfaces (``kserve.py`` for gRPC, a REST module for HTTP) only translate their wire
format to and from numpy arrays; everything else is here, written once: tensor decoding with
bounds checked before any arithmetic, the model's metadata, and inference through the model's
batcher, model configuration and statistics in Triton's shapes. Names follow the protocol: tensors
``z`` (FP32 ``[N, latent_dim]``), ``label`` (INT64 or INT32, ``[N]`` or ``[N, 1]``; conditional
models only), output ``image`` (FP32 ``[N, C, H, W]``, in the model's value range).

The label contract: every surface accepts ``label`` as ``[N]`` and as ``[N, 1]``, and metadata
advertises ``[-1, 1]``, the shape Triton demands for the repository ``ganport export --format
triton`` writes (``dims: [1]`` + ``reshape: { shape: [] }``, see :func:`triton_dims`), so a client
written against ganport works unchanged against Triton serving the same model, and back.
"""

from __future__ import annotations

import json
import math
from typing import Any, Optional, Sequence

import numpy as np

from ganport.errors import InvalidInputError
from ganport.runtime.backends import BACKENDS as _BACKEND_TABLE
from ganport.runtime.manifest import triton_dims
from ganport.runtime.server.servicer import Limits, ModelRegistry, ServedModel, check_latents
from ganport.runtime.server.versions import DEFAULT_POLICY

#: KServe ``platform`` per ganport backend (Triton's names).
PLATFORMS = {name: spec.triton_platform for name, spec in _BACKEND_TABLE.items()}
#: Triton ``backend`` per ganport backend.
TRITON_BACKENDS = {name: spec.triton_backend for name, spec in _BACKEND_TABLE.items()}
#: The protocol extensions implemented (Triton's names), reported by ServerMetadata.
EXTENSIONS = ("model_configuration", "model_repository", "statistics")
#: Methods whose calls count as inference requests in :func:`model_statistics` (every surface
#: that runs the model: KServe gRPC, the native API and the REST ``infer`` route).
INFERENCE_METHODS = frozenset({"ModelInfer", "ModelStreamInfer", "Generate", "GenerateStream", "Decode",
                               "Encode", "RenderWord", "infer"})
#: Config parameter holding the package manifest as JSON (as the Triton export writes it).
METADATA_PARAMETER = "ganport.metadata"
#: Protocol datatype -> little-endian numpy dtype.
DTYPES = {"FP32": np.dtype("<f4"), "INT64": np.dtype("<i8"), "INT32": np.dtype("<i4")}
#: Datatypes accepted per input name.
ACCEPTED = {"z": ("FP32",), "label": ("INT64", "INT32")}
#: The one output.
OUTPUT = "image"
# Largest non-batch dimension accepted in a tensor shape (latent sizes are far smaller).
_MAX_INNER_DIM = 65536
_NUMPY_TO_PROTOCOL = {"float32": "FP32", "int64": "INT64"}
_NUMPY_TO_TRITON = {"float32": "TYPE_FP32", "int64": "TYPE_INT64"}


def client_shape(shape: Sequence[int]) -> list[int]:
    """The shape clients send and receive for a tensor of model ``shape``: ``[-1, *dims]``."""
    return [-1, *triton_dims(shape)[0]]


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
        labels = model.generator.resolve_labels(label, len(z))
    return np.ascontiguousarray(await model.run(z, labels, context), dtype="<f4")


def model_metadata(model: ServedModel, versions: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """The protocol's model metadata: ``name``, ``versions``, ``platform``, ``inputs``, ``outputs``.

    ``versions`` are the model's served versions, as Triton lists them (None: ``model``'s own);
    platform and tensors are those of ``model``, the version asked for (or the default one).

    Each tensor is ``{"name", "datatype", "shape"}`` with ``-1`` for the batch axis; shapes are
    the ones Triton requires for the exported config (:func:`client_shape`): ``label`` is
    ``[-1, 1]`` (``[N]`` is accepted too).
    """
    spec = model.info.io_spec()

    def describe(entries):
        return [{"name": e["name"], "datatype": _NUMPY_TO_PROTOCOL.get(e["dtype"], e["dtype"].upper()),
                 "shape": client_shape(e["shape"])} for e in entries]

    return {"name": model.name, "versions": list(versions) if versions is not None else [model.version],
            "platform": PLATFORMS.get(model.backend, model.backend),
            "inputs": describe(spec["inputs"]), "outputs": describe(spec["outputs"])}


def _config_tensor(entry: dict) -> dict[str, Any]:
    dims, reshape = triton_dims(entry["shape"])
    tensor: dict[str, Any] = {"name": entry["name"], "data_type": _NUMPY_TO_TRITON[entry["dtype"]], "dims": dims}
    if reshape is not None:
        tensor["reshape"] = {"shape": reshape}
    return tensor


def model_config(model: ServedModel, version_policy: Any = None) -> dict[str, Any]:
    """The model's configuration as Triton's ``ModelConfig`` in JSON form (proto field names).

    The same shape ``ganport export --format triton`` writes to ``config.pbtxt``: implicit batch
    axis with ``max_batch_size`` = the batcher's max batch, ``z`` ``[latent_dim]``, ``label``
    ``[1]`` reshaped to ``[]``, ``image`` ``[C, H, W]``, dynamic batching with the server's max
    delay and queue size, the batcher's instances (``--instances``) on the model's device, the model's version policy
    (a :class:`~.versions.VersionPolicy`; None: ``latest:1``), and the manifest JSON in the
    ``ganport.metadata`` parameter.
    """
    info, batcher = model.info, model.batcher
    spec = info.io_spec()
    device = model.device
    group: dict[str, Any] = {"name": model.name, "kind": "KIND_CPU", "count": int(batcher.instances)}
    if device.startswith("cuda"):
        group["kind"] = "KIND_GPU"
        group["gpus"] = [int(device.partition(":")[2] or 0)]
    return {
        "name": model.name,
        "platform": PLATFORMS.get(model.backend, model.backend),
        "backend": TRITON_BACKENDS.get(model.backend, model.backend),
        "version_policy": (version_policy or DEFAULT_POLICY).to_config(),
        "max_batch_size": int(batcher.max_batch),
        "input": [_config_tensor(e) for e in spec["inputs"]],
        "output": [_config_tensor(e) for e in spec["outputs"]],
        "instance_group": [group],
        "default_model_filename": str(info.files.get(model.backend, "")),
        "dynamic_batching": {
            "max_queue_delay_microseconds": int(round(batcher.max_delay * 1e6)),
            "preserve_ordering": True,
            "default_queue_policy": {"timeout_action": "REJECT", "allow_timeout_override": True,
                                     "max_queue_size": int(batcher.max_queue)},
        },
        "parameters": {METADATA_PARAMETER: {"string_value": json.dumps(info.to_dict(), sort_keys=True)}},
        "model_transaction_policy": {"decoupled": False},
    }


def _duration(count: float, seconds: float) -> dict[str, int]:
    return {"count": int(count), "ns": int(round(seconds * 1e9))}


def model_statistics(model: ServedModel, metrics: Any) -> dict[str, Any]:
    """Triton's ``ModelStatistics`` (JSON form) for one model, from the server's metrics.

    * ``inference_count``: rows (images) computed by model calls, and ``execution_count``: model
      calls, as Triton defines them (a batch of 8 merged requests is 8 inferences, 1 execution);
    * ``inference_stats.success`` / ``fail``: inference requests (:data:`INFERENCE_METHODS`, every
      protocol) answered OK / with an error, and their handling time end to end;
    * ``queue``: requests that reached a model call and their time in the batch queue;
      ``compute_infer``: model calls and their duration (ganport's model call includes input and
      output handling, so ``compute_input``/``compute_output`` are zero);
    * ``batch_stats``: model calls per batch size;
    * ``last_inference``: end of the last model call, ms since the epoch (0: never).

    Counts are cumulative since the server started (an unloaded and reloaded model keeps them)
    and per model name: every version of the model together (metrics are labelled by name only,
    so their number stays bounded however many versions come and go). ``version`` is
    ``model``'s: the version asked for, or the default one.
    """
    success, fail = [0, 0.0], [0, 0.0]
    for (method, code), (count, seconds) in metrics.request_totals(model.name).items():
        if method in INFERENCE_METHODS:
            bucket = success if code == "OK" else fail
            bucket[0] += count
            bucket[1] += seconds
    batches = metrics.batch_totals(model.name)
    queued, queue_seconds = metrics.queue_totals(model.name)
    last = metrics.last_batch_time(model.name)
    zero = _duration(0, 0.0)
    return {
        "name": model.name,
        "version": model.version,
        "last_inference": 0 if last is None else int(last * 1000),
        "inference_count": sum(size * count for size, (count, _) in batches.items()),
        "execution_count": sum(count for count, _ in batches.values()),
        "inference_stats": {
            "success": _duration(*success), "fail": _duration(*fail), "queue": _duration(queued, queue_seconds),
            "compute_input": zero,
            "compute_infer": _duration(sum(c for c, _ in batches.values()), sum(s for _, s in batches.values())),
            "compute_output": zero, "cache_hit": zero, "cache_miss": zero,
        },
        "batch_stats": [{"batch_size": size, "compute_input": zero, "compute_infer": _duration(count, seconds),
                         "compute_output": zero} for size, (count, seconds) in batches.items()],
    }


def models_statistics(models: ModelRegistry, metrics: Any, name: str = "", version: str = "") -> list[dict[str, Any]]:
    """:func:`model_statistics` of ``name`` (at ``version``: NOT_FOUND if not served), or of every
    model (its default version) when ``name`` is empty."""
    if name:
        return [model_statistics(models.get_model(name, version), metrics)]
    return [model_statistics(model, metrics) for model in models.values()]


def repository_index(models: ModelRegistry) -> list[dict[str, str]]:
    """Every served model version as a repository index entry (for a server without a model repository)."""
    return [{"name": m.name, "version": m.version, "state": "READY", "reason": ""} for m in models.served()]
