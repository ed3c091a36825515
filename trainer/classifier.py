"""Reference classifiers: the small CNN that judges generated images, one per data set.

Inception weights cannot be downloaded on the machines ganport is built for, so quality is
measured with a network trained by ganport itself on the same data set (see
:mod:`ganport.trainer.evaluation`). This module trains, caches and loads that network.

- Labelled sets (glyphs, digits, mnist, ...): a classifier of the set's classes. Its test
  accuracy is printed with every evaluation: a judge that cannot tell the classes apart on real
  images cannot score generated ones.
- Unlabelled sets with generating parameters (``fractal-dream``): the same network regresses the
  standardised parameter vector instead, and reports R² per parameter.

The penultimate layer (``feature_dim`` wide, after ReLU) is the feature space of the Fréchet
distance and of the precision/recall estimate.

Cache: one file per (data set, image size, options, data files) under ``cache_dir`` (default
``$GANPORT_CACHE_DIR`` or ``~/.cache/ganport/classifiers``), named
``<dataset>-<size>-<hash of the options>.pt``; for sets read from files the hash covers every
file under the data root (name, size, modification time), so repaired or replaced data gets a new
judge instead of the one trained on the old files. It is written atomically with
:func:`ganport.atomic.atomic_write` and holds only tensors, numbers, strings,
lists and dicts, so it loads with ``torch.load(weights_only=True)``.

Example::

    from ganport.trainer.classifier import ClassifierSpec, get_classifier
    clf = get_classifier(ClassifierSpec("digits", image_size=28))
    print(clf.test_metrics["accuracy"])          # ~0.99
    feats, logits = clf.embed(images)            # images float32 [N, 1, 28, 28] in [-1, 1]
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ganport.errors import CheckpointError, InvalidInputError, SplitNotFoundError

logger = logging.getLogger(__name__)

CLASSIFIER_FORMAT = "ganport.classifier"
#: Bump when the network or its training changes: old cache files are then ignored (retrained).
CLASSIFIER_VERSION = 3
TASKS = ("classification", "regression")
#: Images classified per forward pass at inference.
INFERENCE_BATCH = 512
#: At most this many test images are used to measure the classifier's own accuracy.
MAX_TEST_IMAGES = 10_000
# Share of the training split held out when a data set has no test split (a folder of images).
_HOLDOUT_FRACTION = 0.1
# Default training length: about this many images seen in total, within [min, max] epochs
# (glyphs: 4 epochs of 100,000 rendered images; digits: 60 epochs).
_TARGET_IMAGES = 250_000
_MIN_EPOCHS, _MAX_EPOCHS = 4, 60


class ReferenceNet(nn.Module):
    """The reference CNN: two conv blocks, a feature layer, a linear head.

    ``conv5x5/2 -> conv3x3/2 -> BN -> conv3x3 -> BN -> adaptive pool 4x4 -> Linear(feature_dim)
    -> ReLU`` (the features) ``-> dropout -> Linear(n_outputs)``. About 3 M multiply-adds per
    28x28 image: ~0.3 ms per training image on one CPU core.

    Args:
        in_channels: image channels.
        n_outputs: classes (classification) or parameters (regression).
        width: channels of the first convolution (doubled after it).
        feature_dim: width of the penultimate layer, the feature space of FD and precision/recall.
        dropout: dropout before the head (training only).

    Example:
        >>> net = ReferenceNet(1, 10); net.features(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 128])
    """

    def __init__(self, in_channels: int, n_outputs: int, width: int = 32, feature_dim: int = 128,
                 dropout: float = 0.3):
        super().__init__()
        self.init_args = {"in_channels": in_channels, "n_outputs": n_outputs, "width": width,
                          "feature_dim": feature_dim, "dropout": dropout}
        # Strided convolutions instead of full-resolution ones plus pooling: on a CPU the
        # per-pixel work at 28x28 (BN, ReLU, pooling) costs more than the convolutions themselves.
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 5, stride=2, padding=2), nn.ReLU(inplace=True),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(inplace=True),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(inplace=True),
            # A fixed 4x4 map keeps *where* strokes are (case of o/O, position of p/P), which a
            # global average would throw away; it also makes the head size-independent.
            nn.AdaptiveAvgPool2d(4), nn.Flatten(),
            nn.Linear(2 * width * 16, feature_dim), nn.ReLU(inplace=True),
        )
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(feature_dim, n_outputs))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate features ``[N, feature_dim]`` of images ``[N, C, H, W]`` in [-1, 1]."""
        return self.body(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(images))


