"""Loaders for the IDX-format sets: ``mnist``, ``fashion-mnist`` and ``emnist``.

One reader (:func:`read_idx`) serves all three. IDX files start with a big-endian magic number
``0x00000800 | ndim`` (for uint8 data), then ``ndim`` big-endian uint32 dimensions, then the
raw bytes. Files may be gzipped or not (told by their first bytes, not their names), and are looked
up in ``root`` and the usual subfolders (``raw/``, torchvision's ``MNIST/raw/``, EMNIST's
``gzip/``...), also one level down in a folder named like the file
(``train-images-idx3-ubyte/train-images-idx3-ubyte``, what some unpacking tools make).

EMNIST stores each image transposed (column-major); the loader transposes it back so letters
are upright. Its class names come from ``emnist-<variant>-mapping.txt`` ("label ascii [ascii]"
per line) when present, else from the standard mapping of that variant. Labels are renumbered
0..K-1 in mapping order, so the ``letters`` variant (labels 1..26 on disk) becomes 0..25 with
class names "A".."Z" (the upper-case code of each merged upper/lower-case pair).

The EMNIST variant is the option ``variant`` (byclass, bymerge, balanced, letters, digits,
mnist; default byclass), because ``split`` already means train/test for every data set.
"""

from __future__ import annotations

import gzip
import logging
import string
import zlib
from pathlib import Path

import numpy as np

from ganport.errors import DatasetError

from .base import (
    DataInfo,
    ImageDataset,
    choice_option,
    find_file,
    find_optional_file,
    require_root,
    subset_indices,
)
from .imageops import finish_uint8

logger = logging.getLogger(__name__)

MNIST_CLASSES = [str(d) for d in range(10)]
FASHION_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip

_BALANCED = list(string.digits + string.ascii_uppercase) + list("abdefghnqrt")
#: Standard class names per EMNIST variant, used when the mapping file is absent.
EMNIST_CLASSES: dict[str, list[str]] = {
    "byclass": list(string.digits + string.ascii_uppercase + string.ascii_lowercase),
    "bymerge": _BALANCED,
    "balanced": _BALANCED,
    "letters": list(string.ascii_uppercase),
    "digits": list(string.digits),
    "mnist": list(string.digits),
}
#: First on-disk label of each variant (letters counts from 1).
_EMNIST_FIRST_LABEL = {"letters": 1}

_UINT8 = 0x08
_WHAT = {1: "labels", 3: "images"}


# ---------------------------------------------------------------------------------------------
# IDX reading


#: The first two bytes of every gzip stream.
GZIP_MAGIC = b"\x1f\x8b"


