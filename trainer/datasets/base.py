"""Core types of the data-set layer: :class:`DataInfo`, :class:`ImageDataset`, :class:`DatasetSpec`.

Every loader returns an :class:`ImageDataset` whose images are float32 ``[N, C, H, W]`` in
[-1, 1], so the trainer never needs to know where the pixels came from. :class:`DataInfo` is
the part that travels with a trained model (it goes into the checkpoint): the class names a
conditional generator was trained on and the image shape it produces.

This module also holds the small validation helpers the loaders share (``n`` caps, option
values, file errors), so every loader reports bad input the same way.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ganport.errors import DatasetError, SplitNotFoundError

logger = logging.getLogger(__name__)

#: Pixel range of every loaded image.
VALUE_RANGE = (-1.0, 1.0)


@dataclass
class DataInfo:
    """What a model needs to remember about the data it was trained on.

    Args:
        name: the registry name of the data set (``"glyphs"``, ``"mnist"``, ...).
        class_names: one name per label, in label order; empty when the set is unlabelled.
        image_shape: ``[C, H, W]`` of one image.
        value_range: pixel range, always ``[-1.0, 1.0]``.

    Example:
        >>> info = DataInfo("digits", [str(d) for d in range(10)], [1, 28, 28])
        >>> info.n_classes
        10
        >>> DataInfo.from_dict(info.to_dict()) == info
        True
    """

    name: str
    class_names: list[str] = field(default_factory=list)
    image_shape: list[int] = field(default_factory=list)
    value_range: list[float] = field(default_factory=lambda: list(VALUE_RANGE))

    @property
    def n_classes(self) -> int:
        """Number of classes (0 for an unlabelled set)."""
        return len(self.class_names)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-able dict (plain str/int/float/list values) for checkpoints."""
        return {
            "name": str(self.name),
            "class_names": [str(c) for c in self.class_names],
            "image_shape": [int(s) for s in self.image_shape],
            "value_range": [float(v) for v in self.value_range],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DataInfo:
        """Rebuild a :class:`DataInfo` from :meth:`to_dict` output.

        Raises:
            DatasetError: when a required key is missing or has the wrong type.
        """
        if not isinstance(data, Mapping):
            raise DatasetError(f"data info must be a mapping, got {type(data).__name__}")
        missing = [k for k in ("name", "image_shape") if k not in data]
        if missing:
            raise DatasetError(
                f"data info is missing {', '.join(missing)}",
                hint="expected keys name, class_names, image_shape, value_range",
            )
        try:
            shape = [int(s) for s in data["image_shape"]]
            class_names = [str(c) for c in data.get("class_names", [])]
            value_range = [float(v) for v in data.get("value_range", VALUE_RANGE)]
        except (TypeError, ValueError) as exc:
            raise DatasetError(f"data info has a malformed field: {exc}") from exc
        if len(shape) != 3 or min(shape) <= 0:
            raise DatasetError(f"data info image_shape must be [C, H, W] > 0, got {shape}")
        if len(value_range) != 2:
            raise DatasetError(f"data info value_range must be [low, high], got {value_range}")
        return cls(str(data["name"]), class_names, shape, value_range)


@dataclass
class ImageDataset:
    """A loaded data set held in memory.

    Args:
        images: float32 ``[N, C, H, W]`` in [-1, 1].
        labels: int64 ``[N]`` in ``[0, info.n_classes)``, or None when unlabelled.
        params: float32 ``[N, P]`` generating parameters (fractal-dream), or None.
        info: the :class:`DataInfo` describing the set.

    Example:
        >>> ds = load_dataset("digits", n=8)          # doctest: +SKIP
        >>> ds.images.shape, ds.labels.dtype
        ((8, 1, 28, 28), dtype('int64'))
    """

    images: np.ndarray
    labels: np.ndarray | None
    params: np.ndarray | None
    info: DataInfo

    def __post_init__(self) -> None:
        # Catch a loader bug here rather than as a shape error deep inside training.
        if self.images.ndim != 4 or self.images.dtype != np.float32:
            raise ValueError(f"images must be float32 [N, C, H, W], got {self.images.dtype} {self.images.shape}")
        n = len(self.images)
        if list(self.images.shape[1:]) != list(self.info.image_shape):
            raise ValueError(f"images shape {self.images.shape[1:]} != info.image_shape {self.info.image_shape}")
        if self.labels is not None and (self.labels.shape != (n,) or self.labels.dtype != np.int64):
            raise ValueError(f"labels must be int64 [{n}], got {self.labels.dtype} {self.labels.shape}")
        if self.params is not None and (
            self.params.ndim != 2 or len(self.params) != n or self.params.dtype != np.float32
        ):
            raise ValueError(f"params must be float32 [{n}, P], got {self.params.dtype} {self.params.shape}")

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, indices: np.ndarray | list[int]) -> ImageDataset:
        """Return a new data set holding only ``indices`` (same info)."""
        idx = np.asarray(indices, dtype=np.int64)
        return ImageDataset(
            images=self.images[idx],
            labels=None if self.labels is None else self.labels[idx],
            params=None if self.params is None else self.params[idx],
            info=self.info,
        )


#: Loader signature: ``loader(root, *, image_size, n, seed, split, **options) -> ImageDataset``.
Loader = Callable[..., ImageDataset]


@dataclass(frozen=True)
class DatasetSpec:
    """One row of the registry.

    Args:
        name: registry name.
        loader: the function building the data set.
        description: one line for ``ganport datasets``.
        options: option name -> one-line help (including its default); the only extra
            keyword arguments :func:`load_dataset` lets through.
        splits: the values ``split`` may take.
        needs_root: whether the set is read from files under ``root`` (for listings; the
            loader itself reports a missing root).
        reference_train_n: images the reference classifier of ``ganport eval`` trains on when
            not told otherwise; a generated set can render more than its default size (None:
            the whole training split).
    """

    name: str
    loader: Loader
    description: str
    options: Mapping[str, str] = field(default_factory=dict)
    splits: tuple[str, ...] = ("train", "test")
    needs_root: bool = False
    reference_train_n: int | None = None


