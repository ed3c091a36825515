"""Image helpers shared by the runtime, the CLI and the gRPC server: tensor <-> uint8 conversion,
grids, resizing and PNG encoding.

Only numpy and Pillow are used, so this works in the torch-free edge install. Conventions:
models produce float32 ``[N, C, H, W]`` in ``[-1, 1]``; everything a user sees is uint8
``[N, H, W, C]`` (grayscale keeps its channel axis: ``[N, H, W, 1]``); single images are
``[H, W, C]``.
"""

from __future__ import annotations

import io
import logging
import math
import struct
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np

from ganport.errors import InvalidInputError

logger = logging.getLogger(__name__)

__all__ = ["to_uint8", "from_uint8", "make_grid", "encode_png", "decode_png", "save_png",
           "resize_to_height"]

# Pillow mode per channel count, for PNG encoding.
_PIL_MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}


def to_uint8(images: np.ndarray, value_range: Sequence[float] = (-1.0, 1.0)) -> np.ndarray:
    """Convert model output to displayable pixels.

    Args:
        images: float array ``[N, C, H, W]`` with values in ``value_range``.
        value_range: ``(low, high)`` of the model output; ``low`` maps to 0 and ``high`` to 255.

    Returns:
        uint8 array ``[N, H, W, C]``: ``(x - low) / (high - low) * 255``, rounded and clipped.
        NaN (a broken model) becomes ``low``.

    Example:
        >>> to_uint8(np.zeros((1, 1, 2, 2), np.float32)).reshape(-1).tolist()
        [128, 128, 128, 128]
    """
    array = np.asarray(images)
    if array.ndim != 4:
        raise InvalidInputError(f"expected images of shape [N, C, H, W], got shape {list(array.shape)}")
    low, high = float(value_range[0]), float(value_range[1])
    if not high > low:
        raise InvalidInputError(f"value_range must be (low, high) with low < high, got {value_range}")
    # One pass of float32 work in a fresh buffer: fmax/fmin (unlike clip) map NaN to the
    # bound, so NaN -> 0 (= low) and +-inf -> 255 / 0 without nan_to_num or warnings.
    scaled = np.subtract(array.astype(np.float32, copy=False), np.float32(low), dtype=np.float32)
    scaled *= np.float32(255.0 / (high - low))
    np.rint(scaled, out=scaled)
    np.fmax(scaled, 0, out=scaled)
    np.fmin(scaled, 255, out=scaled)
    # One copy: the cast writes NHWC in C order (astype's default "K" would keep NCHW strides).
    return scaled.transpose(0, 2, 3, 1).astype(np.uint8, order="C")


def from_uint8(images: np.ndarray, value_range: Sequence[float] = (-1.0, 1.0)) -> np.ndarray:
    """Inverse of :func:`to_uint8`: uint8 ``[N, H, W, C]`` -> float32 ``[N, C, H, W]`` in ``value_range``.

    Example:
        >>> from_uint8(np.full((1, 1, 1, 1), 255, np.uint8)).item()
        1.0
    """
    array = np.asarray(images)
    if array.dtype != np.uint8 or array.ndim != 4:
        raise InvalidInputError(f"expected uint8 images of shape [N, H, W, C], got {array.dtype} "
                                f"shape {list(array.shape)}")
    low, high = float(value_range[0]), float(value_range[1])
    scaled = array.astype(np.float32) * np.float32((high - low) / 255.0) + np.float32(low)
    return np.ascontiguousarray(scaled.transpose(0, 3, 1, 2))


def _as_nhwc(images: np.ndarray) -> np.ndarray:
    """Accept ``[N, H, W, C]`` or grayscale ``[N, H, W]`` uint8; return ``[N, H, W, C]``."""
    array = np.asarray(images)
    if array.ndim == 3:
        array = array[..., None]
    if array.ndim != 4 or array.dtype != np.uint8:
        raise InvalidInputError(f"expected uint8 images [N, H, W, C], got {array.dtype} "
                                f"shape {list(array.shape)}")
    return array


def make_grid(images: np.ndarray, nrow: int | None = None, padding: int = 2, pad_value: int = 0) -> np.ndarray:
    """Tile images into one picture, row by row (like ``torchvision.utils.make_grid``).

    Args:
        images: uint8 ``[N, H, W, C]`` (or ``[N, H, W]``).
        nrow: images per row; default ``ceil(sqrt(N))`` (a square-ish grid).
        padding: pixels between images and around the border.
        pad_value: grey level (0..255) of the padding.

    Returns:
        uint8 ``[H', W', C]``.

    Example:
        >>> make_grid(np.zeros((4, 8, 8, 1), np.uint8), nrow=2, padding=1).shape
        (19, 19, 1)
    """
    array = _as_nhwc(images)
    n, h, w, c = array.shape
    if n == 0:
        raise InvalidInputError("make_grid needs at least one image")
    if nrow is None:
        nrow = math.ceil(math.sqrt(n))
    if not isinstance(nrow, (int, np.integer)) or isinstance(nrow, bool) or nrow < 1:
        raise InvalidInputError(f"nrow must be a positive integer, got {nrow!r}")
    if not isinstance(padding, (int, np.integer)) or padding < 0:
        raise InvalidInputError(f"padding must be a non-negative integer, got {padding!r}")
    ncol = min(int(nrow), n)
    nrows = math.ceil(n / ncol)
    grid = np.full((nrows * (h + padding) + padding, ncol * (w + padding) + padding, c),
                   int(np.clip(pad_value, 0, 255)), np.uint8)
    for index in range(n):
        row, col = divmod(index, ncol)
        top, left = padding + row * (h + padding), padding + col * (w + padding)
        grid[top:top + h, left:left + w] = array[index]
    return grid