def read_bytes(path: Path) -> bytes:
    """Read ``path``, decompressing it when it is gzip data; errors name the file.

    Whether the file is gzipped is read from its first two bytes (``1f 8b``), not from its name:
    mirrors and unpacking tools leave plain files named ``.gz`` and gzip files without it.
    """
    try:
        with path.open("rb") as handle:
            gzipped = handle.read(2) == GZIP_MAGIC
    except OSError as exc:
        raise DatasetError(f"{path.name}: cannot be read ({exc})", hint=f"check the file {path}") from exc
    try:
        if gzipped:
            with gzip.open(path, "rb") as handle:
                return handle.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        kind = "gzip data is corrupt or truncated" if gzipped else "cannot be read"
        raise DatasetError(f"{path.name}: {kind} ({exc})", hint=f"re-extract or re-download {path}") from exc


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Read an IDX file of uint8 data with ``ndim`` dimensions.

    Args:
        path: the file (gzip data is decompressed, whatever its name).
        ndim: expected number of dimensions (1 = labels, 3 = images).

    Returns:
        uint8 array of the dimensions stored in the header.

    Raises:
        DatasetError: naming the file, for a bad magic number, short header, or a data size
            that does not match the header.

    Example:
        >>> read_idx(Path("train-labels-idx1-ubyte.gz"), 1)[:3]   # doctest: +SKIP
        array([5, 0, 4], dtype=uint8)
    """
    raw = read_bytes(path)
    expected_magic = (_UINT8 << 8) | ndim
    what = f"IDX uint8 {_WHAT.get(ndim, f'{ndim}-d data')}"
    if len(raw) < 4:
        raise DatasetError(f"{path.name}: file is {len(raw)} bytes, too short for an IDX header ({what})")
    magic = int.from_bytes(raw[:4], "big")
    if magic != expected_magic:
        raise DatasetError(f"{path.name}: bad magic 0x{magic:08x}, expected 0x{expected_magic:08x} ({what})")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(f"{path.name}: truncated IDX header, expected {header} bytes, found {len(raw)}")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    size = int(np.prod(dims, dtype=np.int64))
    found = len(raw) - header
    if found != size:
        problem = "truncated" if found < size else "has trailing data"
        raise DatasetError(
            f"{path.name}: {problem}: header says {'x'.join(map(str, dims))} = {size} bytes of data, found {found}"
        )
    return np.frombuffer(raw, np.uint8, count=size, offset=header).reshape(dims)


def _idx_candidates(name: str) -> list[str]:
    # The plain name, its .gz, and the dotted spelling some mirrors use (train-images.idx3-ubyte).
    dotted = name.replace("-idx", ".idx")
    return [name, name + ".gz", dotted, dotted + ".gz"]


def _load_idx_pair(
    dataset: str,
    root: Path,
    images_name: str,
    labels_name: str,
    subdirs: list[str],
    n_classes: int | None,
    n: int | None,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, Path]:
    """Read matching image/label IDX files; return the ``n`` subset (uint8 images, labels) and the
    labels file.

    ``n_classes`` None leaves the label range to the caller (EMNIST checks it against its mapping).
    Neither file present raises :class:`~ganport.errors.SplitNotFoundError` (the split is absent);
    only one of them a plain :class:`DatasetError` (the split is incomplete).
    """
    image_names, label_names = _idx_candidates(images_name), _idx_candidates(labels_name)
    image_path = find_optional_file(root, image_names, subdirs)
    label_path = find_optional_file(root, label_names, subdirs)
    if image_path is None and label_path is None:
        find_file(root, image_names, subdirs, dataset, "IDX uint8 images")  # raises, naming the folders
    if image_path is None or label_path is None:
        found, missing = (image_path, labels_name) if label_path is None else (label_path, images_name)
        raise DatasetError(
            f"{dataset}: found {found} but not {missing} beside it",
            hint=f"the split needs both files; put {missing}[.gz] next to {found.name}",
        )
    images = read_idx(image_path, 3)
    labels = read_idx(label_path, 1)
    if len(images) != len(labels):
        raise DatasetError(
            f"{dataset}: {image_path.name} holds {len(images)} images but {label_path.name} holds {len(labels)} labels",
            hint="the two files must come from the same split",
        )
    if n_classes is not None and len(labels) and int(labels.max()) >= n_classes:
        raise DatasetError(f"{label_path.name}: label {int(labels.max())} out of range 0..{n_classes - 1}")
    keep = subset_indices(len(labels), n, seed)
    logger.info("%s: read %d images from %s", dataset, len(keep), image_path)
    return images[keep], labels[keep].astype(np.int64), label_path


def _make_dataset(name: str, images: np.ndarray, labels: np.ndarray, classes: list[str], image_size):
    pixels = finish_uint8(images[:, None], image_size)
    return ImageDataset(pixels, labels, None, DataInfo(name, list(classes), list(pixels.shape[1:])))


# ---------------------------------------------------------------------------------------------
# MNIST and Fashion-MNIST


def _mnist_like(name: str, classes: list[str], subdirs: list[str]):
    def load(root, *, image_size=None, n=None, seed=0, split="train") -> ImageDataset:
        folder = require_root(root, name)
        prefix = "train" if split == "train" else "t10k"
        images, labels, _ = _load_idx_pair(
            name,
            folder,
            f"{prefix}-images-idx3-ubyte",
            f"{prefix}-labels-idx1-ubyte",
            subdirs,
            len(classes),
            n,
            seed,
        )
        return _make_dataset(name, images, labels, classes, image_size)

    load.__name__ = f"load_{name.replace('-', '_')}"
    load.__doc__ = f"""Load {name} from IDX files under ``root`` (see the module docstring).

    Args:
        root: folder holding ``train-images-idx3-ubyte[.gz]`` etc. (or a ``raw/`` subfolder).
        image_size: resize to this side (natural size 28).
        n: cap on the number of samples (deterministic subset given ``seed``).
        seed: picks the subset.
        split: ``"train"`` or ``"test"`` (the ``t10k-*`` files).

    Returns:
        ImageDataset ``[N, 1, 28, 28]`` with labels 0..9.

    Example:
        >>> ds = load_dataset("{name}", "~/data/{name}", n=1000)   # doctest: +SKIP
    """
    return load


load_mnist = _mnist_like("mnist", MNIST_CLASSES, ["", "raw", "MNIST/raw", "mnist", "mnist/raw"])
load_fashion_mnist = _mnist_like(
    "fashion-mnist",
    FASHION_CLASSES,
    ["", "raw", "FashionMNIST/raw", "fashion-mnist", "fashion_mnist", "fashion-mnist/raw"],
)


# ---------------------------------------------------------------------------------------------
# EMNIST


def read_emnist_mapping(path: Path) -> dict[int, str]:
    """Parse ``emnist-<variant>-mapping.txt``: ``label ascii_code [ascii_code ...]`` per line.

    Returns:
        on-disk label -> class name (the character of the first code).

    Raises:
        DatasetError: naming the file and line for a malformed line.
    """
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path.name}: cannot be read ({exc})") from exc
    mapping: dict[int, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        try:
            label, code = int(fields[0]), int(fields[1])
            name = chr(code)
        except (ValueError, IndexError, OverflowError) as exc:
            raise DatasetError(f"{path.name}: line {number} is {line!r}, expected 'label ascii_code'") from exc
        mapping[label] = name
    if not mapping:
        raise DatasetError(f"{path.name}: no 'label ascii_code' lines found")
    return mapping


def load_emnist(root, *, image_size=None, n=None, seed=0, split="train", variant: str = "byclass") -> ImageDataset:
    """Load EMNIST from ``emnist-<variant>-{train,test}-{images,labels}-idx?-ubyte[.gz]``.

    Args:
        root: folder holding the files (or its ``gzip/`` / ``raw/`` subfolder).
        image_size: resize to this side (natural size 28).
        n: cap on the number of samples (deterministic subset given ``seed``).
        seed: picks the subset.
        split: ``"train"`` or ``"test"``.
        variant: byclass (default), bymerge, balanced, letters, digits or mnist.

    Returns:
        ImageDataset ``[N, 1, 28, 28]``, upright (the on-disk transpose is undone), labels
        renumbered 0..K-1 in mapping order.

    Example:
        >>> ds = load_emnist("~/data/emnist", variant="letters")   # doctest: +SKIP
        >>> ds.info.class_names[:3]
        ['A', 'B', 'C']
    """
    variant = choice_option("variant", variant, tuple(EMNIST_CLASSES), dataset="emnist")
    folder = require_root(root, "emnist")
    subdirs = ["", "gzip", "raw", "EMNIST/raw", "emnist", "emnist/gzip"]
    mapping_name = f"emnist-{variant}-mapping.txt"
    mapping_path = find_optional_file(folder, [mapping_name], subdirs)
    if mapping_path is not None:
        mapping = read_emnist_mapping(mapping_path)
    else:
        first = _EMNIST_FIRST_LABEL.get(variant, 0)
        mapping = {first + i: c for i, c in enumerate(EMNIST_CLASSES[variant])}
        logger.info("emnist: %s not found, using the standard %s mapping", mapping_name, variant)
    disk_labels = sorted(mapping)
    classes = [mapping[k] for k in disk_labels]

    images, labels, label_path = _load_idx_pair(
        "emnist",
        folder,
        f"emnist-{variant}-{split}-images-idx3-ubyte",
        f"emnist-{variant}-{split}-labels-idx1-ubyte",
        subdirs,
        None,  # the range is the mapping's, checked below
        n,
        seed,
    )
    # Renumber on-disk labels (possibly 1-based or sparse) to 0..K-1 in mapping order.
    size = max(max(disk_labels), int(labels.max(initial=0))) + 1
    lookup = np.full(size, -1, np.int64)
    lookup[disk_labels] = np.arange(len(disk_labels))
    renumbered = lookup[labels]
    if (renumbered < 0).any():
        bad = np.unique(labels[renumbered < 0]).tolist()
        listed = f"labels {disk_labels[0]}..{disk_labels[-1]}" if disk_labels else "no labels"
        if mapping_path is not None:
            # The labels file is the bigger, checksummed download; a short or other-variant
            # mapping file is the likelier culprit.
            raise DatasetError(
                f"{mapping_path.name}: lists {len(disk_labels)} classes ({listed}) but {label_path.name} "
                f"holds label{'s' if len(bad) > 1 else ''} {', '.join(map(str, bad[:5]))}",
                hint=f"the mapping file is short or of another variant; replace it with the {variant} "
                     f"mapping of the EMNIST archive, or delete it to use the standard {variant} classes",
            )
        raise DatasetError(
            f"{label_path.name}: labels {bad[:5]} are outside the standard {variant} mapping ({listed})",
            hint=f"check that the files are EMNIST {variant}, or add {mapping_name}",
        )
    labels = renumbered
    # EMNIST images are stored transposed (column-major); make them upright.
    images = np.ascontiguousarray(images.transpose(0, 2, 1))
    return _make_dataset("emnist", images, labels, classes, image_size)
