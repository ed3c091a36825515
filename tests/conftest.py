"""Shared fixtures of the main test suite (the full install: torch, onnx, onnxruntime).

``tiny_checkpoint`` gives any test a real checkpoint of any model kind, trained for a few steps
by the real trainer, built once per session::

    def test_export_cgan(tiny_checkpoint, tmp_path):
        ckpt = tiny_checkpoint("cgan")                  # Path to .../checkpoints/latest.pt
        ckpt = tiny_checkpoint("aae", ema=0.99)         # TrainConfig overrides: a separate run

torch is imported only when a checkpoint is first requested, so test modules that never ask for
one don't pay for it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

import pytest

# One intra-op thread unless the caller chose otherwise: the tests' models are tiny, and on a
# shared 2-core machine two OpenMP threads per process were measured up to 20x slower than one
# (spinning threads starve each other). Set before torch is imported; subprocesses inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

#: Settings of the tiny runs: scikit-learn digits at 16x16 (10 classes, so conditional kinds
#: work), 64 images, latent 8, batch 8, 3 steps. About 0.3 s per kind on 2 CPU cores.
TINY_CONFIG: dict[str, Any] = {
    "dataset": "digits",
    "image_size": 16,
    "n_samples": 64,
    "latent_dim": 8,
    "batch_size": 8,
    "steps": 3,
    "sample_interval": 3,
    "checkpoint_interval": 3,
    "log_every": 1,
    "seed": 0,
    "device": "cpu",
}


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Factory ``tiny_checkpoint(kind, **overrides) -> Path`` of a checkpoint of that kind.

    Args (of the factory):
        kind: ``gan``, ``dcgan``, ``cgan``, ``cdcgan`` or ``aae``.
        **overrides: TrainConfig fields replacing :data:`TINY_CONFIG` (e.g. ``dataset="glyphs"``,
            ``image_size=28``, ``ema=0.99``).

    Returns:
        Path of ``checkpoints/latest.pt`` of a run made once per session per distinct
        ``(kind, overrides)`` under a session temporary folder. Treat the file as read-only:
        other tests share it.
    """
    cache: dict[str, Path] = {}
    root = tmp_path_factory.mktemp("tiny-checkpoints")

    def make(kind: str, **overrides: Any) -> Path:
        key = json.dumps([kind, overrides], sort_keys=True, default=str)
        if key not in cache:
            from ganport.trainer import TrainConfig, train

            settings = {**TINY_CONFIG, **overrides}
            run_name = f"{kind}-{len(cache)}"
            result = train(TrainConfig(kind=kind, out_dir=str(root), run_name=run_name, **settings))
            cache[key] = result.checkpoint
        return cache[key]

    return make
