"""Loader for ``stl10`` from the official binary files (``stl10_binary/``).

``<split>_X.bin`` is raw uint8, 3x96x96 per image, each channel stored column-major (the
layout of the original MATLAB arrays), so every image is transposed back to row-major.
``<split>_y.bin`` holds one uint8 label per image, 1..10 on disk, returned as 0..9;
``class_names.txt`` names them, one per line. ``split`` is ``train`` (5,000), ``test`` (8,000)
or ``unlabeled`` (100,000 images, no labels).

The image file is memory-mapped and only the selected ``n`` images are read, so a small subset
of the 2.7 GB unlabeled file loads quickly.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ganport.errors import DatasetError

from .base import DataInfo, ImageDataset, find_file, require_root, subset_indices
from .imageops import finish_uint8

logger = logging.getLogger(__name__)

NAME = "stl10"
SIDE = 96
_IMAGE_BYTES = 3 * SIDE * SIDE
_SUBDIRS = ["stl10_binary", ""]


def _read_images(path: Path) -> np.ndarray:
    """Memory-map ``<split>_X.bin`` as uint8 ``[N, 3, 96, 96]`` (still column-major per channel)."""
    size = path.stat().st_size
    if size == 0 or size % _IMAGE_BYTES:
        raise DatasetError(
            f"{path.name}: {size} bytes is not a whole number of {_IMAGE_BYTES}-byte images "
            "(uint8 3x96x96 each); the file is truncated or not STL-10"
        )
    return np.memmap(path, np.uint8, mode="r").reshape(-1, 3, SIDE, SIDE)


def _read_class_names(path: Path) -> list[str]:
    try:
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path.name}: cannot be read ({exc})") from exc
    if len(names) != 10:
        raise DatasetError(f"{path.name}: lists {len(names)} class names, expected 10 (one per line)")
    return names


def load_stl10(root, *, image_size=None, n=None, seed=0, split="train") -> ImageDataset:
    """Load STL-10 from ``stl10_binary``.

    Args:
        root: folder holding ``stl10_binary/`` (or the ``.bin`` files directly).
        image_size: resize to this side (natural size 96).
        n: cap on the number of samples (deterministic subset given ``seed``).
        seed: picks the subset.
        split: ``"train"``, ``"test"`` or ``"unlabeled"``.

    Returns:
        ImageDataset ``[N, 3, 96, 96]``; labels 0..9 (None for ``unlabeled``).

    Example:
        >>> load_dataset("stl10", "~/data", split="unlabeled", n=2000, image_size=64)  # doctest: +SKIP
    """
    base = require_root(root, NAME)
    image_path = find_file(base, [f"{split}_X.bin"], _SUBDIRS, NAME, "uint8 3x96x96 images")
    images = _read_images(image_path)
    labels = classes = None
    if split != "unlabeled":
        label_path = find_file(base, [f"{split}_y.bin"], _SUBDIRS, NAME, "uint8 labels 1..10")
        classes = _read_class_names(find_file(base, ["class_names.txt"], _SUBDIRS, NAME, "class names"))
        labels = np.fromfile(label_path, np.uint8).astype(np.int64)
        if len(labels) != len(images):
            raise DatasetError(
                f"{NAME}: {label_path.name} holds {len(labels)} labels but {image_path.name} holds {len(images)} images"
            )
        if len(labels) and (labels.min() < 1 or labels.max() > 10):
            raise DatasetError(f"{label_path.name}: labels must be 1..10, found {labels.min()}..{labels.max()}")
        labels -= 1
    keep = subset_indices(len(images), n, seed)
    # Column-major per channel: swap H and W to get upright images.
    chosen = np.ascontiguousarray(images[keep].transpose(0, 1, 3, 2))
    pixels = finish_uint8(chosen, image_size)
    logger.info("stl10: %d %s images from %s", len(keep), split, image_path)
    return ImageDataset(
        pixels,
        None if labels is None else labels[keep],
        None,
        DataInfo(NAME, classes or [], list(pixels.shape[1:])),
    )
