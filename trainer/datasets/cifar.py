"""Loaders for ``cifar10`` and ``cifar100`` from the official "python version" batches.

The files are Python pickles of plain dicts (``data``: uint8 ``[N, 3072]`` as three 32x32
planes R, G, B; ``labels`` or ``fine_labels``/``coarse_labels``: lists of ints). They were
written by Python 2, so they are read with ``encoding="bytes"`` and their keys come back as
bytes; both bytes and str keys are accepted.

Unpickling can run arbitrary code, so :class:`SafeUnpickler` only resolves the few globals
needed to rebuild numpy arrays; any other global (``os.system``...) is refused before it can
be called, and the loader reports the file as malformed.

Layout: ``cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}`` and
``cifar-100-python/{train, test, meta}`` under ``root`` (or those files directly in ``root``).
``cifar100`` takes ``label_mode`` = ``fine`` (100 classes, default) or ``coarse`` (20).
"""

from __future__ import annotations

import codecs
import io
import logging
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from ganport.errors import DatasetError

from .base import DataInfo, ImageDataset, choice_option, find_file, require_root, subset_indices
from .imageops import finish_uint8

logger = logging.getLogger(__name__)

_PIXELS = 3 * 32 * 32

# The callables numpy's pickles refer to, taken from numpy itself so the table is right for
# both numpy 1 ("numpy.core") and numpy 2 ("numpy._core") module paths.
_reconstruct = np.empty(0).__reduce__()[0]
_scalar = np.float64(0).__reduce__()[0]
_frombuffer = np.empty(1).__reduce_ex__(5)[0]
_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    # Python 3 writes bytes at protocol 2 as _codecs.encode(text, "latin1").
    ("_codecs", "encode"): codecs.encode,
}
for _core in ("numpy.core", "numpy._core"):
    _ALLOWED[(f"{_core}.multiarray", "_reconstruct")] = _reconstruct
    _ALLOWED[(f"{_core}.multiarray", "scalar")] = _scalar
    _ALLOWED[(f"{_core}.numeric", "_frombuffer")] = _frombuffer


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that can rebuild dicts, lists and numpy arrays, and nothing else.

    Example:
        >>> SafeUnpickler(io.BytesIO(pickle.dumps({"a": [1]})), encoding="bytes").load()
        {'a': [1]}
    """

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError as exc:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a data file") from exc


def read_pickle(path: Path) -> dict[str, Any]:
    """Safely unpickle a CIFAR batch or meta file into a dict with str keys.

    Raises:
        DatasetError: naming the file when it cannot be read, is not a pickled dict, or refers
            to anything but numpy arrays.
    """
    try:
        data = SafeUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
    except OSError as exc:
        raise DatasetError(f"{path.name}: cannot be read ({exc})") from exc
    except Exception as exc:  # noqa: BLE001 - unpickling a foreign file can raise almost anything
        raise DatasetError(
            f"{path.name}: not a CIFAR python batch ({type(exc).__name__}: {exc})",
            hint="expected a pickled dict from the 'CIFAR python version' archive",
        ) from exc
    if not isinstance(data, dict):
        raise DatasetError(f"{path.name}: expected a pickled dict, found {type(data).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in data.items()}


def _field(data: dict[str, Any], key: str, path: Path) -> Any:
    if key not in data:
        raise DatasetError(f"{path.name}: missing key {key!r} (found {', '.join(sorted(data)) or 'none'})")
    return data[key]


def _names(data: dict[str, Any], key: str, path: Path, count: int) -> list[str]:
    names = [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in _field(data, key, path)]
    if len(names) != count:
        raise DatasetError(f"{path.name}: {key} lists {len(names)} names, expected {count}")
    return names


def _read_batch(path: Path, label_key: str, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """``(uint8 [N, 3, 32, 32], int64 [N])`` from one batch file, validated."""
    data = read_pickle(path)
    pixels = _field(data, "data", path)
    labels = np.asarray(_field(data, label_key, path))
    if not isinstance(pixels, np.ndarray) or pixels.dtype != np.uint8 or pixels.ndim != 2 or pixels.shape[1] != _PIXELS:
        shape = getattr(pixels, "shape", type(pixels).__name__)
        raise DatasetError(
            f"{path.name}: 'data' is {getattr(pixels, 'dtype', '')} {shape}, expected uint8 [N, {_PIXELS}]"
        )
    if labels.shape != (len(pixels),) or not np.issubdtype(labels.dtype, np.integer):
        raise DatasetError(
            f"{path.name}: {label_key!r} has shape {labels.shape}, expected {len(pixels)} integer labels"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= n_classes):
        raise DatasetError(f"{path.name}: {label_key!r} values outside 0..{n_classes - 1}")
    return pixels.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _load(
    name: str,
    root,
    folder_name: str,
    batch_names: list[str],
    meta_name: str,
    names_key: str,
    label_key: str,
    n_classes: int,
    *,
    image_size,
    n,
    seed,
) -> ImageDataset:
    base = require_root(root, name)
    subdirs = [folder_name, ""]
    meta_path = find_file(base, [meta_name], subdirs, name, "class names")
    classes = _names(read_pickle(meta_path), names_key, meta_path, n_classes)
    parts = [
        _read_batch(find_file(base, [b], subdirs, name, "python batch"), label_key, n_classes) for b in batch_names
    ]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    keep = subset_indices(len(labels), n, seed)
    pixels = finish_uint8(images[keep], image_size)
    logger.info("%s: %d images from %s", name, len(keep), meta_path.parent)
    return ImageDataset(pixels, labels[keep], None, DataInfo(name, classes, list(pixels.shape[1:])))


def load_cifar10(root, *, image_size=None, n=None, seed=0, split="train") -> ImageDataset:
    """Load CIFAR-10 from ``cifar-10-batches-py``.

    Args:
        root: folder holding ``cifar-10-batches-py/`` (or the batch files themselves).
        image_size: resize to this side (natural size 32).
        n: cap on the number of samples (deterministic subset given ``seed``).
        seed: picks the subset.
        split: ``"train"`` (``data_batch_1..5``) or ``"test"`` (``test_batch``).

    Returns:
        ImageDataset ``[N, 3, 32, 32]``, class names from ``batches.meta``.

    Example:
        >>> load_dataset("cifar10", "~/data", n=500).info.class_names[0]   # doctest: +SKIP
        'airplane'
    """
    batches = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    return _load(
        "cifar10",
        root,
        "cifar-10-batches-py",
        batches,
        "batches.meta",
        "label_names",
        "labels",
        10,
        image_size=image_size,
        n=n,
        seed=seed,
    )


def load_cifar100(root, *, image_size=None, n=None, seed=0, split="train", label_mode: str = "fine") -> ImageDataset:
    """Load CIFAR-100 from ``cifar-100-python``.

    Args:
        root: folder holding ``cifar-100-python/`` (or ``train``/``test``/``meta`` directly).
        image_size: resize to this side (natural size 32).
        n: cap on the number of samples (deterministic subset given ``seed``).
        seed: picks the subset.
        split: ``"train"`` or ``"test"``.
        label_mode: ``"fine"`` (100 classes, default) or ``"coarse"`` (20 superclasses).

    Returns:
        ImageDataset ``[N, 3, 32, 32]``, class names from ``meta``.

    Example:
        >>> load_dataset("cifar100", "~/data", label_mode="coarse").info.n_classes  # doctest: +SKIP
        20
    """
    mode = choice_option("label_mode", label_mode, ("fine", "coarse"), dataset="cifar100")
    return _load(
        "cifar100",
        root,
        "cifar-100-python",
        [split],
        "meta",
        f"{mode}_label_names",
        f"{mode}_labels",
        100 if mode == "fine" else 20,
        image_size=image_size,
        n=n,
        seed=seed,
    )
