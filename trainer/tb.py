"""Optional TensorBoard logging: losses, metrics and sample grids, when tensorboard is installed.

TensorBoard is not a dependency of ganport. :class:`TensorBoardLogger` writes event files through
``torch.utils.tensorboard.SummaryWriter`` when the ``tensorboard`` package is importable, and
silently does nothing otherwise (one info line says so), so a training loop can call it
unconditionally::

    tb = TensorBoardLogger(run_dir / "tensorboard", enabled=config.tensorboard)
    tb.scalars(row, step)                      # a metrics.jsonl row: every finite number is logged
    tb.images("samples", grid_uint8_hwc, step)  # a sample grid as written to samples/*.png
    tb.close()

Then ``tensorboard --logdir runs/`` shows every run.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np

logger = logging.getLogger(__name__)

#: Keys of a metrics row that are positions, not measurements.
_NOT_SCALARS = frozenset({"step", "epoch"})


def tensorboard_available() -> bool:
    """True when ``torch.utils.tensorboard`` can be imported (the tensorboard package is installed)."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        return False
    return True


class TensorBoardLogger:
    """A SummaryWriter that turns into a no-op when tensorboard is missing or logging is off.

    Args:
        log_dir: folder for the event files (created on the first write).
        enabled: False makes every method a no-op (e.g. non-zero ranks under torchrun).

    Attributes:
        active: True when events are really written.

    Example:
        >>> with TensorBoardLogger("/tmp/ganport-tb-doctest") as tb:
        ...     tb.scalars({"step": 1, "d_loss": 0.7, "g_loss": 0.9}, step=1)
    """

    def __init__(self, log_dir: str | Path, enabled: bool = True):
        self.log_dir = Path(log_dir)
        self._writer: Any = None
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            logger.info("tensorboard is not installed: no TensorBoard logs (pip install tensorboard)")
            return
        self._writer = SummaryWriter(log_dir=str(self.log_dir))

    @property
    def active(self) -> bool:
        return self._writer is not None

    def scalars(self, metrics: Mapping[str, Any], step: int, prefix: str = "") -> None:
        """Log every finite number of ``metrics`` (``step``/``epoch`` keys skipped).

        Names group in TensorBoard by their first ``/``: losses go under ``train/``, evaluation
        numbers (``eval_*``) under ``eval/``, unless ``prefix`` says otherwise.
        """
        if self._writer is None:
            return
        for key, value in metrics.items():
            if key in _NOT_SCALARS or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if not math.isfinite(float(value)):
                continue
            if prefix:
                tag = f"{prefix}/{key}"
            elif key.startswith("eval_"):
                tag = f"eval/{key[5:]}"
            else:
                tag = f"train/{key}"
            self._writer.add_scalar(tag, float(value), int(step))

    def images(self, tag: str, image: np.ndarray, step: int) -> None:
        """Log one uint8 ``[H, W, C]`` picture (e.g. a sample grid from ``make_grid``)."""
        if self._writer is None:
            return
        array = np.asarray(image)
        if array.ndim == 2:
            array = array[..., None]
        self._writer.add_image(tag, array, int(step), dataformats="HWC")

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        """Flush and close the event file (safe to call twice)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> "TensorBoardLogger":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
