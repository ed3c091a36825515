"""The built-in ``fractal-dream`` set: density images of the "Fractal Dream" attractor.

Each image is the orbit density of the 2-D map (Pickover, *Chaos in Wonderland*)::

    x' = sin(y * b) + c * sin(x * b)
    y' = sin(x * a) + d * sin(y * a)

for one parameter vector ``v = (a, b, c, d)``, drawn with ``a, b`` in [-3, 3] and ``c, d`` in
[0.5, 1.5]. Every image comes with its ``v`` (``params [N, 4]``), which makes the set useful for
latent-decoding experiments: a model's latent code can be compared with the true ``v``, and
:func:`render_attractor` re-renders ``FD(v)`` for any ``v``.

Rendering: a fixed cloud of starting points (the same for every ``v``, so a given ``v`` always
gives the same image) is iterated; after a short burn-in every visited point is binned into a
histogram over the box ``|x| <= 1 + |c|``, ``|y| <= 1 + |d|`` (the map's range), the counts are
log-scaled, normalised by the image's 99.5th percentile (clipped) and mapped to [-1, 1]. All images of a batch are
iterated together with numpy. Parameters whose orbit collapses onto a few pixels (fixed points,
short cycles) are rejected when sampling the data set, so every image shows an attractor.

Default size is 32x32 (cheap to train on a CPU; fine structure shows at ``image_size=64``).
``palette=1`` gives grayscale images, ``palette=3`` RGB through a fixed black-purple-orange-white
colour ramp.
"""

from __future__ import annotations

import logging
from functools import lru_cache

import numpy as np

from .base import DataInfo, ImageDataset, int_option

logger = logging.getLogger(__name__)

NAME = "fractal-dream"
DEFAULT_SIZE = 32
DEFAULT_ITERATIONS = 200
#: Natural size of each split (``n`` caps it).
SPLIT_SIZES = {"train": 4096, "test": 1024}
PARAM_NAMES = ("a", "b", "c", "d")
PARAM_LOW = np.array([-3.0, -3.0, 0.5, 0.5])
PARAM_HIGH = np.array([3.0, 3.0, 1.5, 1.5])
#: An image must light up at least this fraction of its pixels to count as an attractor.
MIN_COVERAGE = 0.05

_BURN_IN = 20
_POINTS_PER_STEP = 1 << 18  # points iterated together (bounds memory)
# Colour ramp for palette=3: position in [0, 1] -> RGB in [0, 1].
_RAMP_POS = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
_RAMP_RGB = np.array([[0.0, 0.0, 0.0], [0.25, 0.05, 0.45], [0.8, 0.2, 0.3], [1.0, 0.65, 0.1], [1.0, 1.0, 0.85]])


