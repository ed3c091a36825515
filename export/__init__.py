"""Export trained generators to a self-describing, verified model package.

A package directory holds ``model.onnx``, ``model.ts`` (TorchScript), optionally ``model.pt2``
(``torch.export``), ``model.fp16.onnx`` and a Triton model repository, for an AAE also the
encoder, and ``manifest.json``; every artifact carries the same metadata
(:class:`ganport.runtime.manifest.ModelInfo`). Formats are rows of :data:`FORMATS`.

Example:
    >>> from ganport.export import export_package
    >>> export_package("runs/cgan/checkpoints/latest.pt", "models/cgan", ("onnx", "torchscript"))  # doctest: +SKIP
    PosixPath('models/cgan')

This module imports torch only when an export runs.
"""

from __future__ import annotations

from typing import Any

from ganport.errors import ExportError
from ganport.export.formats import DEFAULT_FORMATS, FORMAT_NAMES, FORMATS, ExportFormat

__all__ = ["export_package", "run_export", "ExportReport", "FORMATS", "FORMAT_NAMES",
           "DEFAULT_FORMATS", "ExportFormat", "ExportError"]


def __getattr__(name: str) -> Any:
    # The package module imports the trainer (torch); keep `import ganport.export` light.
    if name in ("export_package", "run_export", "ExportReport"):
        from ganport.export import package
        return getattr(package, name)
    raise AttributeError(f"module 'ganport.export' has no attribute {name!r}")
