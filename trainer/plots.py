"""Pictures a training run leaves behind: sample grids and the loss curve.

Sample grids reuse the runtime's image helpers (:mod:`ganport.runtime.images`), so training
previews are rendered exactly like served images. The loss curve uses matplotlib's Agg backend
(no display needed) and is imported lazily.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ganport.runtime.images import make_grid, save_png, to_uint8

logger = logging.getLogger(__name__)

#: metrics.jsonl keys drawn in the loss curve, by panel.
_PANELS = (
    ("losses", ("d_loss", "g_loss", "recon_loss")),
    ("discriminator scores", ("d_x", "d_g_z")),
)


def save_sample_grid(path: str | Path, images: np.ndarray, columns: int,
                     value_range: Sequence[float] = (-1.0, 1.0)) -> Path:
    """Write generator output as one PNG grid.

    Args:
        path: destination ``.png``.
        images: float ``[N, C, H, W]`` in ``value_range``, row-major (for conditional models
            row ``i`` holds class ``i``).
        columns: images per row.
        value_range: pixel range of ``images``.

    Returns:
        The path written.
    """
    grid = make_grid(to_uint8(images, value_range), nrow=columns, padding=2)
    return save_png(path, grid)


def save_loss_curve(path: str | Path, records: list[dict[str, Any]], title: str = "") -> Path | None:
    """Plot losses and discriminator scores against the step.

    Args:
        path: destination ``.png``.
        records: rows of ``metrics.jsonl``.
        title: figure title (the run name).

    Returns:
        The path written, or None when there is nothing to plot yet.
    """
    if not records:
        return None
    import matplotlib

    matplotlib.use("Agg", force=False)  # never needs a display
    from matplotlib.figure import Figure

    # A Figure not registered with pyplot: no global state, nothing to close.
    fig = Figure(figsize=(9, 6), tight_layout=True)
    steps = [r["step"] for r in records]
    for index, (label, keys) in enumerate(_PANELS):
        ax = fig.add_subplot(len(_PANELS), 1, index + 1)
        for key in keys:
            if key in records[-1]:
                ax.plot(steps, [r.get(key, np.nan) for r in records], label=key, linewidth=1)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper right", fontsize="small")
    fig.axes[-1].set_xlabel("step")
    if title:
        fig.suptitle(title)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    tmp.replace(path)  # a viewer never sees a half-written PNG
    return path