# ---------------------------------------------------------------------------------------------
# Helpers shared by the loaders.


def subset_indices(total: int, n: int | None, seed: int) -> np.ndarray:
    """Indices of a deterministic random subset of ``n`` out of ``total`` (sorted), or all.

    Sorting keeps the file order, so the same ``(n, seed)`` always yields the same samples in
    the same order.
    """
    if n is None or n >= total:
        return np.arange(total, dtype=np.int64)
    rng = np.random.default_rng([int(seed), 0x5EB5E7])
    return np.sort(rng.choice(total, size=n, replace=False)).astype(np.int64)


def int_option(
    name: str, value: Any, *, dataset: str, low: int = 0, high: int | None = None, choices: tuple[int, ...] = ()
) -> int:
    """Validate an integer option (a range, or one of ``choices``), naming it in the error."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        # The CLI passes options as strings; accept "400" but not "4.5" or "many".
        try:
            if isinstance(value, str) and value.strip().lstrip("-").isdigit():
                value = int(value)
            else:
                raise ValueError
        except ValueError as exc:
            raise DatasetError(f"{dataset}: option {name}={value!r} must be an integer") from exc
    value = int(value)
    if choices:
        if value not in choices:
            raise DatasetError(
                f"{dataset}: option {name}={value} is not valid", hint=f"choose one of {', '.join(map(str, choices))}"
            )
        return value
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise DatasetError(f"{dataset}: option {name}={value} must be {bound}")
    return value


def float_option(name: str, value: Any, *, dataset: str, low: float, high: float) -> float:
    """Validate a float option in ``[low, high]``."""
    try:
        out = float(value)
    except (TypeError, ValueError) as exc:
        raise DatasetError(f"{dataset}: option {name}={value!r} must be a number") from exc
    if not (low <= out <= high):
        raise DatasetError(f"{dataset}: option {name}={out} must be in [{low}, {high}]")
    return out


def choice_option(name: str, value: Any, choices: tuple[str, ...], *, dataset: str) -> str:
    """Validate an option that must be one of ``choices``."""
    text = str(value)
    if text not in choices:
        raise DatasetError(
            f"{dataset}: option {name}={value!r} is not valid", hint=f"choose one of {', '.join(choices)}"
        )
    return text


def require_root(root: str | Path | None, dataset: str) -> Path:
    """Return ``root`` as an existing directory or raise :class:`DatasetError`."""
    if root is None:
        raise DatasetError(
            f"{dataset} is read from files on disk but no root folder was given",
            hint="pass root=<folder holding the files> (CLI: --data-root)",
        )
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DatasetError(f"{dataset}: root folder {path} does not exist or is not a folder")
    return path


def find_optional_file(root: Path, names: list[str], subdirs: list[str]) -> Path | None:
    """The first of ``names`` found in ``root``'s ``subdirs`` (``""`` = root itself), or None.

    A folder with one of the names holding a file with one of them counts too
    (``x/train-images-idx3-ubyte/train-images-idx3-ubyte``): unpacking ``name.gz`` with some
    tools makes that layout.
    """
    for folder in (root / s if s else root for s in subdirs):
        for name in names:
            if (folder / name).is_file():
                return folder / name
        for name in names:
            if (folder / name).is_dir():
                inner = next((folder / name / n for n in names if (folder / name / n).is_file()), None)
                if inner is not None:
                    return inner
    return None


def find_file(root: Path, names: list[str], subdirs: list[str], dataset: str, what: str) -> Path:
    """Find the first of ``names`` in ``root`` or one of its ``subdirs``.

    Args:
        root: the data root.
        names: acceptable file names, in order of preference (e.g. ``x`` then ``x.gz``).
        subdirs: subfolders of ``root`` to look in as well (``""`` is root itself).
        dataset: data set name for the message.
        what: what the file holds, for the message ("training images").

    Raises:
        SplitNotFoundError: (a :class:`DatasetError`) naming the file and every folder searched.
    """
    found = find_optional_file(root, names, subdirs)
    if found is not None:
        return found
    folders = [root / s if s else root for s in subdirs]
    searched = ", ".join(str(f) for f in folders if f.is_dir()) or str(root)
    raise SplitNotFoundError(
        f"{dataset}: {names[0]} not found ({what}); looked in {searched}",
        hint=f"put the file (or {names[-1]}) under {root}",
    )


def files_fingerprint(root: str | Path) -> str:
    """A short hash of every file under ``root``: relative path, size and modification time.

    Anything that replaces, repairs, adds or removes a data file changes it, so caches of what
    was computed from the files (the reference classifier of ``ganport eval``) are keyed by the
    files themselves, not by the folder's name. Names starting with "." are skipped (as the
    loaders skip them). Costs one ``stat`` per file.

    Returns:
        16 hex digits; ``"missing"`` when ``root`` is not a folder.

    Example:
        >>> files_fingerprint("/no/such/folder")
        'missing'
    """
    base = Path(root).expanduser()
    if not base.is_dir():
        return "missing"
    digest = hashlib.sha256()
    for folder, dirs, files in os.walk(base, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(f for f in files if not f.startswith(".")):
            path = Path(folder, name)
            try:
                stat = path.stat()
            except OSError:  # a dangling link: it changes the fingerprint when it is fixed
                digest.update(f"{path.relative_to(base)}\0-\n".encode())
                continue
            digest.update(f"{path.relative_to(base)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]
