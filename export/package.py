"""``export_package``: checkpoint in, verified self-describing model package directory out.

Steps: validate formats and options (before any work), load the checkpoint, rebuild the networks
in eval mode, let each selected format's writer build its graphs, complete the metadata, save
every artifact with it, write ``manifest.json``, verify every artifact, and only then move the
package into place. Everything is written into a temporary directory next to the destination and
renamed at the end, so a failed or interrupted export leaves no package that looks complete; what
a killed export leaves (``.NAME.<host>-<pid>.XXXXXXXX.partial``) is removed by the next export into
the same folder (:func:`ganport.atomic.clean_debris`).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping

from ganport import __version__
from ganport.atomic import clean_debris, temp_prefix
from ganport.errors import ExportError
from ganport.export.formats import OPTION_DEFAULTS, ExportFormat, check_options, select_formats
from ganport.export.job import Artifact, ExportJob
from ganport.runtime.manifest import MANIFEST_NAME, ModelInfo, write_manifest

logger = logging.getLogger(__name__)


@dataclass
class ExportReport:
    """What an export produced.

    Args:
        path: the package directory.
        info: its metadata (as in manifest.json).
        artifacts: every file written, with verification diffs (empty when not verified).
        verified: whether artifacts were verified.
    """

    path: Path
    info: ModelInfo
    artifacts: list[Artifact] = field(default_factory=list)
    verified: bool = True


def export_package(checkpoint: str | os.PathLike, out_dir: str | os.PathLike,
                   formats: Iterable[str] | str | None = ("onnx", "torchscript"), *,
                   name: str | None = None, opset: int | None = None, fp16: bool = False,
                   verify: bool = True, triton_device: str | None = None,
                   max_batch: int | None = None, overwrite: bool = False) -> Path:
    """Export a checkpoint's generator (and AAE encoder) to a model package directory.

    Args:
        checkpoint: a ``.pt`` checkpoint written by ``ganport train``.
        out_dir: the package directory to create.
        formats: names from ``FORMATS`` (None: the defaults, onnx and torchscript).
        name: model name recorded in the metadata (default: the directory name).
        opset: ONNX opset (formats onnx, triton); default: the exporter's.
        fp16: also write ``model.fp16.onnx`` (format onnx).
        verify: load each artifact back and compare with eager at batch 1, 7, 64.
        triton_device: ``cpu`` (default) or ``gpu`` instance group (format triton).
        max_batch: Triton ``max_batch_size`` (default 64; format triton).
        overwrite: replace an existing ``out_dir`` (atomically) instead of refusing.

    Returns:
        The package directory.

    Raises:
        CheckpointError: the checkpoint is missing, truncated or not a ganport checkpoint.
        ExportError: unknown format, an option no selected format accepts, unwritable
            destination, an exporter failure, or an artifact that does not match eager.

    Example:
        >>> path = export_package("runs/cgan/checkpoints/latest.pt", "models/cgan")  # doctest: +SKIP
        >>> sorted(p.name for p in path.iterdir())  # doctest: +SKIP
        ['manifest.json', 'model.onnx', 'model.ts']
    """
    return run_export(checkpoint, out_dir, formats, name=name, opset=opset, fp16=fp16, verify=verify,
                      triton_device=triton_device, max_batch=max_batch, overwrite=overwrite).path


def default_model_name(out_dir: Path) -> str:
    """The model name a package exported to ``out_dir`` gets when none is given: the folder's name,
    or its parent's for a version folder (``repo/digits/2`` is version 2 of ``digits``, the layout
    ``ganport serve`` reads)."""
    from ganport.runtime.server.versions import is_version  # stdlib-only module: no server deps

    return out_dir.parent.name if is_version(out_dir.name) and out_dir.parent.name else out_dir.name


def run_export(checkpoint: str | os.PathLike, out_dir: str | os.PathLike,
               formats: Iterable[str] | str | None = None, *, name: str | None = None,
               opset: int | None = None, fp16: bool = False, verify: bool = True,
               triton_device: str | None = None, max_batch: int | None = None,
               overwrite: bool = False, provenance: Mapping[str, Any] | None = None) -> ExportReport:
    """:func:`export_package`, returning the full :class:`ExportReport` (used by the CLI).

    ``provenance`` (JSON-able) is recorded as ``ModelInfo.provenance``: where a package shipped as
    it is comes from (``scripts/build_builtin.py`` passes the training command and eval figures).
    """
    from ganport.trainer.checkpoint import build_from_checkpoint, file_sha256, load_checkpoint

    selected = select_formats(formats)
    options = {"opset": opset, "fp16": bool(fp16), "triton_device": triton_device, "max_batch": max_batch}
    check_options(selected, options)
    if opset is not None and (not isinstance(opset, int) or opset < 7):
        raise ExportError(f"--opset must be an integer >= 7, got {opset!r}")
    out_dir = Path(out_dir).expanduser().absolute()
    # Staging folders of exports killed earlier (kill -9, power cut) are removed first, and a
    # package moved aside by an interrupted replacement is put back (ganport.atomic says what
    # counts as stale); then the destination is checked.
    clean_debris(out_dir.parent, kinds=("partial", "old"))
    _check_destination(out_dir, overwrite)

    ckpt = load_checkpoint(checkpoint)
    info = _model_info(ckpt, name or default_model_name(out_dir), file_sha256(checkpoint))
    info.provenance = dict(provenance or {})
    networks = {role: build_from_checkpoint(ckpt, role) for role in ("generator", "encoder")
                if role in ckpt["networks"] and (role == "generator" or info.has_encoder)}
    if ckpt.get("ema_generator"):
        logger.info("exporting the EMA generator weights")

    staging = _make_staging(out_dir)
    try:
        job = ExportJob(info=info, networks=networks, staging=staging,
                        options={k: v for k, v in options.items() if v != OPTION_DEFAULTS[k]})
        artifacts = _build(job, selected)
        _complete_info(job, artifacts, selected)
        metadata = info.to_metadata()
        for artifact in artifacts:
            path = staging / artifact.relpath
            path.parent.mkdir(parents=True, exist_ok=True)
            artifact.save(path, artifact.metadata(metadata))
        write_manifest(staging, info)
        if verify:
            from ganport.export.verify import verify_artifact
            for artifact in artifacts:
                verify_artifact(job, artifact, staging / artifact.relpath, artifact.metadata(metadata))
        _commit(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("wrote model package %s", out_dir)
    return ExportReport(path=out_dir, info=info, artifacts=artifacts, verified=verify)


def _build(job: ExportJob, selected: tuple[ExportFormat, ...]) -> list[Artifact]:
    artifacts: list[Artifact] = []
    for fmt in selected:
        logger.info("building format %s", fmt.name)
        artifacts.extend(fmt.resolve()(job))
    return artifacts


def _model_info(ckpt: dict[str, Any], name: str, sha256: str) -> ModelInfo:
    """Package metadata from the checkpoint (dimensions from the generator's own arguments)."""
    data = ckpt.get("data") or {}
    kind = str(ckpt["kind"])
    gen_args = ckpt["networks"]["generator"]["init_args"]
    image_shape = [int(v) for v in gen_args.get("img_shape") or data.get("image_shape")]
    if data.get("image_shape") and [int(v) for v in data["image_shape"]] != image_shape:
        logger.warning("checkpoint data says image shape %s, the generator makes %s; using the latter",
                       data["image_shape"], image_shape)
    info = ModelInfo(name=name, kind=kind, latent_dim=int(gen_args["latent_dim"]), n_classes=0,
                     class_names=[], image_shape=image_shape,
                     value_range=[float(v) for v in data.get("value_range", [-1.0, 1.0])],
                     dataset=str(data.get("dataset") or data.get("name") or ""),
                     source_checkpoint_sha256=sha256, ganport_version=__version__,
                     created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    if info.conditional:
        n_classes = int(gen_args["n_classes"])
        names = [str(c) for c in data.get("class_names", [])]
        if len(names) != n_classes:
            if names:
                logger.warning("checkpoint lists %d class names for %d classes; using indices",
                               len(names), n_classes)
            names = [str(i) for i in range(n_classes)]
        info.n_classes, info.class_names = n_classes, names
    return info


def _complete_info(job: ExportJob, artifacts: list[Artifact], selected: tuple[ExportFormat, ...]) -> None:
    """Fill in the fields known only after building: files, ONNX exporter and opset."""
    info = job.info
    files = {a.key: a.relpath for a in artifacts if a.listed}
    if any(f.name == "triton" for f in selected):
        from ganport.export.triton import REPOSITORY_DIR
        files["triton"] = REPOSITORY_DIR
    # Sorted, as manifest.json stores it, so the JSON-encoded metadata is byte-identical everywhere.
    info.files = dict(sorted(files.items()))
    exporters = sorted({a.exporter for a in artifacts if a.exporter})
    info.exporter = "+".join(exporters) or None
    info.opset = job.opset


def _check_destination(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"{out_dir} exists and is not a directory", hint="choose another -o")
    if out_dir.exists() and not overwrite:
        raise ExportError(f"{out_dir} already exists", hint="pass --force to replace it, or choose another -o")
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"cannot create {out_dir.parent}: {exc.strerror or exc}") from exc
    if not os.access(out_dir.parent, os.W_OK | os.X_OK):
        raise ExportError(f"{out_dir.parent} is not writable", hint="choose another -o")


def _make_staging(out_dir: Path) -> Path:
    # Next to the destination, so the final rename stays on one file system.
    try:
        return Path(tempfile.mkdtemp(prefix=temp_prefix(out_dir.name), suffix=".partial", dir=out_dir.parent))
    except OSError as exc:
        raise ExportError(f"cannot write in {out_dir.parent}: {exc.strerror or exc}") from exc


def _fsync_tree(root: Path) -> None:
    """Flush every file and directory of the staged package to disk before it is renamed."""
    for dirpath, _dirs, files in os.walk(root):
        for name in files + ["."]:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def _commit(staging: Path, out_dir: Path) -> None:
    """Move the finished package into place; an existing one is replaced (``overwrite``)."""
    if not (staging / MANIFEST_NAME).is_file():  # defensive: never publish an incomplete package
        raise ExportError(f"internal error: {MANIFEST_NAME} missing from the staged package")
    _fsync_tree(staging)
    old = None
    if out_dir.exists():
        # Rename the old package aside first: a crash between the renames leaves it recoverable.
        old = Path(tempfile.mkdtemp(prefix=temp_prefix(out_dir.name), suffix=".old", dir=out_dir.parent))
        os.rmdir(old)
        os.replace(out_dir, old)
    try:
        os.replace(staging, out_dir)
    except OSError as exc:
        if old is not None:
            os.replace(old, out_dir)
        raise ExportError(f"cannot move the package to {out_dir}: {exc.strerror or exc}") from exc
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    staging_mode = 0o777 & ~_umask()
    os.chmod(out_dir, staging_mode)  # mkdtemp made it 0700; give it the usual permissions


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
