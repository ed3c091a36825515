"""ONNX artifacts: ``model.onnx``, ``encoder.onnx`` (AAE) and ``model.fp16.onnx`` (``--fp16``).

The exporter the installed torch prefers is tried first (the dynamo exporter on torch >= 2.9,
which needs onnxscript); if it fails on a graph, the other one (the legacy TorchScript-based
exporter with ``dynamic_axes``) is tried, and the one used is recorded per artifact and in the
metadata. Once one exporter has worked in a package it is tried first for the remaining graphs,
and the first graph's opset is used for all of them, so a package is consistent. Below opset 18
the legacy exporter goes first (it writes the opset asked for; the dynamo exporter writes 18 and
converts down slowly, often not at all).

Everything the exporters print (the legacy exporter dumps the whole TorchScript IR graph when an
operator is unsupported) is captured and logged at DEBUG. When an explicit ``--opset`` fails with
every exporter, the neighbouring opsets are tried (legacy exporter first, a fraction of a second
each) and the error names the lowest one that works for this model.

``model.fp16.onnx`` is the generator converted to half precision inside a wrapper that casts the
float32 inputs to half and the image back to float32, so callers feed and get float32 as with
``model.onnx``. It is meant for GPU serving: onnxruntime's CPU provider lacks fp16 kernels for
some operators and inserts Casts around them (it runs, and is verified here on CPU, but is not
faster there). Measured against eager float32 it differs by ~3e-4; the tolerance is 1e-2.

Files are self-contained (weights inside) unless the weights exceed what one protobuf can hold,
in which case they go to ``<file>.data`` next to it. Each file passes ``onnx.checker``.
"""

from __future__ import annotations

import inspect
import io
import logging
import re
from pathlib import Path
from typing import Any, Callable, Mapping

import onnx
import torch

from ganport.errors import ExportError
from ganport.export.job import Artifact, ExportJob
from ganport.export.quiet import handled_warnings

logger = logging.getLogger(__name__)

DYNAMO = "dynamo"
LEGACY = "legacy"
# Protobuf messages are limited to 2 GiB; keep a margin for the graph itself.
_MAX_INLINE_BYTES = 1_800_000_000


def preferred_exporter() -> str:
    """The exporter ``torch.onnx.export`` uses by default in the installed torch."""
    param = inspect.signature(torch.onnx.export).parameters.get("dynamo")
    return DYNAMO if param is not None and param.default is True else LEGACY


def _export_dynamo(graph: torch.nn.Module, args: tuple, inputs: list[str], outputs: list[str],
                   dynamic_shapes: dict, opset: int | None) -> onnx.ModelProto:
    program = torch.onnx.export(graph, args, None, dynamo=True, verbose=False, input_names=inputs,
                                output_names=outputs, dynamic_shapes=dynamic_shapes,
                                opset_version=opset)
    return program.model_proto


def _export_legacy(graph: torch.nn.Module, args: tuple, inputs: list[str], outputs: list[str],
                   dynamic_shapes: dict, opset: int | None) -> onnx.ModelProto:
    buffer = io.BytesIO()
    axes = {name: {0: "batch"} for name in inputs + outputs}
    torch.onnx.export(graph, args, buffer, dynamo=False, input_names=inputs, output_names=outputs,
                      dynamic_axes=axes, opset_version=opset, do_constant_folding=True)
    return onnx.load_from_string(buffer.getvalue())


_EXPORTERS: dict[str, Callable[..., onnx.ModelProto]] = {DYNAMO: _export_dynamo, LEGACY: _export_legacy}


def model_opset(model: onnx.ModelProto) -> int:
    """The default-domain opset a model was written with."""
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    raise ExportError("exported ONNX graph imports no default-domain opset")


def _check_interface(model: onnx.ModelProto, inputs: list[str], outputs: list[str]) -> None:
    got_in = [v.name for v in model.graph.input]
    got_out = [v.name for v in model.graph.output]
    if got_in != inputs or got_out != outputs:
        raise ExportError(f"graph has inputs {got_in} and outputs {got_out}, expected {inputs} and {outputs}")


