"""Loader for ``folder``: any folder of images (Simpsons faces, CelebA, your own photos).

Every ``.png``, ``.jpg``, ``.jpeg``, ``.bmp`` and ``.webp`` file under ``root`` is used
(recursively, in sorted path order; names starting with "." are skipped, e.g. macOS ``._x.jpg``
resource forks). Each image is EXIF-rotated, centre-cropped to a square and resized (bicubic)
to ``image_size`` (default 64), as RGB (``channels=3``, default) or grayscale (``channels=1``).

Pixel formats: 16-bit grayscale (Pillow modes ``I;16*``, ``I``) is scaled to 8 bits (65535 -> 255),
never clipped. Images with transparency (RGBA, LA, PA, a palette or grey with a transparent colour)
are composited over a background (option ``background``): ``auto`` (default) picks, per image,
the one that contrasts with the visible pixels (white behind dark ink, black behind light ink),
so black ink on a transparent page loads as black on white rather than as a blank image;
``white`` or ``black`` force one.

With ``labels="subfolders"`` every immediate subfolder of ``root`` is a class (sorted names);
images lying directly in ``root`` are then an error rather than silently unlabelled.

A folder has no official test split: ``split="test"`` needs ``test_fraction`` > 0, which holds
out that fraction of the files (a fixed random choice, independent of ``seed``); ``"train"``
then gets the rest. With the default ``test_fraction=0`` ``"train"`` is every image.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from ganport.errors import DatasetError, SplitNotFoundError

from .base import DataInfo, ImageDataset, choice_option, float_option, int_option, require_root, subset_indices
from .imageops import uint8_to_signed

logger = logging.getLogger(__name__)

NAME = "folder"
EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
DEFAULT_SIZE = 64
_HOLDOUT_SEED = 0x70F01D  # fixed: the test part must not move when the user's seed changes
#: Values of the ``background`` option: what transparent pixels become.
BACKGROUNDS = ("auto", "white", "black")
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def list_images(root: Path) -> list[Path]:
    """Image files under ``root`` in sorted order, skipping hidden names.

    Example:
        >>> list_images(Path("faces"))[:1]   # doctest: +SKIP
        [PosixPath('faces/0001.png')]
    """
    files = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if any(part.startswith(".") for part in relative.parts):
            continue
        if path.suffix.lower() in EXTENSIONS and path.is_file():
            files.append(path)
    return files


def _eight_bit(image: Image.Image) -> Image.Image:
    """16- and 32-bit integer grayscale scaled to mode ``L`` (Pillow's own conversion clips at 255)."""
    if image.mode.startswith("I;16"):
        scale = 257.0  # 65535 -> 255
    elif image.mode == "I":
        # Pillow opens some 16-bit files as 32-bit "I"; values above 255 can only mean 16 bits.
        scale = 257.0 if np.asarray(image).max(initial=0) > 255 else 1.0
    else:
        return image
    values = np.asarray(image, np.float64) / scale
    return Image.fromarray(np.clip(np.round(values), 0, 255).astype(np.uint8), "L")


def _flatten_alpha(image: Image.Image, background: str) -> Image.Image:
    """Composite an image with transparency over ``background`` (see the module docstring)."""
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    elif image.mode in ("L", "RGB") and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode not in _ALPHA_MODES:
        return image
    rgba = image.convert("RGBA")
    if background == "auto":
        alpha = np.asarray(rgba.getchannel("A"), np.float64)
        gray = np.asarray(rgba.convert("L"), np.float64)
        ink = (gray * alpha).sum() / alpha.sum() if alpha.sum() > 0 else 255.0
        background = "white" if ink < 128 else "black"
    fill = (255, 255, 255, 255) if background == "white" else (0, 0, 0, 255)
    return Image.alpha_composite(Image.new("RGBA", rgba.size, fill), rgba).convert("RGB")


def read_image(path: Path, size: int, channels: int, background: str = "auto") -> np.ndarray:
    """Decode, centre-crop and resize one image to uint8 ``[channels, size, size]``.

    Args:
        path: the image file.
        size: output side in pixels.
        channels: 3 (RGB) or 1 (grayscale).
        background: what transparent pixels become: ``auto``, ``white`` or ``black``.

    Raises:
        DatasetError: naming the file when it cannot be decoded.
    """
    try:
        with Image.open(path) as opened:
            image = ImageOps.exif_transpose(opened)
            image = _flatten_alpha(_eight_bit(image), background)
            image = image.convert("RGB" if channels == 3 else "L")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DatasetError(f"{path}: cannot be read as an image ({exc})", hint="remove or replace the file") from exc
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    # Crop first: resize(box=...) would let the filter reach pixels outside the square.
    image = image.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.BICUBIC)
    pixels = np.asarray(image, np.uint8)
    return pixels[None] if channels == 1 else pixels.transpose(2, 0, 1)


