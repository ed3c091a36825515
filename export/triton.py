"""The ``triton`` format: a Triton Inference Server model repository inside the package.

Layout (``NAME`` is the package's model name)::

    triton/NAME/config.pbtxt              platform "onnxruntime_onnx"
    triton/NAME/1/model.onnx              the same graph and metadata as model.onnx
    triton/NAME_libtorch/config.pbtxt     platform "pytorch_libtorch"
    triton/NAME_libtorch/1/model.pt       the same traced module as model.ts

Both configs batch on axis 0 (``max_batch_size``, ``dynamic_batching``), list dims without the
batch axis, and declare the ``[N]`` label as ``dims: [1]`` with ``reshape: { shape: [] }`` (Triton
needs non-empty dims), so clients send the label as ``[N, 1]`` — the shape ``ganport serve``
advertises too (the label contract, see :mod:`ganport.runtime.server.inference`). The libtorch backend binds inputs by the names of ``forward``'s arguments
(``z``, ``label``) and outputs by the ``<name>__<index>`` convention, so its output is
``image__0``; the ONNX model's output is ``image``. The package metadata is repeated as the
config parameter ``ganport.metadata`` so a tritonclient user can read class names from the
model config. Only the generator goes to Triton (an AAE's encoder stays in the package).
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Mapping

from google.protobuf import text_encoding

from ganport.errors import ExportError
from ganport.export.job import Artifact, ExportJob
from ganport.export.onnx_export import onnx_artifact
from ganport.runtime.backends import BACKENDS
from ganport.export.torchscript_export import torchscript_artifact
from ganport.runtime.manifest import triton_dims

logger = logging.getLogger(__name__)

REPOSITORY_DIR = "triton"
LIBTORCH_SUFFIX = "_libtorch"
DEFAULT_MAX_BATCH = 64
DEFAULT_DEVICE = "cpu"
#: How long Triton's dynamic batcher may hold a request to merge it with others.
MAX_QUEUE_DELAY_US = 1000
_INSTANCE_KINDS = {"cpu": "KIND_CPU", "gpu": "KIND_GPU", "cuda": "KIND_GPU"}
_TYPES = {"float32": "TYPE_FP32", "int64": "TYPE_INT64"}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _quote(text: str) -> str:
    return '"' + text_encoding.CEscape(text, as_utf8=True) + '"'


def _tensor(name: str, dtype: str, shape: list[int]) -> str:
    """One input/output entry; ``shape`` includes the batch axis, which Triton leaves implicit.

    Dims come from :func:`ganport.runtime.manifest.triton_dims`, the same function the server's
    ModelConfig and ModelMetadata use, so the exported config and ``ganport serve``
    demand the same client shapes (a ``[N]`` tensor is ``dims: [1]`` + ``reshape: { shape: [] }``:
    clients send ``[N, 1]``, the model gets ``[N]``).
    """
    dims, reshape = triton_dims(shape)
    def listed(values: list[int]) -> str:
        return f"[ {', '.join(map(str, values))} ]" if values else "[ ]"

    entry = f"  {{ name: {_quote(name)} data_type: {_TYPES[dtype]} dims: {listed(dims)}"
    if reshape is not None:
        entry += f" reshape: {{ shape: {listed(reshape)} }}"
    return entry + " }"


def _manifest_json(metadata: Mapping[str, str]) -> str:
    """The metadata as one JSON object with plain values (as in manifest.json), for humans and clients."""
    return json.dumps({key: json.loads(value) for key, value in metadata.items()}, sort_keys=True)


def render_config(name: str, platform: str, io_spec: Mapping, output_names: list[str],
                  max_batch: int, device: str, metadata: Mapping[str, str]) -> str:
    """The text of one ``config.pbtxt`` (Triton's ``ModelConfig`` in protobuf text format).

    Args:
        name: Triton model name (its directory name).
        platform: ``onnxruntime_onnx`` or ``pytorch_libtorch``.
        io_spec: ``ModelInfo.io_spec()``.
        output_names: names the backend knows the outputs by (libtorch: ``image__0``).
        max_batch: ``max_batch_size``.
        device: ``cpu`` or ``gpu``.
        metadata: ``info.to_metadata()``; stored decoded, as manifest.json has it, in the parameter
            ``ganport.metadata``.

    Returns:
        The config text.
    """
    inputs = [_tensor(t["name"], t["dtype"], t["shape"]) for t in io_spec["inputs"]]
    outputs = [_tensor(out_name, t["dtype"], t["shape"])
               for out_name, t in zip(output_names, io_spec["outputs"])]
    lines = [
        "# Written by ganport export; batch axis implicit (max_batch_size > 0).",
        f"name: {_quote(name)}",
        f"platform: {_quote(platform)}",
        f"max_batch_size: {int(max_batch)}",
        "input [", ",\n".join(inputs), "]",
        "output [", ",\n".join(outputs), "]",
        f"dynamic_batching {{ max_queue_delay_microseconds: {MAX_QUEUE_DELAY_US} }}",
        f"instance_group [ {{ count: 1 kind: {_INSTANCE_KINDS[device]} }} ]",
        "parameters {",
        f"  key: \"ganport.metadata\" value: {{ string_value: {_quote(_manifest_json(metadata))} }}",
        "}",
    ]
    return "\n".join(lines) + "\n"


def _config_artifact(relpath: str, render) -> Artifact:
    def save(path: Path, metadata: Mapping[str, str]) -> None:
        path.write_text(render(metadata))
    return Artifact(key=relpath, relpath=relpath, format="triton", role="generator", save=save,
                    listed=False)


def write_triton(job: ExportJob) -> list[Artifact]:
    """The ``triton`` format: an ONNX Runtime model and a libtorch model of the generator.

    Options: ``max_batch`` (default 64), ``triton_device`` (``cpu`` or ``gpu``), ``opset``.

    Returns:
        The model files (verified like the package's own) and the two configs.
    """
    name = job.info.name
    if not _NAME_RE.match(name):
        raise ExportError(f"model name {name!r} is not a valid Triton model name",
                          hint="use letters, digits, '_', '-', '.' (--name)")
    device = (job.options.get("triton_device") or DEFAULT_DEVICE).lower()
    if device not in _INSTANCE_KINDS:
        raise ExportError(f"unknown Triton device {device!r}", hint="use cpu or gpu")
    max_batch = job.options.get("max_batch") or DEFAULT_MAX_BATCH
    if int(max_batch) < 1:
        raise ExportError(f"--max-batch must be at least 1, got {max_batch}")
    spec = job.info.io_spec()
    onnx_dir = f"{REPOSITORY_DIR}/{name}"
    torch_dir = f"{REPOSITORY_DIR}/{name}{LIBTORCH_SUFFIX}"
    onnx_outputs = [t["name"] for t in spec["outputs"]]
    torch_outputs = [f"{t['name']}__{i}" for i, t in enumerate(spec["outputs"])]
    return [
        onnx_artifact(job, "generator", f"{onnx_dir}/1/model.onnx", f"triton:{name}",
                      listed=False, fmt="triton"),
        _config_artifact(f"{onnx_dir}/config.pbtxt", lambda metadata: render_config(
            name, BACKENDS["onnx"].triton_platform, spec, onnx_outputs, max_batch, device, metadata)),
        torchscript_artifact(job, "generator", f"{torch_dir}/1/model.pt", f"triton:{name}{LIBTORCH_SUFFIX}",
                             listed=False, fmt="triton"),
        _config_artifact(f"{torch_dir}/config.pbtxt", lambda metadata: render_config(
            f"{name}{LIBTORCH_SUFFIX}", BACKENDS["torchscript"].triton_platform, spec, torch_outputs, max_batch, device,
            metadata)),
    ]