def build_onnx(job: ExportJob, role: str, fp16: bool = False) -> tuple[onnx.ModelProto, str]:
    """Export one role's graph to an in-memory ONNX model (cached on the job).

    Args:
        job: the export job.
        role: ``generator`` or ``encoder``.
        fp16: export the half-precision variant (float32 inputs and outputs, fp16 inside).

    Returns:
        ``(model, exporter)`` where exporter is ``"dynamo"`` or ``"legacy"``.

    Raises:
        ExportError: every exporter failed (both reasons are given).
    """
    return job.cached(("onnx", role, fp16), lambda: _build(job, role, fp16))


def _try_export(exporter: str, graph: torch.nn.Module, job: ExportJob, role: str, opset: int | None,
                what: str) -> onnx.ModelProto:
    """One exporter, one opset, all its output captured; the model, or the exporter's exception."""
    inputs, outputs = job.io_names(role)
    with handled_warnings(f"ONNX {exporter} export of {what}"), torch.no_grad():
        model = _EXPORTERS[exporter](graph, job.example(role), inputs, outputs, job.dynamic_shapes(role), opset)
    _check_interface(model, inputs, outputs)
    if opset is not None and model_opset(model) != opset:
        # The dynamo exporter writes opset >= 18 and may not convert down: not what was asked.
        raise ExportError(f"wrote opset {model_opset(model)} instead of the requested {opset}")
    return model


def _reason(exc: BaseException) -> str:
    """An exporter's exception as one short clause (torch appends paragraphs of advice)."""
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return text.split(". ")[0][:300]


#: Below this opset only the legacy exporter is tried while searching for one that works (the
#: dynamo exporter writes >= 18 and converts down slowly, often not at all).
_DYNAMO_MIN_OPSET = 18
_ADDED_IN = re.compile(r"added in (?:opset )?version (\d+)")


def lowest_working_opset(job: ExportJob, role: str, fp16: bool, failed: int) -> tuple[int | None, str]:
    """Search the opsets around ``failed`` for one this graph exports at.

    Tries the opsets above ``failed`` upwards (starting where an exporter said the missing
    operator was added), legacy exporter first (a fraction of a second per try); if none works,
    the opsets below it downwards.

    Returns:
        ``(opset, "lowest")`` or ``(opset, "highest")`` (below ``failed``), or ``(None, "")``.
    """
    graph = job.graph(role, torch.float16 if fp16 else torch.float32)
    what = f"{role}{' (fp16)' if fp16 else ''}"
    top = max(onnx.defs.onnx_opset_version(), failed)
    hinted = [int(m) for m in _ADDED_IN.findall(" ".join(job.onnx_failures))]
    start = max([failed + 1, *[h for h in hinted if h > failed]])

    def works(candidate: int) -> bool:
        order = [LEGACY] if candidate < _DYNAMO_MIN_OPSET else [LEGACY, DYNAMO]
        for exporter in order:
            try:
                _try_export(exporter, graph, job, role, candidate, what)
            except Exception as exc:  # exporters raise anything; this candidate does not work
                logger.debug("opset %d with the %s exporter: %s", candidate, exporter, _reason(exc))
                continue
            return True
        return False

    for candidate in [*range(start, top + 1), *range(failed + 1, start)]:
        if works(candidate):
            return candidate, "lowest"
    for candidate in range(failed - 1, 6, -1):
        if works(candidate):
            return candidate, "highest"
    return None, ""


def _build(job: ExportJob, role: str, fp16: bool) -> tuple[onnx.ModelProto, str]:
    graph = job.graph(role, torch.float16 if fp16 else torch.float32)
    opset = job.opset or job.options.get("opset")
    # Below opset 18 the legacy exporter writes the opset asked for directly; the dynamo exporter
    # writes 18 and converts down (slowly, and often not at all), so it comes second there.
    default = LEGACY if opset is not None and opset < _DYNAMO_MIN_OPSET else preferred_exporter()
    first = job.onnx_exporter or default
    order = [first] + [e for e in (DYNAMO, LEGACY) if e != first]
    what = f"{role}{' (fp16)' if fp16 else ''}"
    failures = []
    job.onnx_failures = []
    for exporter in order:
        try:
            model = _try_export(exporter, graph, job, role, opset, what)
        except Exception as exc:  # exporters raise anything from ImportError to internal errors
            reason = _reason(exc)
            failures.append(f"{exporter}: {reason}")
            job.onnx_failures.append(str(exc))
            # Not a warning yet: if the other exporter works this is a note; if none does, the
            # error says it all in one line.
            logger.info("the %s ONNX exporter failed on the %s: %s", exporter, what, reason)
            continue
        if failures:
            # A fallback because the first exporter could not write the requested opset is routine.
            routine = all("instead of the requested" in f for f in failures)
            logger.log(logging.INFO if routine else logging.WARNING, "exported the %s with the %s ONNX exporter (%s)",
                       what, exporter, "; ".join(failures))
        job.onnx_exporter = job.onnx_exporter or exporter
        job.opset = job.opset or model_opset(model)
        logger.info("exported the %s to ONNX with the %s exporter, opset %d", what, exporter,
                    model_opset(model))
        return model, exporter
    if opset is not None:
        found, which = lowest_working_opset(job, role, fp16, opset)
        if found is not None:
            raise ExportError(f"cannot export the {what} to ONNX opset {opset} ({'; '.join(failures)}); the "
                              f"{which} opset that works for this model is {found}",
                              hint=f"pass --opset {found}, or leave --opset out for the exporter's default")
        raise ExportError(f"cannot export the {what} to ONNX at opset {opset} or any other opset "
                          f"({'; '.join(failures)})", hint="export only --format torchscript or pt2")
    raise ExportError(f"ONNX export of the {what} failed with every exporter ({'; '.join(failures)})",
                      hint="try another --opset, or export only --format torchscript")