def _as_hwc(image: np.ndarray) -> np.ndarray:
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.dtype != np.uint8 or array.shape[2] not in _PIL_MODES:
        raise InvalidInputError(f"expected a uint8 image [H, W, C] with C in 1..4, got {array.dtype} "
                                f"shape {list(array.shape)}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise InvalidInputError(f"cannot encode an empty image of shape {list(array.shape)}")
    return array


# PNG colour types by channel count: grey, grey+alpha, RGB, RGBA.
_PNG_COLOR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def encode_png(image: np.ndarray, compress_level: int = 6) -> bytes:
    """Encode one uint8 ``[H, W, C]`` image (C = 1, 2, 3 or 4; or ``[H, W]``) as PNG bytes.

    Written directly (8-bit, no row filter, zlib): for the small images generators make this is
    several times faster than going through Pillow, which dominated the server's PNG cost.

    Example:
        >>> encode_png(np.zeros((2, 2, 3), np.uint8))[:4]
        b'\\x89PNG'
    """
    array = np.ascontiguousarray(_as_hwc(image))
    height, width, channels = array.shape
    header = struct.pack(">IIBBBBB", width, height, 8, _PNG_COLOR_TYPES[channels], 0, 0, 0)
    # Each scanline starts with its filter type byte (0 = none).
    rows = np.zeros((height, 1 + width * channels), np.uint8)
    rows[:, 1:] = array.reshape(height, width * channels)
    return b"".join((b"\x89PNG\r\n\x1a\n", _png_chunk(b"IHDR", header),
                     _png_chunk(b"IDAT", zlib.compress(rows.tobytes(), compress_level)),
                     _png_chunk(b"IEND", b"")))


def decode_png(data: bytes) -> np.ndarray:
    """Decode PNG (or any Pillow-readable) bytes to uint8 ``[H, W, C]``.

    Example:
        >>> decode_png(encode_png(np.zeros((2, 3, 1), np.uint8))).shape
        (2, 3, 1)
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as pil:
            array = np.asarray(pil)
    except (UnidentifiedImageError, OSError) as exc:
        raise InvalidInputError(f"not a readable image: {exc}") from exc
    return array[..., None] if array.ndim == 2 else array


#: File name suffixes of other image formats: writing PNG bytes under them would mislead viewers.
_OTHER_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff")


def save_png(path: str | Path, image: np.ndarray) -> Path:
    """Write one uint8 ``[H, W, C]`` image to ``path`` as PNG, atomically, creating parent folders.

    Returns:
        The path written.

    Raises:
        InvalidInputError: ``path`` names another image format (``.jpg``...), or cannot be written.

    Example:
        >>> save_png("out/grid.png", make_grid(images, nrow=4))   # doctest: +SKIP
        PosixPath('out/grid.png')
    """
    from ganport.atomic import atomic_write

    path = Path(path)
    if path.suffix.lower() in _OTHER_IMAGE_SUFFIXES:
        raise InvalidInputError(f"{path.name}: ganport writes PNG images, not {path.suffix}",
                                hint=f"use {path.with_suffix('.png').name}")
    data = encode_png(image)
    try:
        atomic_write(path, lambda handle: handle.write(data))
    except OSError as exc:
        raise InvalidInputError(f"cannot write {path}: {exc.strerror or exc}") from exc
    logger.debug("wrote %s (%d bytes)", path, len(data))
    return path


def resize_to_height(image: np.ndarray, height: int) -> np.ndarray:
    """Resize one uint8 ``[H, W, C]`` image to ``height`` pixels, keeping its aspect ratio.

    Each channel is resized on its own (Pillow mode ``L``), so any channel count works.

    Example:
        >>> resize_to_height(np.zeros((10, 20, 3), np.uint8), 5).shape
        (5, 10, 3)
    """
    from PIL import Image

    array = np.asarray(image)
    h, w, c = array.shape
    if h == height:
        return array
    width = max(1, round(w * height / h))
    # LANCZOS for shrinking keeps strokes crisp; BICUBIC for enlarging avoids ringing halos.
    method = Image.Resampling.LANCZOS if height < h else Image.Resampling.BICUBIC
    channels = [np.asarray(Image.fromarray(np.ascontiguousarray(array[..., i])).resize((width, height), method))
                for i in range(c)]
    return np.stack(channels, axis=-1)
