"""Array-level image operations shared by the loaders: scaling to [-1, 1] and batch resizing.

Resizing is done with separable resampling matrices (a triangle filter whose support widens
when shrinking, the same scheme as Pillow's BILINEAR), so a whole batch is resized with two
matrix products instead of one Pillow call per image and channel.
"""

from __future__ import annotations

import logging
from functools import lru_cache

import numpy as np

logger = logging.getLogger(__name__)

#: Images are converted and resized in chunks of this many so a 50k-image set never needs
#: two full float copies at once.
CHUNK = 4096


def uint8_to_signed(images: np.ndarray) -> np.ndarray:
    """Map uint8 pixels 0..255 to float32 -1..1.

    Example:
        >>> uint8_to_signed(np.array([0, 255], np.uint8)).tolist()
        [-1.0, 1.0]
    """
    out = images.astype(np.float32)
    out *= 2.0 / 255.0
    out -= 1.0
    return out


@lru_cache(maxsize=64)
def _resample_matrix(n_in: int, n_out: int) -> np.ndarray:
    """``[n_out, n_in]`` weights resampling a line of ``n_in`` pixels to ``n_out``.

    Pixel centres are aligned (``(i + 0.5) * n_in / n_out - 0.5``); when shrinking, the
    triangle filter is widened by the scale factor so it averages instead of aliasing.
    """
    scale = n_in / n_out
    support = max(scale, 1.0)
    centres = (np.arange(n_out) + 0.5) * scale - 0.5
    taps = np.arange(n_in)
    w = np.clip(1.0 - np.abs(taps[None, :] - centres[:, None]) / support, 0.0, None)
    # Edge rows lose taps that fall outside the image; renormalise so flat images stay flat.
    w /= w.sum(axis=1, keepdims=True)
    return w.astype(np.float32)


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """Resize a float batch ``[N, C, H, W]`` to ``[N, C, size, size]`` (bilinear, antialiased).

    Args:
        images: float32 batch.
        size: output height and width.

    Returns:
        float32 ``[N, C, size, size]``; the input itself when it already has that size.

    Example:
        >>> resize_images(np.zeros((2, 1, 8, 8), np.float32), 28).shape
        (2, 1, 28, 28)
    """
    n, c, h, w = images.shape
    if (h, w) == (size, size):
        return images
    rows = _resample_matrix(h, size)
    cols = _resample_matrix(w, size)
    out = np.empty((n, c, size, size), np.float32)
    for start in range(0, n, CHUNK):
        chunk = images[start : start + CHUNK].astype(np.float32, copy=False)
        out[start : start + CHUNK] = rows @ (chunk @ cols.T)
    # Triangle weights are convex, so the range stays within [-1, 1] up to rounding.
    np.clip(out, -1.0, 1.0, out=out)
    return out


def finish_uint8(images: np.ndarray, image_size: int | None) -> np.ndarray:
    """Convert a uint8 batch ``[N, C, H, W]`` to float32 [-1, 1], resizing when asked.

    Works chunk by chunk so that only the final array is held at full size.
    """
    n, c, h, w = images.shape
    size = image_size or h
    if image_size is None and h != w:
        size = None  # natural, non-square size is kept as is
    out_h, out_w = (h, w) if size is None else (size, size)
    out = np.empty((n, c, out_h, out_w), np.float32)
    for start in range(0, n, CHUNK):
        chunk = uint8_to_signed(np.asarray(images[start : start + CHUNK]))
        out[start : start + CHUNK] = chunk if size is None else resize_images(chunk, size)
    return out