def stamp_metadata(model: onnx.ModelProto, metadata: Mapping[str, str]) -> onnx.ModelProto:
    """Return a copy of ``model`` whose ``metadata_props`` carry ``metadata`` (one key per field)."""
    stamped = onnx.ModelProto()
    stamped.CopyFrom(model)
    keep = [(p.key, p.value) for p in stamped.metadata_props if p.key not in metadata]
    del stamped.metadata_props[:]
    for key, value in keep + sorted(metadata.items()):
        stamped.metadata_props.add(key=key, value=value)
    stamped.doc_string = "ganport generator package artifact; metadata in metadata_props"
    return stamped


def save_onnx(model: onnx.ModelProto, path: Path, metadata: Mapping[str, str]) -> None:
    """Stamp the metadata, check the model and write it (self-contained unless too large)."""
    stamped = stamp_metadata(model, metadata)
    weights = sum(len(t.raw_data) for t in stamped.graph.initializer)
    try:
        if weights < _MAX_INLINE_BYTES:
            onnx.checker.check_model(stamped, full_check=True)
            onnx.save_model(stamped, str(path))
        else:
            logger.warning("%s: %.1f GB of weights exceed one protobuf; writing them to %s.data",
                           path.name, weights / 1e9, path.name)
            onnx.save_model(stamped, str(path), save_as_external_data=True,
                            all_tensors_to_one_file=True, location=f"{path.name}.data")
            onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"{path.name} fails onnx.checker: {str(exc).splitlines()[0]}") from exc


def load_onnx(path: Path) -> tuple[Callable[[list], Any], dict[str, str]]:
    """Open an ONNX file in onnxruntime (CPU); return its runner and its metadata."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # fp16 graphs on CPU log Cast-insertion warnings otherwise
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]

    def run(inputs: list) -> Any:
        return session.run(None, dict(zip(names, inputs)))[0]

    return run, dict(session.get_modelmeta().custom_metadata_map)


def onnx_artifact(job: ExportJob, role: str, relpath: str, key: str, fp16: bool = False,
                  listed: bool = True, fmt: str = "onnx") -> Artifact:
    """Build a role's ONNX graph and describe the file that will hold it."""
    model, exporter = build_onnx(job, role, fp16)
    return Artifact(key=key, relpath=relpath, format=fmt, role=role, fp16=fp16, listed=listed,
                    exporter=exporter, load=load_onnx,
                    save=lambda path, metadata: save_onnx(model, path, metadata))


def write_onnx(job: ExportJob) -> list[Artifact]:
    """The ``onnx`` format: ``model.onnx``, ``encoder.onnx`` (AAE), ``model.fp16.onnx`` (fp16).

    Args:
        job: the export job.

    Returns:
        The artifacts to save and verify.
    """
    artifacts = [onnx_artifact(job, role, job.file_name(role, ".onnx"), job.files_key(role, "onnx"))
                 for role in job.roles]
    if job.options.get("fp16"):
        artifacts.append(onnx_artifact(job, "generator", job.file_name("generator", ".onnx", ".fp16"),
                                       job.files_key("generator", "onnx", "fp16"), fp16=True))
    return artifacts
