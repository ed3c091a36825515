"""The built-in ``digits`` set: scikit-learn's bundled 8x8 handwritten digits (1,797 images).

Real handwriting that ships with scikit-learn, so it needs no download. Pixels 0..16 are scaled
to [-1, 1] and the 8x8 images are upscaled (bilinear) to 28x28 by default. The train/test split
is a fixed 80/20 partition (its own fixed seed), so ``seed`` never moves an image between
splits; ``seed`` only picks which samples an ``n`` cap keeps.
"""

from __future__ import annotations

import logging

import numpy as np

from ganport.errors import DatasetError

from .base import DataInfo, ImageDataset, subset_indices
from .imageops import resize_images

logger = logging.getLogger(__name__)

NAME = "digits"
CLASS_NAMES = [str(d) for d in range(10)]
DEFAULT_SIZE = 28
TEST_FRACTION = 0.2
_SPLIT_SEED = 20240607  # fixed: the partition must not depend on the user's seed


def load_digits_dataset(
    root=None, *, image_size: int | None = None, n: int | None = None, seed: int = 0, split: str = "train"
) -> ImageDataset:
    """Load scikit-learn's digits as an :class:`ImageDataset`.

    Args:
        root: unused (bundled with scikit-learn).
        image_size: output side, default 28 (the native size is 8).
        n: cap on the number of samples (a deterministic subset given ``seed``).
        seed: picks the subset when ``n`` is given.
        split: ``"train"`` (80%, 1,438 images) or ``"test"`` (20%, 359 images).

    Returns:
        ImageDataset with images ``[N, 1, S, S]`` and labels 0..9.

    Example:
        >>> ds = load_digits_dataset(split="test")
        >>> len(ds), ds.info.class_names[:3]
        (359, ['0', '1', '2'])
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise DatasetError(
            f"{NAME} needs scikit-learn, which is not installed", hint="pip install 'ganport[train]'"
        ) from exc
    bunch = load_digits()
    pixels = bunch.images.astype(np.float32)  # [1797, 8, 8], values 0..16
    labels = bunch.target.astype(np.int64)

    order = np.random.default_rng(_SPLIT_SEED).permutation(len(labels))
    n_test = round(TEST_FRACTION * len(labels))
    part = np.sort(order[:n_test] if split == "test" else order[n_test:])
    part = part[subset_indices(len(part), n, seed)]

    images = (pixels[part] / 8.0 - 1.0)[:, None]
    size = image_size or DEFAULT_SIZE
    images = resize_images(images, size)
    logger.info("digits: %d %s images %dx%d", len(part), split, size, size)
    return ImageDataset(images, labels[part], None, DataInfo(NAME, list(CLASS_NAMES), [1, size, size]))
