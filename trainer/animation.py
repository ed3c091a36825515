"""Training-progress animation: a run's sample grids as one animated GIF.

A run writes ``samples/step_NNNNNN.png`` every ``sample_interval`` steps, always from the same
fixed latents (and labels), so played in order they show the generator learning. At the end of
training :func:`write_progress_gif` turns them into ``RUN/progress.gif`` (Pillow's GIF writer,
written atomically); ``ganport animate RUN`` does the same for an existing run directory.

Each frame is captioned with its step. Long runs are thinned to at most ``max_frames`` frames
(fewer for big grids, :data:`PIXEL_BUDGET`), evenly spread over the run, first and last always
kept; the last frame is held longer.

Example::

    from ganport.trainer.animation import write_progress_gif
    write_progress_gif("runs/cgan-glyphs-20261201-031000")   # -> runs/.../progress.gif
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

from ganport.errors import InvalidInputError

logger = logging.getLogger(__name__)

#: File name of the animation in the run directory.
GIF_NAME = "progress.gif"
#: Frames kept at most (a GIF of every grid of a long run would be tens of megabytes).
MAX_FRAMES = 100
#: Pixels of all frames together at most (about as many bytes of GIF): a 62-class glyphs grid
#: (242 x 1,862) keeps ~35 frames, a 10-class grid (242 x 318) the full 100.
PIXEL_BUDGET = 16_000_000
#: Display time of each frame and of the last one, in milliseconds.
FRAME_MS = 120
FINAL_MS = 2000
_FRAME_NAME = re.compile(r"step_(\d+)\.png")


def sample_frames(run_dir: str | Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of every sample grid of a run, in step order (AAE ``recon_*`` grids excluded).

    Example:
        >>> sample_frames("runs/cgan-glyphs-x")[:1]      # doctest: +SKIP
        [(200, PosixPath('runs/cgan-glyphs-x/samples/step_000200.png'))]
    """
    folder = Path(run_dir) / "samples"
    frames = []
    if folder.is_dir():
        for path in folder.iterdir():
            match = _FRAME_NAME.fullmatch(path.name)
            if match and path.is_file():
                frames.append((int(match.group(1)), path))
    return sorted(frames)


def thin(count: int, limit: int) -> list[int]:
    """Indices of at most ``limit`` of ``count`` items, evenly spread, first and last kept.

    Example:
        >>> thin(10, 4)
        [0, 3, 6, 9]
    """
    if count <= limit:
        return list(range(count))
    if limit < 2:
        return [count - 1]
    return sorted({round(i * (count - 1) / (limit - 1)) for i in range(limit)})


def write_progress_gif(run_dir: str | Path, out: str | Path | None = None, *, max_frames: int = MAX_FRAMES,
                       frame_ms: int = FRAME_MS, final_ms: int = FINAL_MS) -> Path:
    """Write the sample grids of a run as an animated GIF (atomically).

    Args:
        run_dir: the run directory (holding ``samples/step_NNNNNN.png``).
        out: destination (default ``run_dir/progress.gif``).
        max_frames: frames kept at most (evenly thinned; fewer when the frames together would
            exceed :data:`PIXEL_BUDGET` pixels), >= 2.
        frame_ms: display time of each frame, milliseconds.
        final_ms: display time of the last frame, milliseconds.

    Returns:
        The path written.

    Raises:
        InvalidInputError: ``run_dir`` is not a folder or holds no sample grids; bad numbers.
    """
    from PIL import Image

    from ganport.atomic import atomic_write
    from ganport.trainer.explore import caption_image

    run = Path(run_dir)
    if not run.is_dir():
        raise InvalidInputError(f"run directory {run} does not exist or is not a folder",
                                hint="pass a folder made by `ganport train` (runs/KIND-DATASET-TIME)")
    for name, value, low in (("max_frames", max_frames, 2), ("frame_ms", frame_ms, 10), ("final_ms", final_ms, 10)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise InvalidInputError(f"{name} must be an integer >= {low}, got {value!r}")
    frames = sample_frames(run)
    if not frames:
        raise InvalidInputError(f"{run} holds no sample grids (samples/step_NNNNNN.png)",
                                hint="pass a run directory of `ganport train`")
    try:
        with Image.open(frames[-1][1]) as last:
            pixels = last.size[0] * last.size[1]
    except (OSError, SyntaxError, ValueError):
        pixels = 1  # reported with the file's name below
    limit = max(2, min(max_frames, PIXEL_BUDGET // max(pixels, 1)))
    frames = [frames[i] for i in thin(len(frames), limit)]
    images = []
    for step, path in frames:
        try:
            with Image.open(path) as opened:
                grid = np.asarray(opened.convert("RGB"))
        except (OSError, SyntaxError, ValueError) as exc:
            raise InvalidInputError(f"{path}: cannot be read as an image ({exc})",
                                    hint="delete the broken grid and run the command again") from exc
        images.append(caption_image(grid, [f"step {step:,}"]))
    # Frames of one run share a size; pad to the largest in case a caption widened one.
    height = max(image.shape[0] for image in images)
    width = max(image.shape[1] for image in images)
    gray = all(np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 0], image[..., 2])
               for image in images)
    pictures = []
    for image in images:
        canvas = np.zeros((height, width, 3), np.uint8)
        canvas[:image.shape[0], :image.shape[1]] = image
        # Grayscale grids stay exact in GIF's 256 grey levels; colour frames are quantised by Pillow.
        pictures.append(Image.fromarray(canvas[..., 0] if gray else canvas, "L" if gray else "RGB"))
    durations = [frame_ms] * (len(pictures) - 1) + [final_ms]
    target = Path(out) if out is not None else run / GIF_NAME

    def write(handle) -> None:
        pictures[0].save(handle, format="GIF", save_all=True, append_images=pictures[1:], duration=durations,
                         loop=0)

    atomic_write(target, write)
    logger.info("progress animation: %s (%d frames, steps %d..%d)", target, len(pictures), frames[0][0],
                frames[-1][0])
    return target
