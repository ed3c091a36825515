"""Latent exploration: interpolation grids, per-class walks, and the fractal correspondence test.

``ganport explore MODEL`` writes PNGs that show how a generator's latent space is organised:

- ``interpolation.png``: one row per pair of random latents, a spherical (slerp) walk from one to
  the other; conditional models keep one class per row;
- ``class_walks.png`` (conditional): one row per class, every row following the *same* closed
  walk through three random latents, so each column shows one "style" across all classes;
- ``latent_dims.png``: one row per latent dimension (the first 16), that coordinate swept from
  -3 to 3 with the others fixed;
- ``encoded_interpolation.png`` (AAE): walks between the codes ``E(x)`` of real test images.

``ganport explore --fractal MODEL`` runs the latent-correspondence experiment on an AAE trained
on ``fractal-dream`` with ``latent_dim`` 4 (see :func:`fractal_experiment`): does the AAE's latent
space recover the attractor's known parameters ``v = (a, b, c, d)``?

Example::

    from ganport.trainer.evaluation import open_source
    from ganport.trainer.explore import explore, fractal_experiment
    explore(open_source("runs/cgan/checkpoints/latest.pt"), "out/explore")
    fractal_experiment(open_source("runs/aae-fractal/checkpoints/latest.pt"), "out/fractal")
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ganport.errors import DatasetError, InvalidInputError
from ganport.runtime.generator import interpolate_latents
from ganport.runtime.images import make_grid, save_png, to_uint8

logger = logging.getLogger(__name__)

#: Latent dimensions drawn in ``latent_dims.png`` at most.
MAX_DIM_ROWS = 16
#: Range of the per-dimension sweep (in standard deviations of the N(0, 1) prior).
DIM_SWEEP = 3.0
_PAD = 2
_CAPTION_PX = 11


# ------------------------------------------------------------------------------ drawing helpers


def _font(size: int = _CAPTION_PX) -> Any:
    from PIL import ImageFont

    return ImageFont.load_default(size=size)  # Pillow's scalable built-in font: no font files needed


def caption_image(image: np.ndarray, lines: Sequence[str], font_size: int = _CAPTION_PX,
                  min_width: int = 0) -> np.ndarray:
    """Put text lines above an image (white on black), widening the canvas if the text needs it.

    Args:
        image: uint8 ``[H, W, C]`` (C = 1 or 3).
        lines: caption lines, top to bottom.
        font_size: pixel size of Pillow's default font.
        min_width: minimum output width.

    Returns:
        uint8 RGB ``[H + caption, max(W, text width), 3]``; the image is centred horizontally.

    Example:
        >>> caption_image(np.zeros((8, 8, 1), np.uint8), ["hi"]).shape[2]
        3
    """
    from PIL import Image, ImageDraw

    rgb = np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image[..., :3]
    font = _font(font_size)
    line_h = font_size + 3
    text_w = max((int(font.getlength(line)) for line in lines), default=0) + 2 * _PAD
    width = max(rgb.shape[1], text_w, min_width)
    height = rgb.shape[0] + line_h * len(lines) + _PAD
    canvas = Image.new("RGB", (width, height), (0, 0, 0))
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(lines):
        draw.text((_PAD, _PAD + i * line_h), line, fill=(255, 255, 255), font=font)
    canvas.paste(Image.fromarray(np.ascontiguousarray(rgb)), ((width - rgb.shape[1]) // 2, height - rgb.shape[0]))
    return np.asarray(canvas)


def tile_images(tiles: Sequence[np.ndarray], ncol: int, gap: int = 6) -> np.ndarray:
    """Lay out RGB images of different sizes in a grid of ``ncol`` columns (top-left aligned).

    Example:
        >>> tile_images([np.zeros((4, 5, 3), np.uint8)] * 3, ncol=2).shape
        (26, 28, 3)
    """
    if not tiles:
        raise InvalidInputError("nothing to lay out")
    rows = [tiles[i:i + ncol] for i in range(0, len(tiles), ncol)]
    col_w = [max(t.shape[1] for t in tiles[c::ncol]) for c in range(min(ncol, len(tiles)))]
    row_h = [max(t.shape[0] for t in row) for row in rows]
    out = np.zeros((sum(row_h) + gap * (len(rows) + 1), sum(col_w) + gap * (len(col_w) + 1), 3), np.uint8)
    top = gap
    for row, h in zip(rows, row_h):
        left = gap
        for c, tile in enumerate(row):
            out[top:top + tile.shape[0], left:left + tile.shape[1]] = tile
            left += col_w[c] + gap
        top += h + gap
    return out


def _grid(images: np.ndarray, ncol: int) -> np.ndarray:
    """float ``[N, C, H, W]`` in [-1, 1] -> one uint8 grid ``[H', W', C]``."""
    return make_grid(to_uint8(images), nrow=ncol, padding=_PAD)


# ------------------------------------------------------------------------------ exploration


def _row_labels(source: Any, rows: int, classes: Sequence[Any] | None) -> list[int] | None:
    if not source.conditional:
        return None
    if classes:
        names = {name: i for i, name in enumerate(source.class_names)}
        picked = []
        for c in classes:
            if isinstance(c, str) and c in names:
                picked.append(names[c])
            elif str(c).isdigit() and int(c) < source.n_classes:
                picked.append(int(c))
            else:
                raise InvalidInputError(f"unknown class {c!r}",
                                        hint=f"classes: {', '.join(source.class_names[:20])}...")
        return [picked[i % len(picked)] for i in range(rows)]
    # Spread the rows over the classes (glyphs: 0, 7, F, ... rather than 0-7).
    step = max(1, source.n_classes // rows)
    return [(i * step) % source.n_classes for i in range(rows)]


def explore(source: Any, out_dir: str | Path, *, seed: int = 0, rows: int = 8, steps: int = 10,
            classes: Sequence[Any] | None = None, mode: str = "slerp",
            dataset_options: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write the latent-exploration PNGs of a generator.

    Args:
        source: a :class:`~ganport.trainer.evaluation.ModelSource` (``open_source(path)``).
        out_dir: folder for the PNGs (created).
        seed: latent seed.
        rows: rows of the interpolation grid.
        steps: frames per walk (both end points included).
        classes: classes (names or indices) of the interpolation rows; default spread over all.
        mode: ``slerp`` (default, keeps Gaussian latents at a typical norm) or ``linear``.
        dataset_options: loader options for the real images of the AAE walk (default: the
            checkpoint's).

    Returns:
        ``{name: path}`` of the files written.

    Example:
        >>> explore(open_source("ckpt.pt"), "out/explore", rows=4)   # doctest: +SKIP
    """
    for name, value, low in (("rows", rows, 1), ("steps", steps, 2)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise InvalidInputError(f"{name} must be an integer >= {low}, got {value!r}")
    out = Path(out_dir)
    written: dict[str, Path] = {}
    ends = source.latents(2 * rows, seed)
    row_labels = _row_labels(source, rows, classes)

    path_z = np.concatenate([interpolate_latents(ends[2 * r], ends[2 * r + 1], steps, mode) for r in range(rows)])
    labels = None if row_labels is None else np.repeat(np.asarray(row_labels, np.int64), steps)
    written["interpolation"] = save_png(out / "interpolation.png", _grid(source.generate(path_z, labels), steps))

    if source.conditional:
        anchors = source.latents(3, seed + 1)
        loop = np.concatenate([interpolate_latents(anchors[i], anchors[(i + 1) % 3], steps // 3 + 2, mode)[:-1]
                               for i in range(3)])[:steps]
        z = np.tile(loop, (source.n_classes, 1))
        walk_labels = np.repeat(np.arange(source.n_classes, dtype=np.int64), len(loop))
        written["class_walks"] = save_png(out / "class_walks.png",
                                          _grid(source.generate(z, walk_labels), len(loop)))

    dims = min(source.latent_dim, MAX_DIM_ROWS)
    base = source.latents(1, seed + 2)[0]
    sweep = np.linspace(-DIM_SWEEP, DIM_SWEEP, steps, dtype=np.float32)
    z = np.repeat(base[None], dims * steps, axis=0)
    for d in range(dims):
        z[d * steps:(d + 1) * steps, d] = sweep
    dim_labels = np.full(len(z), row_labels[0] if row_labels else 0, np.int64) if source.conditional else None
    written["latent_dims"] = save_png(out / "latent_dims.png", _grid(source.generate(z, dim_labels), steps))

    if source.encode_fn is not None:
        real = _real_images(source, 2 * rows, seed, dataset_options)
        if real is not None:
            codes = source.encode(real)
            walk = np.concatenate([interpolate_latents(codes[2 * r], codes[2 * r + 1], steps, "linear")
                                   for r in range(len(real) // 2)])
            frames = source.generate(walk).reshape(len(real) // 2, steps, *source.image_shape)
            # First column the real image, then the walk between the codes, last the other real image.
            rows_out = np.concatenate([real[0::2, None], frames, real[1::2, None]], axis=1)
            written["encoded_interpolation"] = save_png(
                out / "encoded_interpolation.png", _grid(rows_out.reshape(-1, *source.image_shape), steps + 2))
    for name, path in written.items():
        logger.info("wrote %s: %s", name, path)
    return written


def _real_images(source: Any, n: int, seed: int, dataset_options: dict[str, Any] | None) -> np.ndarray | None:
    """``n`` real test images of the model's data set, or None when they cannot be loaded."""
    from ganport.trainer.datasets import load_dataset

    if not source.dataset:
        logger.warning("the model does not record its data set: no encoded interpolation")
        return None
    options = dict(source.dataset_options if dataset_options is None else dataset_options)
    options.pop("per_class", None)
    try:
        data = load_dataset(source.dataset, source.data_root, image_size=source.image_shape[1], n=n,
                            seed=seed, split="test", **options)
    except DatasetError as exc:
        logger.warning("no real images for the encoded interpolation: %s", exc)
        return None
    if list(data.images.shape[1:]) != list(source.image_shape) or len(data.images) < 2:
        logger.warning("real %s images do not fit the model; no encoded interpolation", source.dataset)
        return None
    return data.images[: len(data.images) // 2 * 2]


# ------------------------------------------------------------------------------ fractal experiment


def normalise_params(params: np.ndarray) -> np.ndarray:
    """Map attractor parameters ``v = (a, b, c, d)`` to the AAE's latent scale.

    ``fractal-dream`` draws each parameter uniformly in a box (a, b in [-3, 3]; c, d in
    [0.5, 1.5]). Each coordinate is standardised under that prior::

        v_hat_i = (v_i - (low_i + high_i) / 2) / ((high_i - low_i) / sqrt(12))

    so ``v_hat`` has mean 0 and variance 1 per coordinate, like the N(0, 1) prior the AAE matches
    its codes to (the box maps to [-sqrt(3), sqrt(3)]). The map is affine and invertible
    (:func:`denormalise_params`).

    Example:
        >>> normalise_params(np.array([[0.0, 0.0, 1.0, 1.0]])).tolist()
        [[0.0, 0.0, 0.0, 0.0]]
    """
    from ganport.trainer.datasets.fractal import PARAM_HIGH, PARAM_LOW

    mid = (PARAM_LOW + PARAM_HIGH) / 2
    scale = (PARAM_HIGH - PARAM_LOW) / np.sqrt(12.0)
    return ((np.asarray(params, np.float64) - mid) / scale).astype(np.float32)


def denormalise_params(v_hat: np.ndarray) -> np.ndarray:
    """Inverse of :func:`normalise_params`."""
    from ganport.trainer.datasets.fractal import PARAM_HIGH, PARAM_LOW

    mid = (PARAM_LOW + PARAM_HIGH) / 2
    scale = (PARAM_HIGH - PARAM_LOW) / np.sqrt(12.0)
    return (np.asarray(v_hat, np.float64) * scale + mid).astype(np.float32)


def _r2(target: np.ndarray, estimate: np.ndarray) -> list[float]:
    residual = ((target - estimate) ** 2).sum(axis=0)
    spread = ((target - target.mean(axis=0)) ** 2).sum(axis=0) + 1e-12
    return (1.0 - residual / spread).tolist()


def _affine_fit(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least-squares ``W`` with ``[x, 1] @ W ≈ y``."""
    design = np.concatenate([x, np.ones((len(x), 1))], axis=1).astype(np.float64)
    weights, *_ = np.linalg.lstsq(design, y.astype(np.float64), rcond=None)
    return weights


def _affine_apply(weights: np.ndarray, x: np.ndarray) -> np.ndarray:
    return (np.concatenate([x, np.ones((len(x), 1))], axis=1) @ weights).astype(np.float32)


def _knn_regress(train_x: np.ndarray, train_y: np.ndarray, query: np.ndarray, k: int = 5) -> np.ndarray:
    """Mean target of the ``k`` nearest training points: a non-linear decoder of codes to parameters."""
    distances = ((query[:, None, :].astype(np.float64) - train_x[None]) ** 2).sum(axis=2)
    nearest = np.argsort(distances, axis=1)[:, :k]
    return train_y[nearest].mean(axis=1)


def _per_image_mse(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return ((a.astype(np.float64) - b) ** 2).reshape(len(a), -1).mean(axis=1)


#: Held-out parameter vectors the mean MSEs and R² are computed on (at least; ``n`` if larger).
FRACTAL_EVAL_N = 256
#: Kinds of comparison against FD(v), in table order: name -> what is compared.
MSE_COLUMNS = {
    "direct": "G(v_hat)",
    "direct_control": "G(v_hat') for another vector v'",
    "affine": "G(A v_hat + b), A and b fitted by least squares on other vectors",
    "affine_control": "G(A v_hat' + b) for another vector v'",
    "reconstruction": "G(E(FD(v))), the AAE's own reconstruction",
    "mean_image": "the mean attractor image (best constant guess under MSE)",
}


def fractal_experiment(source: Any, out_dir: str | Path, *, n: int = 16, fit_n: int = 512, seed: int = 0,
                       iterations: int | None = None) -> dict[str, Any]:
    """Does an AAE trained on ``fractal-dream`` recover the attractor's parameter space?

    Parameter vectors ``v`` come from the ``fractal-dream`` test split (so every ``v`` shows an
    attractor); their images ``FD(v)`` are identical to :func:`render_attractor`'s. For each
    held-out ``v`` the experiment compares with ``FD(v)``:

    - ``G(v_hat)``: the decoder fed the normalised parameters directly (:func:`normalise_params`)
      — the report's question: *is* the AAE's latent space the parameter space?
    - ``G(A v_hat + b)``: the decoder fed the best affine map from parameters to codes, fitted by
      least squares on ``fit_n`` other vectors — the latent space may be the parameter space up
      to a rotation and scaling, which an AAE cannot be expected to pin down;
    - ``G(E(FD(v)))``: the AAE's own reconstruction (what the decoder can do at all);
    - controls: the same decoders fed *another* vector's input (``v'``), and the mean image.
      MSE rewards blurry averages, so a number means something only next to its control: a
      latent correspondence shows as ``mse_direct`` (or ``mse_affine``) clearly below
      ``mse_direct_control`` (``mse_affine_control``).

    And ``E(FD(v))`` against ``v_hat``: the correlation matrix, and the R² (held out) per
    parameter of the best affine map from codes back to parameters and of a 5-nearest-neighbour
    regression (which also finds non-linear, but smooth, correspondences).

    Args:
        source: an AAE :class:`~ganport.trainer.evaluation.ModelSource` with ``latent_dim`` 4.
        out_dir: output folder.
        n: parameter vectors in the picture and the per-vector MSE table.
        fit_n: parameter vectors used to fit the affine maps.
        seed: seed of the parameter draw.
        iterations: attractor iterations (default: the model's training option, else 200).

    Returns:
        The summary (also written as ``fractal_summary.json``): ``normalisation``, mean MSEs
        ``mse_<name>`` for every :data:`MSE_COLUMNS` entry over ``max(n, 256)`` held-out
        vectors, ``r2_params_from_codes`` (affine), ``r2_params_from_codes_knn``,
        ``correlation`` (codes x params), ``verdict``, ``files``.

    Raises:
        InvalidInputError: not an AAE, or latent_dim is not 4.

    Example:
        >>> fractal_experiment(open_source("aae.pt"), "out/fractal")["verdict"]   # doctest: +SKIP
    """
    from ganport.trainer.datasets import load_dataset
    from ganport.trainer.datasets.fractal import DEFAULT_ITERATIONS, PARAM_NAMES

    if source.encode_fn is None:
        raise InvalidInputError(f"the fractal experiment needs an AAE (encoder and decoder), got a {source.kind}",
                                hint="ganport train aae --dataset fractal-dream --latent-dim 4")
    if source.latent_dim != len(PARAM_NAMES):
        raise InvalidInputError(f"the fractal experiment needs latent_dim {len(PARAM_NAMES)} (one per parameter "
                                f"a, b, c, d), this AAE has {source.latent_dim}",
                                hint="ganport train aae --dataset fractal-dream --latent-dim 4")
    if source.dataset and source.dataset != "fractal-dream":
        logger.warning("this AAE was trained on %r, not fractal-dream", source.dataset)
    for name, value, low in (("n", n, 2), ("fit_n", fit_n, 8)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise InvalidInputError(f"{name} must be an integer >= {low}, got {value!r}")
    channels, size = int(source.image_shape[0]), int(source.image_shape[1])
    iterations = int(iterations or source.dataset_options.get("iterations", DEFAULT_ITERATIONS))
    n_eval = max(n, FRACTAL_EVAL_N)
    data = load_dataset("fractal-dream", image_size=size, n=n_eval + fit_n, seed=seed, split="test",
                        palette=channels, iterations=iterations)
    held, fit = slice(0, n_eval), slice(n_eval, None)
    v_all = data.params
    v_hat_all = normalise_params(v_all)
    codes_all = source.encode(data.images)

    to_codes = _affine_fit(v_hat_all[fit], codes_all[fit])      # parameters -> codes
    to_params = _affine_fit(codes_all[fit], v_hat_all[fit])     # codes -> parameters
    target, v_hat = data.images[held], v_hat_all[held]
    other = np.roll(np.arange(n_eval), 1)  # v' = the previous vector (a random other one)
    direct = source.generate(v_hat)
    affine = source.generate(_affine_apply(to_codes, v_hat))
    recon = source.generate(codes_all[held])
    mean_image = np.broadcast_to(data.images[fit].mean(axis=0), target.shape)
    mse = {"direct": _per_image_mse(direct, target), "direct_control": _per_image_mse(direct[other], target),
           "affine": _per_image_mse(affine, target), "affine_control": _per_image_mse(affine[other], target),
           "reconstruction": _per_image_mse(recon, target), "mean_image": _per_image_mse(mean_image, target)}
    r2 = _r2(v_hat, _affine_apply(to_params, codes_all[held]))
    r2_knn = _r2(v_hat, _knn_regress(codes_all[fit], v_hat_all[fit], codes_all[held]))
    corr = np.corrcoef(codes_all.T, v_hat_all.T)[:4, 4:]

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    show = slice(0, n)
    files = {"side_by_side": _fractal_picture(out / "fractal_side_by_side.png", target[show], direct[show],
                                              affine[show], recon[show])}
    files["mse_csv"], files["mse_md"] = _fractal_mse_tables(out, v_all[show], {k: v[show] for k, v in mse.items()},
                                                            {k: float(v.mean()) for k, v in mse.items()}, n_eval)
    files["latent_csv"] = out / "fractal_latent.csv"
    with files["latent_csv"].open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["index", *PARAM_NAMES, *(f"{p}_hat" for p in PARAM_NAMES),
                         *(f"z{i}" for i in range(source.latent_dim)), "held_out"])
        for i in range(len(v_all)):
            writer.writerow([i, *np.round(v_all[i], 5), *np.round(v_hat_all[i], 5), *np.round(codes_all[i], 5),
                             int(i < n_eval)])
    means = {f"mse_{k}": float(v.mean()) for k, v in mse.items()}
    summary = {
        "model": source.description, "n": n, "n_eval": n_eval, "fit_n": fit_n, "seed": seed,
        "iterations": iterations, "image_shape": list(source.image_shape),
        "normalisation": "v_hat_i = (v_i - (low_i + high_i)/2) / ((high_i - low_i)/sqrt(12)); "
                         "a, b in [-3, 3], c, d in [0.5, 1.5] -> mean 0, variance 1 under the uniform prior",
        "comparisons": dict(MSE_COLUMNS),
        **means,
        "r2_params_from_codes": dict(zip(PARAM_NAMES, r2)),
        "r2_params_from_codes_knn": dict(zip(PARAM_NAMES, r2_knn)),
        "correlation": {f"z{i}": dict(zip(PARAM_NAMES, np.round(corr[i], 4).tolist())) for i in range(4)},
        "code_mean": codes_all.mean(axis=0).tolist(), "code_std": codes_all.std(axis=0).tolist(),
        "verdict": _verdict(means, r2, r2_knn),
        "files": {k: str(v) for k, v in files.items()},
    }
    files["summary"] = out / "fractal_summary.json"
    summary["files"]["summary"] = str(files["summary"])
    files["summary"].write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _verdict(means: dict[str, float], r2: list[float], r2_knn: list[float]) -> str:
    """One sentence answering the experiment's question from its numbers."""
    def closer(name: str) -> bool:  # clearly better than the same decoder fed another vector's input
        return means[f"mse_{name}"] < 0.9 * means[f"mse_{name}_control"]

    parts = [f"reconstruction MSE {means['mse_reconstruction']:.3f} vs {means['mse_mean_image']:.3f} for the "
             "mean image"]
    if closer("direct"):
        parts.append(f"G(v_hat) matches FD(v) better than G(v_hat') ({means['mse_direct']:.3f} vs "
                     f"{means['mse_direct_control']:.3f}): the latent axes partly line up with the parameters")
    else:
        parts.append(f"G(v_hat) is no closer to FD(v) than G(v_hat') ({means['mse_direct']:.3f} vs "
                     f"{means['mse_direct_control']:.3f}): the latent axes are not the parameter axes")
    if closer("affine"):
        parts.append(f"an affine map of v does find matching codes ({means['mse_affine']:.3f} vs "
                     f"{means['mse_affine_control']:.3f})")
    else:
        parts.append(f"not even an affine map of v finds matching codes ({means['mse_affine']:.3f} vs "
                     f"{means['mse_affine_control']:.3f})")
    parts.append(f"the codes explain R² {np.mean(r2):.2f} of the parameters linearly "
                 f"(a, b, c, d: {', '.join(f'{x:.2f}' for x in r2)}) and {np.mean(r2_knn):.2f} through "
                 f"5 nearest neighbours ({', '.join(f'{x:.2f}' for x in r2_knn)})")
    return "; ".join(parts) + "."


def _fractal_picture(path: Path, target: np.ndarray, direct: np.ndarray, affine: np.ndarray,
                     recon: np.ndarray) -> Path:
    columns = [("FD(v)", target), ("G(v_hat)", direct), ("G(Av_hat+b)", affine), ("G(E(FD(v)))", recon)]
    tiles = [caption_image(make_grid(to_uint8(images), nrow=1, padding=_PAD), [title])
             for title, images in columns]
    return save_png(path, tile_images(tiles, ncol=len(tiles), gap=4))


def _fractal_mse_tables(out: Path, params: np.ndarray, mse: dict[str, np.ndarray], means: dict[str, float],
                        n_eval: int) -> tuple[Path, Path]:
    from ganport.trainer.datasets.fractal import PARAM_NAMES

    names = list(MSE_COLUMNS)
    header = ["index", *PARAM_NAMES, *(f"mse_{k}" for k in names)]
    rows = [[i, *(f"{x:.4f}" for x in params[i]), *(f"{mse[k][i]:.5f}" for k in names)] for i in range(len(params))]
    mean_row = [f"mean of {n_eval}", *([""] * len(PARAM_NAMES)), *(f"{means[k]:.5f}" for k in names)]
    csv_path = out / "fractal_mse.csv"
    with csv_path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
        writer.writerow(mean_row)
    md_path = out / "fractal_mse.md"
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in [*rows, mean_row]]
    legend = "\n".join(f"- `mse_{k}`: {text}" for k, text in MSE_COLUMNS.items())
    md_path.write_text(
        "# Fractal Dream latent correspondence: per-image MSE against FD(v)\n\n"
        f"Images in [-1, 1]; the last row averages {n_eval} held-out vectors.\n\n{legend}\n\n"
        + "\n".join(lines) + "\n")
    return csv_path, md_path
