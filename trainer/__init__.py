"""Training: data sets, networks, losses, the training loop and self-describing checkpoints.

The public API is imported lazily, so ``import ganport.trainer.datasets`` and the ``ganport``
CLI's ``--help`` work without torch::

    from ganport.trainer import TrainConfig, train
    result = train(TrainConfig(kind="cgan", dataset="glyphs", epochs=5))
    print(result.run_dir, result.checkpoint, result.step)
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["TrainConfig", "TrainResult", "train", "load_checkpoint", "save_checkpoint",
           "build_from_checkpoint", "build_networks"]

# The loop lives in ``training.py``, not ``train.py``: a submodule named ``train`` would be bound
# as the package attribute ``train`` by the import system and shadow the function.
# Public name -> module defining it (imported on first use: those modules need torch).
_LAZY = {
    "TrainConfig": "ganport.trainer.config",
    "TrainResult": "ganport.trainer.training",
    "train": "ganport.trainer.training",
    "load_checkpoint": "ganport.trainer.checkpoint",
    "save_checkpoint": "ganport.trainer.checkpoint",
    "build_from_checkpoint": "ganport.trainer.checkpoint",
    "build_networks": "ganport.trainer.models",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ganport.trainer' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