def _split_files(files: list[Path], split: str, test_fraction: float) -> list[Path]:
    if test_fraction == 0:
        if split == "test":
            raise SplitNotFoundError(
                f"{NAME}: a folder has no test split", hint="pass test_fraction=0.1 to hold out 10% of the images"
            )
        return files
    n_test = max(1, round(test_fraction * len(files)))
    held_out = np.zeros(len(files), bool)
    held_out[np.random.default_rng(_HOLDOUT_SEED).permutation(len(files))[:n_test]] = True
    return [f for f, t in zip(files, held_out) if t == (split == "test")]


def load_folder(
    root,
    *,
    image_size: int | None = None,
    n: int | None = None,
    seed: int = 0,
    split: str = "train",
    labels: str = "none",
    channels: int = 3,
    test_fraction: float = 0.0,
    background: str = "auto",
) -> ImageDataset:
    """Load a folder of images.

    Args:
        root: the folder.
        image_size: output side (default 64).
        n: cap on the number of images (a deterministic subset given ``seed``; only those
            files are decoded).
        seed: picks the subset.
        split: ``"train"`` or ``"test"`` (see ``test_fraction``).
        labels: ``"none"`` (default) or ``"subfolders"`` (immediate subfolders are classes).
        channels: 3 (RGB, default) or 1 (grayscale).
        test_fraction: fraction of files held out as the test split (default 0: no test split).
        background: what transparent pixels become: ``auto`` (default: white behind dark
            content, black behind light), ``white`` or ``black``.

    Returns:
        ImageDataset ``[N, channels, size, size]``.

    Example:
        >>> ds = load_dataset("folder", "~/data/simpsons", image_size=64, n=5000)  # doctest: +SKIP
    """
    labels = choice_option("labels", labels, ("none", "subfolders"), dataset=NAME)
    channels = int_option("channels", channels, dataset=NAME, choices=(1, 3))
    test_fraction = float_option("test_fraction", test_fraction, dataset=NAME, low=0.0, high=0.9)
    background = choice_option("background", background, BACKGROUNDS, dataset=NAME)
    base = require_root(root, NAME)
    size = image_size or DEFAULT_SIZE

    files = list_images(base)
    if not files:
        raise DatasetError(
            f"{NAME}: no images found under {base}", hint=f"expected files ending in {', '.join(EXTENSIONS)}"
        )
    classes: list[str] = []
    if labels == "subfolders":
        loose = [f for f in files if f.parent == base]
        if loose:
            raise DatasetError(
                f"{NAME}: labels='subfolders' but {len(loose)} image(s) lie directly in {base}, e.g. {loose[0].name}",
                hint="move them into a class subfolder, or use labels='none'",
            )
        classes = sorted({f.relative_to(base).parts[0] for f in files})
    files = _split_files(files, split, test_fraction)
    files = [files[i] for i in subset_indices(len(files), n, seed)]

    pixels = np.empty((len(files), channels, size, size), np.uint8)
    for i, path in enumerate(files):
        pixels[i] = read_image(path, size, channels, background)
    images = uint8_to_signed(pixels)
    label_array = None
    if classes:
        index = {name: i for i, name in enumerate(classes)}
        label_array = np.array([index[f.relative_to(base).parts[0]] for f in files], np.int64)
    logger.info("folder: %d images from %s (%d classes)", len(files), base, len(classes))
    return ImageDataset(images, label_array, None, DataInfo(NAME, classes, [channels, size, size]))
