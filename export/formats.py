"""The one table of export formats: name, file suffix, writer function and accepted options.

The CLI (choices and help), the dispatch in :mod:`ganport.export.package` and the tests all read
:data:`FORMATS`; adding a format means adding a row here and a writer module. Writers are named
as ``"module:function"`` strings and imported on first use, so this module (and ``ganport
--help``) needs no torch.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

from ganport.errors import ExportError

logger = logging.getLogger(__name__)

#: Export options and the value that means "not given". An option whose value differs from its
#: default must be accepted by at least one selected format (otherwise it would be silently ignored).
OPTION_DEFAULTS: dict[str, Any] = {
    "opset": None,
    "fp16": False,
    "triton_device": None,
    "max_batch": None,
}

#: How each option is spelled on the command line, for error messages.
OPTION_FLAGS: dict[str, str] = {
    "opset": "--opset",
    "fp16": "--fp16",
    "triton_device": "--triton-device",
    "max_batch": "--max-batch",
}


@dataclass(frozen=True)
class ExportFormat:
    """One export format.

    Args:
        name: format name used on the command line and in ``ModelInfo.files``.
        suffix: artifact file suffix (``.onnx``); empty for formats that write a directory.
        function: ``"module:function"`` of the writer; it takes an
            :class:`~ganport.export.job.ExportJob` and returns the artifacts it built.
        options: names of the export options (keys of :data:`OPTION_DEFAULTS`) it accepts.
        default: exported when the caller names no formats.
        description: one line for ``--help``.

    Example:
        >>> get_format("onnx").suffix
        '.onnx'
    """

    name: str
    suffix: str
    function: str
    options: frozenset[str]
    default: bool
    description: str

    def resolve(self) -> Callable[..., list]:
        """Import and return the writer function (imports torch)."""
        module_name, _, attr = self.function.partition(":")
        return getattr(importlib.import_module(module_name), attr)


FORMATS: tuple[ExportFormat, ...] = (
    ExportFormat("onnx", ".onnx", "ganport.export.onnx_export:write_onnx",
                 frozenset({"opset", "fp16"}), True,
                 "ONNX graph (model.onnx; model.fp16.onnx with --fp16), for onnxruntime"),
    ExportFormat("torchscript", ".ts", "ganport.export.torchscript_export:write_torchscript",
                 frozenset(), True,
                 "TorchScript (model.ts), for torch.jit.load and C++ libtorch"),
    ExportFormat("pt2", ".pt2", "ganport.export.pt2_export:write_pt2",
                 frozenset(), False,
                 "torch.export program (model.pt2), for torch.export.load"),
    ExportFormat("onnx-int8", ".int8.onnx", "ganport.export.int8_export:write_onnx_int8",
                 frozenset({"opset"}), False,
                 "ONNX generator quantized to int8 with onnxruntime (model.int8.onnx; static QDQ, "
                 "per-channel weights, calibrated on runtime latents; dynamic for MLP graphs), for "
                 "edge CPUs: `--backend onnx-int8`"),
    ExportFormat("triton", "", "ganport.export.triton:write_triton",
                 frozenset({"opset", "triton_device", "max_batch"}), False,
                 "Triton model repository (triton/NAME with ONNX, triton/NAME_libtorch with TorchScript)"),
)

FORMAT_NAMES: tuple[str, ...] = tuple(f.name for f in FORMATS)
DEFAULT_FORMATS: tuple[str, ...] = tuple(f.name for f in FORMATS if f.default)


def get_format(name: str) -> ExportFormat:
    """Look up a format by name.

    Raises:
        ExportError: the name is not in :data:`FORMATS`.
    """
    for fmt in FORMATS:
        if fmt.name == name:
            return fmt
    raise ExportError(f"unknown export format {name!r}", hint=f"choose from {', '.join(FORMAT_NAMES)}")


def select_formats(names: Iterable[str] | str | None) -> tuple[ExportFormat, ...]:
    """Validate format names and return them in table order (the order they are written in).

    Table order matters: the ONNX writer settles the exporter and opset recorded in the metadata.

    Args:
        names: format names, a single name, or None for :data:`DEFAULT_FORMATS`.

    Returns:
        The selected formats, deduplicated, in :data:`FORMATS` order.
    """
    if names is None:
        names = DEFAULT_FORMATS
    elif isinstance(names, str):
        names = (names,)
    wanted = {get_format(str(n)).name for n in names}
    if not wanted:
        raise ExportError("no export format selected", hint=f"choose from {', '.join(FORMAT_NAMES)}")
    return tuple(f for f in FORMATS if f.name in wanted)


def check_options(formats: Iterable[ExportFormat], options: Mapping[str, Any]) -> None:
    """Refuse an option that none of the selected formats accepts.

    Args:
        formats: the selected formats.
        options: option name -> value; values equal to :data:`OPTION_DEFAULTS` count as not given.

    Raises:
        ExportError: naming the option and the formats that accept it.
    """
    formats = tuple(formats)
    for option, value in options.items():
        if option not in OPTION_DEFAULTS:
            raise ExportError(f"unknown export option {option!r}")
        if value == OPTION_DEFAULTS[option]:
            continue
        if not any(option in f.options for f in formats):
            takers = [f.name for f in FORMATS if option in f.options]
            flag = OPTION_FLAGS[option]
            raise ExportError(
                f"option {flag} does not apply to the selected format(s) {', '.join(f.name for f in formats)}",
                hint=f"{flag} is accepted by: {', '.join(takers)}; add one with --format")
