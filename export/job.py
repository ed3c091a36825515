"""State shared by the format writers during one export: the networks, the options, the staging
directory, and what has been built so far.

A writer builds its graphs (ONNX protos, traced modules, exported programs) and returns
:class:`Artifact` objects whose ``save`` writes the file with the package metadata. Saving comes
after every writer has run, because the metadata (which ONNX exporter and opset were used, which
files the package holds) is only complete then, and it must be identical in every artifact.
Built graphs are cached on the job so the Triton writer reuses the ONNX and TorchScript graphs
instead of exporting twice.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from ganport.export import modules
from ganport.runtime.manifest import PRECISION_KEY, ModelInfo

logger = logging.getLogger(__name__)

#: Reads an artifact back: path -> (run(list of numpy inputs) -> numpy output, metadata dict).
Loader = Callable[[Path], tuple[Callable[[list], Any], dict[str, str]]]

#: Batch size of the example inputs used for tracing/exporting (>= 2 keeps the batch axis symbolic).
EXAMPLE_BATCH = 2


@dataclass
class Artifact:
    """One file of the package.

    Args:
        key: its ``ModelInfo.files`` key (``onnx``, ``encoder_torchscript``, ``onnx_fp16``...).
        relpath: path relative to the package directory.
        format: name of the format (row of ``FORMATS``) that produced it.
        role: ``generator`` or ``encoder``.
        save: writes the file: ``save(path, metadata)`` with ``metadata = info.to_metadata()``.
        load: reads it back for verification, or None for files that are not models (config.pbtxt).
        fp16: half-precision graph (verified with the looser tolerance).
        precision: ``fp32``, ``fp16`` or ``int8``; a non-fp32 artifact carries it in its metadata
            (``manifest.PRECISION_KEY``), which the runtime checks on load.
        listed: recorded in ``ModelInfo.files`` (Triton copies are not).
        exporter: ONNX exporter that built it (``dynamo``/``legacy``), else None.
        diffs: batch size -> max abs difference against eager, filled by verification.
    """

    key: str
    relpath: str
    format: str
    role: str
    save: Callable[[Path, Mapping[str, str]], None]
    load: Loader | None = None
    fp16: bool = False
    listed: bool = True
    exporter: str | None = None
    diffs: dict[int, float] = field(default_factory=dict)
    precision: str = "fp32"

    def __post_init__(self) -> None:
        if self.fp16:
            self.precision = "fp16"

    def metadata(self, shared: Mapping[str, str]) -> dict[str, str]:
        """What this file embeds: the package's shared metadata, plus its precision unless fp32."""
        found = dict(shared)
        if self.precision != "fp32":
            found[PRECISION_KEY] = json.dumps(self.precision)
        return found

    @property
    def max_diff(self) -> float | None:
        """Largest difference over the verified batch sizes (None before verification)."""
        return max(self.diffs.values()) if self.diffs else None


@dataclass
class ExportJob:
    """One export in progress.

    Args:
        info: the package metadata (``files``, ``exporter`` and ``opset`` are completed at the end).
        networks: role -> float32 network in eval mode (``generator``, and ``encoder`` for AAE).
        staging: the temporary package directory being written.
        options: export options (see ``formats.OPTION_DEFAULTS``), defaults filled in.
    """

    info: ModelInfo
    networks: dict[str, nn.Module]
    staging: Path
    options: dict[str, Any]
    opset: int | None = None
    onnx_exporter: str | None = None
    #: The exporters' messages from the last failed ONNX attempt (to find an opset that works).
    onnx_failures: list[str] = field(default_factory=list)
    _cache: dict[Any, Any] = field(default_factory=dict)

    @property
    def roles(self) -> tuple[str, ...]:
        """Roles exported: the generator, plus the encoder for AAE."""
        return tuple(r for r in ("generator", "encoder") if r in self.networks)

    def graph(self, role: str, dtype: torch.dtype = torch.float32) -> nn.Module:
        """The fixed-signature wrapper of a role's network (cached)."""
        return self.cached(("graph", role, dtype), lambda: modules.wrap(
            self.networks[role], role, self.info.conditional, dtype))

    def io_names(self, role: str) -> tuple[list[str], list[str]]:
        """Input and output names of a role's graph."""
        return modules.io_names(role, self.info.conditional)

    def example(self, role: str, batch: int = EXAMPLE_BATCH, seed: int = 0) -> tuple[torch.Tensor, ...]:
        """Deterministic example inputs of a role's graph."""
        n_classes = self.info.n_classes if self.info.conditional else 0
        return modules.example_inputs(role, self.info.latent_dim, n_classes, self.info.image_shape,
                                      batch, seed)

    def dynamic_shapes(self, role: str) -> dict[str, dict[int, object]]:
        """Batch-dynamic shapes spec for ``torch.export``-based exporters."""
        return modules.dynamic_shapes(role, self.info.conditional)

    def file_name(self, role: str, suffix: str, variant: str = "") -> str:
        """Package file name: ``model.onnx``, ``model.fp16.onnx``, ``encoder.ts``..."""
        stem = "model" if role == "generator" else role
        return f"{stem}{variant}{suffix}"

    def files_key(self, role: str, fmt: str, variant: str = "") -> str:
        """``ModelInfo.files`` key: ``onnx``, ``onnx_fp16``, ``encoder_onnx``..."""
        key = fmt if role == "generator" else f"{role}_{fmt}"
        return f"{key}_{variant}" if variant else key

    def cached(self, key: Any, build: Callable[[], Any]) -> Any:
        """Build once per job: ``build()`` the first time ``key`` is asked for."""
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]
