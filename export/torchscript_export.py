"""TorchScript artifacts: ``model.ts`` and ``encoder.ts`` (AAE), traced with ``torch.jit.trace``.

TorchScript is deprecated upstream in favour of ``torch.export`` but stays: C++ libtorch and
Triton's libtorch backend load it. The package metadata is stored twice in the extra files,
so a reader can pick either way:

- one extra file per ``ModelInfo.to_metadata()`` key (``kind``, ``latent_dim``, ...; JSON values),
  the same keys and values as ONNX ``metadata_props``;
- ``ganport.json``: the whole ``to_metadata()`` dict as one JSON object, for readers that do not
  know the key names in advance (``torch.jit.load`` only returns extra files it is asked for)::

    extra = {"ganport.json": ""}
    torch.jit.load(path, _extra_files=extra)
    info = ModelInfo.from_metadata(json.loads(extra["ganport.json"]))
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from ganport.errors import ExportError
from ganport.export.job import Artifact, ExportJob
from ganport.export.quiet import handled_warnings
from ganport.runtime.manifest import METADATA_FILE, ModelInfo

logger = logging.getLogger(__name__)



def encode_metadata(metadata: Mapping[str, str]) -> str:
    """The content of :data:`METADATA_FILE`: the ``to_metadata()`` dict as one JSON object."""
    return json.dumps(dict(metadata), sort_keys=True)


def decode_metadata(text: str | bytes) -> dict[str, str]:
    """Inverse of :func:`encode_metadata` (empty dict when the file was absent)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    return dict(json.loads(text)) if text else {}


def metadata_keys() -> tuple[str, ...]:
    """Every key ``ModelInfo.to_metadata()`` can produce (a conditional AAE-like info has them all)."""
    probe = ModelInfo(name="probe", kind="aae", latent_dim=1, n_classes=0, class_names=[],
                      image_shape=[1, 1, 1])
    return tuple(probe.to_metadata())


def extra_files(metadata: Mapping[str, str]) -> dict[str, str]:
    """The extra files to save: one per metadata key plus :data:`METADATA_FILE`."""
    return {**metadata, METADATA_FILE: encode_metadata(metadata)}


def request_extra_files() -> dict[str, str]:
    """An ``_extra_files``/``extra_files`` dict asking a loader for every metadata file."""
    return {key: "" for key in (*metadata_keys(), METADATA_FILE)}


def read_extra_files(extra: Mapping[str, str | bytes], source: str) -> dict[str, str]:
    """Decode loaded extra files; the per-key files must agree with ``ganport.json``.

    Raises:
        ExportError: they disagree.
    """
    def text(value: str | bytes) -> str:
        return value.decode("utf-8") if isinstance(value, bytes) else str(value)

    whole = decode_metadata(extra.get(METADATA_FILE, ""))
    per_key = {key: text(value) for key, value in extra.items() if key != METADATA_FILE and value}
    if per_key != whole:
        raise ExportError(f"{source}: per-key metadata extra files disagree with {METADATA_FILE}")
    return whole


def build_torchscript(job: ExportJob, role: str) -> torch.jit.ScriptModule:
    """Trace a role's graph (cached on the job so Triton's ``model.pt`` is the same module)."""
    def trace() -> torch.jit.ScriptModule:
        with handled_warnings(f"tracing the {role}"), torch.no_grad():
            return torch.jit.trace(job.graph(role), job.example(role))
    return job.cached(("torchscript", role), trace)


def save_torchscript(module: torch.jit.ScriptModule, path: Path, metadata: Mapping[str, str]) -> None:
    """Write a traced module with the metadata as the ``ganport.json`` extra file."""
    with handled_warnings(f"saving {path.name}"):
        torch.jit.save(module, str(path), _extra_files=extra_files(metadata))


def load_torchscript(path: Path) -> tuple[Callable[[list], Any], dict[str, str]]:
    """Load a TorchScript file; return its runner (numpy in, numpy out) and its metadata."""
    extra = request_extra_files()
    with handled_warnings(f"loading {path.name}"):
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)

    def run(inputs: list) -> Any:
        with torch.no_grad():
            return module(*(torch.from_numpy(x) for x in inputs)).numpy()

    return run, read_extra_files(extra, path.name)


def torchscript_artifact(job: ExportJob, role: str, relpath: str, key: str, listed: bool = True,
                         fmt: str = "torchscript") -> Artifact:
    """Trace a role's graph and describe the file that will hold it."""
    module = build_torchscript(job, role)
    return Artifact(key=key, relpath=relpath, format=fmt, role=role, listed=listed,
                    load=load_torchscript,
                    save=lambda path, metadata: save_torchscript(module, path, metadata))


def write_torchscript(job: ExportJob) -> list[Artifact]:
    """The ``torchscript`` format: ``model.ts`` and, for AAE, ``encoder.ts``."""
    return [torchscript_artifact(job, role, job.file_name(role, ".ts"), job.files_key(role, "torchscript"))
            for role in job.roles]