def _points_per_image(image_size: int) -> int:
    # ~1 starting point per 8 pixels (x 200 iterations: ~25 samples per pixel). A multiple of 64,
    # so every image's block of points has the same SIMD layout whatever the batch (results then
    # do not depend on batch composition).
    return max(64, (image_size * image_size // 8 + 63) // 64 * 64)


@lru_cache(maxsize=8)
def _start_points(count: int) -> np.ndarray:
    """Fixed starting cloud ``[2, count]`` shared by every parameter vector."""
    return np.random.default_rng(0xF4AC7A1).uniform(-1.0, 1.0, (2, count)).astype(np.float32)


def _densities(params: np.ndarray, image_size: int, iterations: int) -> np.ndarray:
    """Normalised log orbit densities ``[N, H, W]`` in [0, 1] for ``params [N, 4]``."""
    n = len(params)
    hw = image_size * image_size
    points = _points_per_image(image_size)
    # float32 throughout: numpy's float32 sin is an order of magnitude faster than float64, and
    # the density of a chaotic orbit does not need more precision.
    a, b, c, d = (params[:, i : i + 1].astype(np.float32) for i in range(4))
    half_x = (1.0 + np.abs(c)) * 1.02  # the map's range, with a small margin
    half_y = (1.0 + np.abs(d)) * 1.02
    start = _start_points(points)
    x = np.repeat(start[0][None], n, 0)
    y = np.repeat(start[1][None], n, 0)
    base = (np.arange(n, dtype=np.int64) * hw)[:, None]
    counts = np.zeros(n * hw, np.int64)
    flush_every = max(1, 4_000_000 // (n * points))
    pending: list[np.ndarray] = []
    for step in range(_BURN_IN + iterations):
        x, y = np.sin(y * b) + c * np.sin(x * b), np.sin(x * a) + d * np.sin(y * a)
        if step < _BURN_IN:
            continue
        ix = ((x + half_x) * (image_size / (2 * half_x))).astype(np.int64)
        iy = ((y + half_y) * (image_size / (2 * half_y))).astype(np.int64)
        pending.append((base + iy * image_size + ix).ravel())
        if len(pending) >= flush_every or step == _BURN_IN + iterations - 1:
            counts += np.bincount(np.concatenate(pending), minlength=n * hw)
            pending = []
    density = np.log1p(counts.reshape(n, hw).astype(np.float32))
    # Normalise by a high quantile rather than the maximum: a few very hot pixels (an orbit
    # point many starts fall onto) would otherwise leave the rest of the attractor dark.
    peak = np.partition(density, hw - 1 - hw // 200, axis=1)[:, hw - 1 - hw // 200, None]
    out = np.clip(density / np.maximum(peak, 1e-6), 0.0, 1.0)
    return out.reshape(n, image_size, image_size)


def render_attractor(
    params: np.ndarray,
    image_size: int = DEFAULT_SIZE,
    channels: int = 1,
    iterations: int = DEFAULT_ITERATIONS,
) -> np.ndarray:
    """Render ``FD(v)`` for each parameter vector ``v = (a, b, c, d)``.

    Args:
        params: ``[N, 4]`` (or one ``[4]`` vector) of ``(a, b, c, d)``.
        image_size: output side in pixels.
        channels: 1 (grayscale) or 3 (colour ramp).
        iterations: iterations of the map per starting point (after a burn-in of 20).

    Returns:
        float32 ``[N, channels, image_size, image_size]`` in [-1, 1]; identical to the
        ``fractal-dream`` images for the same ``params``, size, palette and iterations.

    Example:
        >>> render_attractor(np.array([[-2.0, 1.5, 1.1, 0.9]]), 32).shape
        (1, 1, 32, 32)
    """
    params = np.atleast_2d(np.asarray(params, dtype=np.float32))
    if params.ndim != 2 or params.shape[1] != 4:
        raise ValueError(f"params must be [N, 4] (a, b, c, d), got shape {params.shape}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    out = np.empty((len(params), channels, image_size, image_size), np.float32)
    # Batches of whole images keep memory bounded; each image's result does not depend on them.
    batch = max(1, _POINTS_PER_STEP // _points_per_image(image_size))
    for start in range(0, len(params), batch):
        dens = _densities(params[start : start + batch], image_size, iterations)
        if channels == 1:
            out[start : start + batch, 0] = dens * 2.0 - 1.0
        else:
            for ch in range(3):
                out[start : start + batch, ch] = np.interp(dens, _RAMP_POS, _RAMP_RGB[:, ch]) * 2.0 - 1.0
    return out


def sample_params(rng: np.random.Generator, count: int) -> np.ndarray:
    """Draw ``count`` parameter vectors uniformly in the box (float32 ``[count, 4]``)."""
    return rng.uniform(PARAM_LOW, PARAM_HIGH, (count, 4)).astype(np.float32)


def load_fractal_dream(
    root=None,
    *,
    image_size: int | None = None,
    n: int | None = None,
    seed: int = 0,
    split: str = "train",
    palette: int = 1,
    iterations: int = DEFAULT_ITERATIONS,
) -> ImageDataset:
    """Generate the ``fractal-dream`` set.

    Args:
        root: unused (built-in set).
        image_size: output side, default 32.
        n: number of images; default 4096 (train) / 1024 (test).
        seed: random seed; the same ``(seed, split)`` gives identical arrays.
        split: ``"train"`` or ``"test"`` (an independent random stream of parameters).
        palette: 1 = grayscale (C=1), 3 = RGB colour ramp (C=3).
        iterations: map iterations per starting point (default 200; more = smoother).

    Returns:
        Unlabelled ImageDataset with ``params [N, 4]`` = ``(a, b, c, d)`` per image.

    Example:
        >>> ds = load_fractal_dream(n=8)
        >>> ds.images.shape, ds.params.shape, ds.labels
        ((8, 1, 32, 32), (8, 4), None)
    """
    palette = int_option("palette", palette, dataset=NAME, choices=(1, 3))
    iterations = int_option("iterations", iterations, dataset=NAME, low=10, high=100_000)
    size = image_size or DEFAULT_SIZE
    total = SPLIT_SIZES[split] if n is None else n
    rng = np.random.default_rng([int(seed), 0 if split == "train" else 1, 0xF4AC7A1])

    kept_params, kept_images = [], []
    have = 0
    while have < total:
        # Oversample a little: typically ~15% of the box gives collapsed orbits.
        candidates = sample_params(rng, max(64, int((total - have) * 1.3)))
        images = render_attractor(candidates, size, palette, iterations)
        lit = (images > -1.0).any(axis=1).mean(axis=(1, 2))
        good = lit >= MIN_COVERAGE
        kept_params.append(candidates[good])
        kept_images.append(images[good])
        have += int(good.sum())
    params = np.concatenate(kept_params)[:total]
    images = np.concatenate(kept_images)[:total]
    info = DataInfo(NAME, [], [palette, size, size])
    logger.info("fractal-dream: %d images %dx%d, palette %d", total, size, size, palette)
    return ImageDataset(images, None, params, info)
