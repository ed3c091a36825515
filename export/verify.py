"""Verification: every saved artifact is loaded back and compared with the eager network.

Each model file is opened with the runtime that will serve it (onnxruntime, ``torch.jit.load``,
``torch.export.load``), its embedded metadata is compared with the package's, and it is run on
the same fixed latents and labels as the eager float32 network at batch sizes 1, 7 and 64. The
largest absolute difference per batch size is recorded on the artifact; beyond the tolerance
the export fails.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from ganport.errors import ExportError
from ganport.export.job import Artifact, ExportJob

logger = logging.getLogger(__name__)

VERIFY_BATCHES = (1, 7, 64)
#: Max abs difference allowed against eager float32 (images are in [-1, 1]).
TOLERANCE_FP32 = 1e-4
#: The fp16 variant rounds every activation to 11 bits; 1e-2 is ~1.3 grey levels of 255.
TOLERANCE_FP16 = 1e-2
#: The int8 variant rounds weights and activations to 256 levels per tensor (per channel for
#: weights): an activation's step is its calibrated range / 255, and the errors of a few layers
#: add up. The worst pixel of the trained glyphs cGAN (the built-in model) moved by 0.16 at
#: batch 64, with its conditional accuracy unchanged (98.61%); 0.25 is 32 grey levels on the
#: [-1, 1] scale, which still catches a wrong
#: scale, a swapped channel or a broken graph (those move pixels by ~1-2). Whether the images
#: still read as their class is ``ganport eval``'s question, not this check's.
TOLERANCE_INT8 = 0.25
TOLERANCES = {"fp32": TOLERANCE_FP32, "fp16": TOLERANCE_FP16, "int8": TOLERANCE_INT8}


def tolerance(artifact: Artifact) -> float:
    """Tolerance for an artifact, by its precision (looser for fp16 and int8)."""
    return TOLERANCES[artifact.precision]


def verify_artifact(job: ExportJob, artifact: Artifact, path: Path, metadata: Mapping[str, str],
                    batches: tuple[int, ...] = VERIFY_BATCHES) -> dict[int, float]:
    """Load one artifact back, check its metadata and compare it with eager.

    Args:
        job: the export job (eager networks, example inputs).
        artifact: the artifact; ``artifact.diffs`` is filled in.
        path: where it was saved.
        metadata: the metadata it must carry (``info.to_metadata()``).
        batches: batch sizes to compare at.

    Returns:
        Batch size -> max abs difference.

    Raises:
        ExportError: the file cannot be loaded, carries other metadata, returns the wrong shape,
            non-finite values, or differs from eager beyond :func:`tolerance`.
    """
    if artifact.load is None:
        return {}
    try:
        run, found = artifact.load(path)
    except Exception as exc:  # any loader failure means the artifact is unusable
        raise ExportError(f"{artifact.relpath} cannot be loaded back: {str(exc).splitlines()[0][:300]}") from exc
    if dict(found) != dict(metadata):
        differing = sorted(k for k in set(found) | set(metadata) if found.get(k) != metadata.get(k))
        raise ExportError(f"{artifact.relpath} carries different metadata (fields {', '.join(differing)})")
    eager = job.graph(artifact.role)
    limit = tolerance(artifact)
    for batch in batches:
        inputs = job.example(artifact.role, batch, seed=batch)
        with torch.no_grad():
            expected = eager(*inputs).numpy()
        try:
            got = np.asarray(run([x.numpy() for x in inputs]))
        except Exception as exc:
            raise ExportError(f"{artifact.relpath} fails at batch size {batch}: "
                              f"{str(exc).splitlines()[0][:300]}") from exc
        if got.shape != expected.shape:
            raise ExportError(f"{artifact.relpath} returns shape {list(got.shape)} at batch size {batch}, "
                              f"expected {list(expected.shape)}")
        diff = float(np.max(np.abs(got.astype(np.float64) - expected)))
        artifact.diffs[batch] = diff
        if not np.isfinite(diff) or diff > limit:
            raise ExportError(f"{artifact.relpath} differs from the eager model by {diff:.3g} at batch "
                              f"size {batch} (tolerance {limit:g})",
                              hint="export with --no-verify to keep it anyway, or try another --opset")
    logger.info("verified %s: max abs diff %s", artifact.relpath,
                ", ".join(f"{d:.2g}@{b}" for b, d in artifact.diffs.items()))
    return dict(artifact.diffs)