@dataclass(frozen=True)
class ClassifierSpec:
    """Which reference network to train: the data and the training options (its cache key).

    Args:
        dataset: data set name, e.g. ``glyphs``.
        image_size: image side the generators produce (the set is resized to it).
        data_root: folder of a file-based data set.
        dataset_options: loader options as ``((key, value), ...)`` or a dict (e.g. palette=3).
        train_n: train on at most this many images of the training split (None: the data
            set's ``reference_train_n``, e.g. 100,000 rendered glyphs, else the whole split).
        epochs: passes over the training images (None: enough to see ~250k images, 4..60).
        batch_size: images per step.
        lr: peak learning rate of the one-cycle schedule (Adam).
        width: channels of the first convolution.
        feature_dim: width of the feature layer.
        shift: random translation of training images, in pixels (None: ``image_size // 28``,
            at least 1: more would blur the position cues between o/O or p/P).
        noise: share of training images given random pixel noise (Gaussian plus salt and pepper),
            so the judge reads shapes and does not fall apart on a generator's speckles.
        seed: seed of weights, data order and augmentation.
        data_fingerprint: identity of the data files (sets read from ``data_root``):
            :func:`~ganport.trainer.datasets.base.files_fingerprint` of the folder, filled in
            when None, so a repaired, replaced or added file gives another cache entry.

    Example:
        >>> ClassifierSpec("digits", 28).cache_name().startswith("digits-28-")
        True
    """

    dataset: str
    image_size: int
    data_root: str | None = None
    dataset_options: tuple[tuple[str, Any], ...] = ()
    train_n: int | None = None
    epochs: int | None = None
    batch_size: int = 128
    lr: float = 3e-3
    width: int = 32
    feature_dim: int = 128
    shift: int | None = None
    noise: float = 0.5
    seed: int = 0
    data_fingerprint: str | None = None

    def __post_init__(self) -> None:
        options = self.dataset_options
        if isinstance(options, dict):
            options = tuple(sorted((str(k), v) for k, v in options.items()))
        object.__setattr__(self, "dataset_options", tuple(options))
        if not isinstance(self.image_size, int) or self.image_size < 4:
            raise InvalidInputError(f"classifier image_size must be an integer >= 4, got {self.image_size!r}")
        if self.data_fingerprint is None and self.data_root is not None and _reads_files(self.dataset):
            from ganport.trainer.datasets.base import files_fingerprint

            object.__setattr__(self, "data_fingerprint", files_fingerprint(self.data_root))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict of every option (stored in the cache file)."""
        data = dataclasses.asdict(self)
        data["dataset_options"] = {k: v for k, v in self.dataset_options}
        return data

    def key(self) -> str:
        """Hash of everything that changes the trained network (format version included)."""
        # The default training length and set size are part of the recipe: changing them (here or
        # in the data-set registry) must not reuse old files.
        defaults = [_TARGET_IMAGES, _MIN_EPOCHS, _MAX_EPOCHS]
        fields = self.to_dict()
        if fields["data_fingerprint"] is None:
            del fields["data_fingerprint"]  # built-in sets keep the keys they had before it existed
        text = json.dumps({"version": CLASSIFIER_VERSION, "defaults": defaults, **fields,
                           "train_n": _train_n(self)}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def cache_name(self) -> str:
        """File name in the cache: ``<dataset>-<size>-<hash>.pt``."""
        safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in self.dataset)
        return f"{safe}-{self.image_size}-{self.key()}.pt"


@dataclass
class ReferenceClassifier:
    """A trained reference network and what it was measured to be worth.

    Args:
        net: the network, eval mode, CPU.
        task: ``classification`` or ``regression``.
        spec: the options it was trained with.
        class_names: class names in label order (classification), else empty.
        image_shape: ``[C, H, W]`` it takes.
        test_metrics: classification: ``accuracy``, ``per_class_accuracy``, ``n_test``;
            regression: ``r2`` (per parameter), ``r2_mean``, ``n_test``.
        target_mean: regression: mean of the parameters (targets are standardised).
        target_std: regression: standard deviation of the parameters.
        train_seconds: wall time of its training.
        path: the cache file it was loaded from or saved to.
    """

    net: ReferenceNet
    task: str
    spec: ClassifierSpec
    class_names: list[str]
    image_shape: list[int]
    test_metrics: dict[str, Any] = field(default_factory=dict)
    target_mean: list[float] = field(default_factory=list)
    target_std: list[float] = field(default_factory=list)
    train_seconds: float = 0.0
    path: Path | None = None

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @torch.no_grad()
    def embed(self, images: np.ndarray | torch.Tensor, batch_size: int = INFERENCE_BATCH) -> tuple[np.ndarray, np.ndarray]:
        """Features and outputs of images.

        Args:
            images: float32 ``[N, C, H, W]`` in [-1, 1] (numpy or torch).
            batch_size: images per forward pass.

        Returns:
            ``(features [N, feature_dim], outputs [N, n_outputs])`` as float32 numpy arrays:
            logits (classification) or standardised parameter estimates (regression).
        """
        tensor = torch.as_tensor(np.asarray(images, dtype=np.float32) if not torch.is_tensor(images) else images)
        if tensor.ndim != 4 or list(tensor.shape[1:]) != list(self.image_shape):
            raise InvalidInputError(f"the reference classifier takes images {self.image_shape}, got "
                                    f"{list(tensor.shape[1:]) if tensor.ndim == 4 else list(tensor.shape)}")
        self.net.eval()
        feats, outs = [], []
        for start in range(0, len(tensor), batch_size):
            chunk = tensor[start:start + batch_size].float()
            f = self.net.features(chunk)
            feats.append(f.numpy())
            outs.append(self.net.head(f).numpy())
        if not feats:
            dim = self.net.init_args["feature_dim"]
            return np.zeros((0, dim), np.float32), np.zeros((0, self.net.init_args["n_outputs"]), np.float32)
        return np.concatenate(feats), np.concatenate(outs)

    def predict(self, images: np.ndarray | torch.Tensor) -> np.ndarray:
        """Predicted class per image (classification only), int64 ``[N]``."""
        if self.task != "classification":
            raise InvalidInputError("predict() needs a classification network; this one regresses parameters")
        return self.embed(images)[1].argmax(axis=1).astype(np.int64)

    def describe(self) -> str:
        """One line: task, data and test score (printed by ``ganport eval``)."""
        m = self.test_metrics
        score = (f"test accuracy {m.get('accuracy', float('nan')):.2%}" if self.task == "classification"
                 else f"test R² {m.get('r2_mean', float('nan')):.3f}")
        return (f"reference {self.task} network for {self.spec.dataset} {self.image_shape}: {score} "
                f"on {m.get('n_test', 0)} held-out images")


# --------------------------------------------------------------------------------- data


@dataclass
class _Split:
    images: np.ndarray
    targets: np.ndarray  # int64 labels or float32 standardised params


def _load(spec: ClassifierSpec, split: str, n: int | None) -> Any:
    from ganport.trainer.datasets import load_dataset

    return load_dataset(spec.dataset, spec.data_root, image_size=spec.image_size, n=n, seed=spec.seed,
                        split=split, **dict(spec.dataset_options))


def _rows(data: Any, start: int | None, stop: int | None) -> Any:
    """Rows ``start:stop`` of an ImageDataset (images, labels and params together)."""
    return dataclasses.replace(data, images=data.images[start:stop],
                               labels=None if data.labels is None else data.labels[start:stop],
                               params=None if data.params is None else data.params[start:stop])


def _reads_files(dataset: str) -> bool:
    """Whether ``dataset`` is read from files under a root folder (registry ``needs_root``)."""
    from ganport.trainer.datasets.registry import REGISTRY

    row = REGISTRY.get(dataset)
    return bool(row is not None and row.needs_root)


def _train_n(spec: ClassifierSpec) -> int | None:
    """Training images to load: the spec's ``train_n``, else the data set's own default."""
    from ganport.trainer.datasets.registry import REGISTRY

    if spec.train_n is not None:
        return spec.train_n
    row = REGISTRY.get(spec.dataset)
    return row.reference_train_n if row is not None else None


def _split_training(spec: ClassifierSpec) -> tuple[Any, Any]:
    """For sets without a test split: ``(first 90%, last 10%)`` of the training split."""
    train = _load(spec, "train", _train_n(spec))
    cut = int(round(len(train.images) * (1 - _HOLDOUT_FRACTION)))
    return _rows(train, None, cut), _rows(train, cut, None)


def _no_test_split(spec: ClassifierSpec, exc: SplitNotFoundError) -> None:
    logger.warning("%s has no test split (%s); holding out %.0f%% of the training split",
                   spec.dataset, exc, 100 * _HOLDOUT_FRACTION)


def load_test_data(spec: ClassifierSpec, n: int = MAX_TEST_IMAGES) -> Any:
    """At most ``n`` held-out images: the test split, else the last 10% of the training split.

    Raises:
        DatasetError: the test split is there but malformed (only a *missing* split, a
            :class:`~ganport.errors.SplitNotFoundError`, falls back to the training split).
    """
    try:
        return _load(spec, "test", n)
    except SplitNotFoundError as exc:
        _no_test_split(spec, exc)
        return _rows(_split_training(spec)[1], None, n)


def load_reference_data(spec: ClassifierSpec) -> tuple[Any, Any]:
    """The training and held-out data of a reference network: ``(train, test)`` ImageDatasets.

    The test split is used when the set has one (at most :data:`MAX_TEST_IMAGES` images);
    when its files are missing the last 10% of the training split is held out. A test split
    that is present but malformed is an error, never a reason to fall back.
    """
    try:
        test = _load(spec, "test", MAX_TEST_IMAGES)
    except SplitNotFoundError as exc:
        _no_test_split(spec, exc)
        train, test = _split_training(spec)
        return train, _rows(test, None, MAX_TEST_IMAGES)
    return _load(spec, "train", _train_n(spec)), test


def task_for(data: Any) -> str:
    """``classification`` for labelled sets, ``regression`` for sets with parameters.

    Raises:
        InvalidInputError: the set has neither labels nor parameters to learn.
    """
    if data.labels is not None and data.info.n_classes >= 2:
        return "classification"
    if data.params is not None:
        return "regression"
    raise InvalidInputError(f"data set {data.info.name!r} has neither labels nor generating parameters, "
                            "so no reference network can be trained on it",
                            hint="evaluate on a labelled data set (glyphs, digits, mnist, ...) or fractal-dream")


def _random_shift(images: torch.Tensor, shift: int, generator: torch.Generator, fill: float) -> torch.Tensor:
    """Translate each image by a random integer offset in [-shift, shift] (background fill)."""
    if shift <= 0:
        return images
    n, c, h, w = images.shape
    padded = F.pad(images, (shift, shift, shift, shift), value=fill)
    dy = torch.randint(0, 2 * shift + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * shift + 1, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w))[:, None, None, :]
    return padded[torch.arange(n)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols]


def _random_noise(images: torch.Tensor, share: float, generator: torch.Generator,
                  value_range: tuple[float, float]) -> torch.Tensor:
    """Corrupt a random ``share`` of the images with Gaussian noise (sigma up to 10% of the
    range) and salt-and-pepper pixels (up to 5% of the pixels), each image its own strength."""
    if share <= 0:
        return images
    low, high = value_range
    n = images.shape[0]
    chosen = (torch.rand(n, generator=generator) < share).view(n, 1, 1, 1)
    sigma = torch.rand(n, 1, 1, 1, generator=generator) * 0.1 * (high - low)
    rate = torch.rand(n, 1, 1, 1, generator=generator) * 0.05
    draw = torch.rand(images.shape, generator=generator)
    noisy = images + sigma * torch.randn(images.shape, generator=generator)
    noisy = torch.where(draw < rate, torch.full_like(images, high), noisy)               # salt
    noisy = torch.where(draw > 1 - rate / 2, torch.full_like(images, low), noisy)        # pepper
    return torch.where(chosen, noisy.clamp(low, high), images)


def default_epochs(n_train: int) -> int:
    """Epochs to see about 250k images, clamped to [4, 60] (digits: 60, glyphs: 4)."""
    return int(min(_MAX_EPOCHS, max(_MIN_EPOCHS, math.ceil(_TARGET_IMAGES / max(n_train, 1)))))


def train_classifier(spec: ClassifierSpec, progress: Callable[[str], None] | None = None) -> ReferenceClassifier:
    """Train a reference network on the training split and measure it on the held-out split.

    Args:
        spec: data and training options.
        progress: called with one line per epoch (e.g. ``print``); default: the module logger.

    Returns:
        The trained :class:`ReferenceClassifier` (not yet saved).

    Raises:
        DatasetError: the data set cannot be loaded.
        InvalidInputError: the set has neither labels nor parameters.

    Example:
        >>> clf = train_classifier(ClassifierSpec("digits", 16, train_n=300, epochs=2))  # doctest: +SKIP
    """
    report = progress or logger.info
    started = time.perf_counter()
    train, test = load_reference_data(spec)
    task = task_for(train)
    image_shape = [int(v) for v in train.info.image_shape]
    if task == "classification":
        n_outputs = train.info.n_classes
        train_y = torch.from_numpy(train.labels.astype(np.int64))
        mean, std = [], []
    else:
        mean_arr = train.params.mean(axis=0)
        std_arr = train.params.std(axis=0) + 1e-6
        mean, std = mean_arr.tolist(), std_arr.tolist()
        n_outputs = train.params.shape[1]
        train_y = torch.from_numpy(((train.params - mean_arr) / std_arr).astype(np.float32))
    # The global RNG (weight init, dropout) is seeded too, so the same spec always gives the same
    # judge, whatever ran before in the process; the caller's RNG stream is left untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        net = ReferenceNet(image_shape[0], n_outputs, spec.width, spec.feature_dim)
        _fit(net, torch.from_numpy(np.ascontiguousarray(train.images)), train_y, task, spec,
             tuple(train.info.value_range), report)
    net.eval()
    clf = ReferenceClassifier(net, task, spec, list(train.info.class_names) if task == "classification" else [],
                              image_shape, target_mean=mean, target_std=std,
                              train_seconds=time.perf_counter() - started)
    clf.test_metrics = measure(clf, test)
    report(clf.describe() + f" (trained in {clf.train_seconds:.0f} s)")
    return clf


def _fit(net: ReferenceNet, x: torch.Tensor, y: torch.Tensor, task: str, spec: ClassifierSpec,
         value_range: tuple[float, float], report: Callable[[str], None]) -> None:
    """Train ``net`` on images ``x`` and targets ``y`` (one-cycle Adam, shift and noise augmentation)."""
    torch_gen = torch.Generator().manual_seed(spec.seed)
    n = len(x)
    batch = min(spec.batch_size, n)
    epochs = spec.epochs or default_epochs(n)
    steps_per_epoch = max(1, n // batch)
    optimizer = torch.optim.Adam(net.parameters(), lr=spec.lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=spec.lr, epochs=epochs,
                                                   steps_per_epoch=steps_per_epoch)
    shift = spec.shift if spec.shift is not None else max(1, spec.image_size // 28)
    net.train()
    for epoch in range(epochs):
        order = torch.randperm(n, generator=torch_gen)
        total_loss = 0.0
        for step in range(steps_per_epoch):
            idx = order[step * batch:(step + 1) * batch]
            images = _random_noise(_random_shift(x[idx], shift, torch_gen, float(value_range[0])), spec.noise,
                                   torch_gen, value_range)
            outputs = net(images)
            loss = F.cross_entropy(outputs, y[idx]) if task == "classification" else F.mse_loss(outputs, y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total_loss += loss.item()
        report(f"classifier epoch {epoch + 1}/{epochs}: loss {total_loss / steps_per_epoch:.4f}")


def measure(clf: ReferenceClassifier, data: Any) -> dict[str, Any]:
    """Score a reference network on labelled (or parameterised) images.

    Returns:
        Classification: ``accuracy``, ``per_class_accuracy`` (list), ``n_test``. Regression:
        ``r2`` (list per parameter), ``r2_mean``, ``n_test``.
    """
    _, outputs = clf.embed(data.images)
    if clf.task == "classification":
        predicted = outputs.argmax(axis=1)
        correct = predicted == data.labels
        per_class = [float(correct[data.labels == k].mean()) if np.any(data.labels == k) else float("nan")
                     for k in range(clf.n_classes)]
        return {"accuracy": float(correct.mean()), "per_class_accuracy": per_class, "n_test": int(len(correct))}
    estimate = outputs * np.asarray(clf.target_std) + np.asarray(clf.target_mean)
    residual = ((estimate - data.params) ** 2).sum(axis=0)
    spread = ((data.params - data.params.mean(axis=0)) ** 2).sum(axis=0) + 1e-12
    r2 = (1.0 - residual / spread).tolist()
    return {"r2": r2, "r2_mean": float(np.mean(r2)), "n_test": int(len(outputs))}


# --------------------------------------------------------------------------------- cache


def default_cache_dir() -> Path:
    """``$GANPORT_CACHE_DIR``, else ``$XDG_CACHE_HOME/ganport/classifiers``, else ``~/.cache/...``."""
    if os.environ.get("GANPORT_CACHE_DIR"):
        return Path(os.environ["GANPORT_CACHE_DIR"]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser()
    return base / "ganport" / "classifiers"


def save_classifier(path: str | Path, clf: ReferenceClassifier) -> Path:
    """Write a reference network atomically (weights-only loadable; no pickled classes).

    Returns:
        The path written.
    """
    from ganport.atomic import atomic_write

    payload = {
        "format": CLASSIFIER_FORMAT, "format_version": CLASSIFIER_VERSION,
        "task": clf.task, "spec": clf.spec.to_dict(), "key": clf.spec.key(),
        "network": {"class": type(clf.net).__name__, "init_args": dict(clf.net.init_args),
                    "state_dict": clf.net.state_dict()},
        "class_names": list(clf.class_names), "image_shape": list(clf.image_shape),
        "test_metrics": clf.test_metrics, "target_mean": list(clf.target_mean),
        "target_std": list(clf.target_std), "train_seconds": float(clf.train_seconds),
    }
    clf.path = atomic_write(path, lambda handle: torch.save(payload, handle))
    return clf.path


def load_classifier(path: str | Path) -> ReferenceClassifier:
    """Load a reference network written by :func:`save_classifier`.

    Raises:
        CheckpointError: missing, unreadable, foreign or outdated file.
    """
    path = Path(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise CheckpointError(f"reference classifier {path} not found") from exc
    except Exception as exc:  # truncated or foreign files raise many types
        raise CheckpointError(f"{path} is not a readable reference classifier ({type(exc).__name__})",
                              hint="delete it; it is retrained on the next evaluation") from exc
    if not isinstance(data, dict) or data.get("format") != CLASSIFIER_FORMAT:
        raise CheckpointError(f"{path} is not a ganport reference classifier")
    if data.get("format_version") != CLASSIFIER_VERSION:
        raise CheckpointError(f"{path} has classifier format {data.get('format_version')}, "
                              f"this ganport uses {CLASSIFIER_VERSION}", hint="delete it to retrain")
    entry = data["network"]
    if entry.get("class") != ReferenceNet.__name__:
        raise CheckpointError(f"{path} names an unknown network class {entry.get('class')!r}")
    net = ReferenceNet(**entry["init_args"])
    net.load_state_dict(entry["state_dict"])
    spec_data = dict(data["spec"])
    spec_data["dataset_options"] = tuple(sorted(spec_data.get("dataset_options", {}).items()))
    spec = ClassifierSpec(**spec_data)
    return ReferenceClassifier(net.eval(), data["task"], spec, list(data["class_names"]),
                               list(data["image_shape"]), dict(data["test_metrics"]),
                               list(data["target_mean"]), list(data["target_std"]),
                               float(data.get("train_seconds", 0.0)), path)


def get_classifier(spec: ClassifierSpec, cache_dir: str | Path | None = None, retrain: bool = False,
                   progress: Callable[[str], None] | None = None) -> ReferenceClassifier:
    """The reference network for ``spec``: loaded from the cache, or trained once and cached.

    Args:
        spec: data and training options (their hash names the cache file).
        cache_dir: folder of cached networks (default :func:`default_cache_dir`).
        retrain: train again even when a cached file exists.
        progress: per-epoch progress callback while training.

    Returns:
        The :class:`ReferenceClassifier`; ``.path`` is its cache file.

    Example:
        >>> clf = get_classifier(ClassifierSpec("glyphs", 28))   # doctest: +SKIP
        >>> clf.test_metrics["accuracy"] > 0.98                  # doctest: +SKIP
        True
    """
    directory = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    path = directory / spec.cache_name()
    if path.is_file() and not retrain:
        try:
            clf = load_classifier(path)
            if clf.spec.key() == spec.key():
                logger.info("loaded reference classifier %s", path)
                return clf
            logger.warning("%s was trained with other options than its name says; training a new one", path)
        except CheckpointError as exc:
            logger.warning("%s; training a new one", exc)
    logger.info("training the reference network for %s at %d px (cached as %s)",
                spec.dataset, spec.image_size, path)
    clf = train_classifier(spec, progress)
    save_classifier(path, clf)
    return clf
