"""Quality metrics of a generator, measured with ganport's own reference network.

``ganport eval`` and :func:`evaluate` answer, for a checkpoint or an exported package:

- **conditional accuracy** (conditional kinds): the share of ``G(z, y)`` the reference classifier
  labels ``y``, overall and per class (labels are balanced: ``n / n_classes`` per class);
- **Fréchet distance** (FD) between real test images and generated images in the reference
  network's penultimate features (the FID recipe with a home-made feature extractor), printed
  beside the **real-vs-real** value (two disjoint halves of the real test images), which is what
  a perfect generator would score. FD shrinks as samples grow, so the generated side is also
  measured at the real halves' size (``fd_equal_n``): that number, not ``fd``, is the one to
  hold against ``fd_real_vs_real``;
- **precision / recall** (Kynkäänniemi et al. 2019): the share of generated images inside the
  k-NN balls of the real features (fidelity) and of real images inside the balls of the
  generated features (coverage);
- unconditional kinds on labelled sets: the predicted class histogram (mode coverage);
- **AAE**: reconstruction MSE / PSNR of held-out images through ``G(E(x))`` and the mean / std
  of the codes ``E(x)`` against the N(0, 1) prior.

Generated images come from a checkpoint (eager torch, EMA weights when present) or from an
exported package (:class:`ganport.runtime.Generator`, onnxruntime by default). Latents are drawn
as the runtime does (``numpy.random.default_rng(seed).standard_normal``), so a checkpoint and its
package score the same images.

Training loops call :func:`evaluate_during_training` every N epochs (see its docstring).

Example::

    from ganport.trainer.evaluation import evaluate, open_source, format_report
    result = evaluate(open_source("runs/cgan-glyphs/checkpoints/latest.pt"), "glyphs", n=10000)
    print(format_report(result))            # result.to_dict() is the JSON of `ganport eval --out`
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import nn

from ganport.errors import InvalidInputError
from ganport.runtime.manifest import CONDITIONAL_KINDS
from ganport.trainer.classifier import ClassifierSpec, ReferenceClassifier, get_classifier
# format_report is re-exported: `from ganport.trainer.evaluation import evaluate, format_report`.
from ganport.trainer.eval_result import EvalResult, JudgeInfo, LatentStats, Reconstruction, format_report  # noqa: F401

logger = logging.getLogger(__name__)

#: Images per generator call when drawing samples from a torch module.
GENERATE_BATCH = 512
#: Neighbour count of the precision/recall manifolds (Kynkäänniemi et al. use k = 3).
PR_NEIGHBOURS = 3
#: Precision/recall use at most this many images per side (cost grows with the square).
PR_MAX_SAMPLES = 5000
# Seed offsets so the generated latents, the real subsets and the PR subsample never share a stream.
_REAL_SPLIT_SEED = 0x5EA1
_PR_SEED = 0x9C


# ------------------------------------------------------------------------------ sources


@dataclass
class ModelSource:
    """A generator to evaluate, whatever it was loaded from.

    Args:
        kind: model kind (``cgan``, ``aae``, ...).
        latent_dim: length of z.
        class_names: classes of a conditional model (empty otherwise).
        image_shape: ``[C, H, W]`` of its images.
        generate_fn: ``(z float32 [N, latent_dim], labels int64 [N] | None) -> float32 [N, C, H, W]``.
        encode_fn: ``(images float32 [N, C, H, W]) -> float32 [N, latent_dim]`` (AAE), else None.
        dataset: the data set it was trained on (from the checkpoint or manifest), if known.
        dataset_options: loader options it was trained with (checkpoints only).
        data_root: file folder of the training data set (checkpoints only).
        description: where it came from, for reports.
    """

    kind: str
    latent_dim: int
    class_names: list[str]
    image_shape: list[int]
    generate_fn: Callable[[np.ndarray, np.ndarray | None], np.ndarray]
    encode_fn: Callable[[np.ndarray], np.ndarray] | None = None
    dataset: str = ""
    dataset_options: dict[str, Any] = field(default_factory=dict)
    data_root: str | None = None
    description: str = ""

    @property
    def conditional(self) -> bool:
        return self.kind in CONDITIONAL_KINDS

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def latents(self, n: int, seed: int) -> np.ndarray:
        """``n`` latents exactly as :meth:`ganport.runtime.Generator.sample_latents` draws them."""
        return np.random.default_rng(seed).standard_normal((n, self.latent_dim), dtype=np.float32)

    def generate(self, z: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        """Images ``float32 [N, C, H, W]`` in [-1, 1] for latents (and labels)."""
        if self.conditional and labels is None:
            raise InvalidInputError(f"a {self.kind} model needs labels")
        return np.asarray(self.generate_fn(np.asarray(z, np.float32),
                                           None if labels is None else np.asarray(labels, np.int64)),
                          dtype=np.float32)

    def encode(self, images: np.ndarray) -> np.ndarray:
        """Codes ``float32 [N, latent_dim]`` of images (AAE only)."""
        if self.encode_fn is None:
            raise InvalidInputError(f"model kind {self.kind!r} has no encoder")
        return np.asarray(self.encode_fn(np.asarray(images, np.float32)), dtype=np.float32)


def source_from_modules(kind: str, generator: nn.Module, *, latent_dim: int, class_names: list[str],
                        image_shape: list[int], encoder: nn.Module | None = None, dataset: str = "",
                        dataset_options: Mapping[str, Any] | None = None, data_root: str | None = None,
                        description: str = "torch modules") -> ModelSource:
    """Wrap torch modules as a :class:`ModelSource` (eval mode, no grad, on their own device).

    Args:
        kind: model kind.
        generator: ``G(z)`` or ``G(z, label)`` returning ``[N, C, H, W]`` in [-1, 1].
        latent_dim: length of z.
        class_names: classes of a conditional generator.
        image_shape: ``[C, H, W]``.
        encoder: ``E(x)`` of an AAE.
        dataset: training data set name.
        dataset_options: its loader options.
        data_root: its file folder.
        description: for reports.

    Returns:
        The source. The modules are switched to eval mode while generating and back afterwards.

    Example:
        >>> src = source_from_modules("cgan", net, latent_dim=100, class_names=list("0123456789"),
        ...                           image_shape=[1, 28, 28])   # doctest: +SKIP
    """
    device = next(iter(generator.parameters()), torch.zeros(())).device
    conditional = kind in CONDITIONAL_KINDS

    def run(module: nn.Module, *inputs: torch.Tensor) -> np.ndarray:
        was_training = module.training
        module.eval()  # BatchNorm running statistics, as the exported model uses
        try:
            with torch.no_grad():
                outputs = [module(*(t[i:i + GENERATE_BATCH] for t in inputs)).float().cpu()
                           for i in range(0, len(inputs[0]), GENERATE_BATCH)]
        finally:
            module.train(was_training)
        return torch.cat(outputs).numpy() if outputs else np.zeros((0, *image_shape), np.float32)

    def generate(z: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
        inputs = [torch.from_numpy(z).to(device)]
        if conditional:
            inputs.append(torch.from_numpy(labels).to(device))
        return run(generator, *inputs)

    encode = None
    if encoder is not None:
        def encode(images: np.ndarray) -> np.ndarray:
            return run(encoder, torch.from_numpy(images).to(device))

    return ModelSource(kind, int(latent_dim), list(class_names), [int(v) for v in image_shape], generate,
                       encode, dataset, dict(dataset_options or {}), data_root, description)


def source_from_checkpoint(path: str | Path, use_ema: bool = True) -> ModelSource:
    """A :class:`ModelSource` of a training checkpoint (EMA generator weights when present).

    Raises:
        CheckpointError: not a readable ganport checkpoint.
    """
    from ganport.trainer.checkpoint import build_from_checkpoint, load_checkpoint

    ckpt = load_checkpoint(path)
    generator = build_from_checkpoint(ckpt, "generator", use_ema=use_ema)
    encoder = build_from_checkpoint(ckpt, "encoder") if "encoder" in ckpt["networks"] else None
    data = ckpt.get("data") or {}
    config = ckpt.get("config") or {}
    init = ckpt["networks"]["generator"]["init_args"]
    ema = " (EMA weights)" if use_ema and ckpt.get("ema_generator") else ""
    return source_from_modules(
        ckpt["kind"], generator, latent_dim=int(init["latent_dim"]),
        class_names=list(data.get("class_names") or []) if ckpt["kind"] in CONDITIONAL_KINDS else [],
        image_shape=list(data.get("image_shape") or init["img_shape"]), encoder=encoder,
        dataset=str(data.get("dataset") or config.get("dataset") or ""),
        dataset_options=config.get("dataset_options") or {}, data_root=config.get("data_root"),
        description=f"checkpoint {path} (step {ckpt.get('step')}){ema}")


def source_from_package(path: str | Path, backend: str | None = None) -> ModelSource:
    """A :class:`ModelSource` of an exported package (or one ``.onnx``/``.ts``/``.pt2`` file).

    Raises:
        ModelNotFoundError, PackageError, BackendUnavailableError: as :meth:`Generator.load`.
    """
    from ganport.runtime import Generator

    gen = Generator.load(path, backend=backend)
    info = gen.info
    encode = gen.encode if info.has_encoder else None
    return ModelSource(info.kind, int(info.latent_dim), list(info.class_names) if info.conditional else [],
                       list(info.image_shape), lambda z, labels: gen.run(z, labels), encode,
                       info.dataset, {}, None, f"package {path} ({gen.backend_name})")


def open_source(path: str | Path, backend: str | None = None, use_ema: bool = True) -> ModelSource:
    """Open a checkpoint (``.pt``) or a model package (directory, ``.onnx``, ``.ts``, ``.pt2``).

    Args:
        path: what to evaluate.
        backend: package backend (``onnx`` default, ``torchscript``, ``pt2``).
        use_ema: checkpoints: evaluate the EMA generator when the checkpoint has one.

    Example:
        >>> src = open_source("models/glyphs")       # doctest: +SKIP
    """
    path = Path(path)
    if path.is_file() and path.suffix == ".pt":
        return source_from_checkpoint(path, use_ema)
    return source_from_package(path, backend)


# ------------------------------------------------------------------------------ metrics


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``[D]`` and covariance ``[D, D]`` (float64) of features ``[N, D]``."""
    feats = np.asarray(features, np.float64)
    if len(feats) < 2:
        raise InvalidInputError(f"the Fréchet distance needs at least 2 samples, got {len(feats)}")
    return feats.mean(axis=0), np.cov(feats, rowvar=False)


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance between two Gaussians: ``|mu1-mu2|² + tr(S1 + S2 - 2 (S1^½ S2 S1^½)^½)``.

    Computed with symmetric eigendecompositions (no complex ``sqrtm`` round-off): the trace of
    ``(S1 S2)^½`` equals that of ``(S1^½ S2 S1^½)^½``, which is symmetric positive semi-definite.

    Example:
        >>> frechet_distance(np.zeros(2), np.eye(2), np.ones(2), np.eye(2))
        2.0
    """
    root1 = _sqrt_psd(np.asarray(sigma1, np.float64))
    middle = root1 @ np.asarray(sigma2, np.float64) @ root1
    cross = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0.0, None)).sum()
    diff = np.asarray(mu1, np.float64) - np.asarray(mu2, np.float64)
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * cross
    return float(max(value, 0.0))


def feature_frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """:func:`frechet_distance` between two feature sets ``[N, D]`` and ``[M, D]``."""
    return frechet_distance(*feature_statistics(features_a), *feature_statistics(features_b))


def _pairwise_sq(a: torch.Tensor, b: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
    return torch.cat([torch.cdist(a[i:i + chunk], b).square() for i in range(0, len(a), chunk)])


def _knn_radii(features: torch.Tensor, k: int) -> torch.Tensor:
    """Squared distance of each point to its k-th nearest other point."""
    distances = _pairwise_sq(features, features)
    return distances.kthvalue(k + 1, dim=1).values  # +1: the point itself is at distance 0


def _coverage(manifold: torch.Tensor, radii: torch.Tensor, queries: torch.Tensor, chunk: int = 2048) -> float:
    """Share of ``queries`` inside at least one ball (centre ``manifold``, squared radius ``radii``)."""
    inside = [(torch.cdist(queries[i:i + chunk], manifold).square() <= radii[None]).any(dim=1)
              for i in range(0, len(queries), chunk)]
    return float(torch.cat(inside).float().mean())


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = PR_NEIGHBOURS) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) of two feature sets.

    Args:
        real: real features ``[N, D]``.
        fake: generated features ``[M, D]``.
        k: neighbour defining each point's ball.

    Returns:
        ``(precision, recall)``: share of fake inside the real manifold, share of real inside
        the fake manifold.

    Example:
        >>> x = np.random.default_rng(0).normal(size=(200, 4)).astype(np.float32)
        >>> p, r = precision_recall(x[:100], x[100:]); p > 0.8 and r > 0.8
        True
    """
    if len(real) <= k or len(fake) <= k:
        raise InvalidInputError(f"precision/recall with k={k} needs more than {k} samples per side")
    r = torch.from_numpy(np.asarray(real, np.float32))
    f = torch.from_numpy(np.asarray(fake, np.float32))
    precision = _coverage(r, _knn_radii(r, k), f)
    recall = _coverage(f, _knn_radii(f, k), r)
    return precision, recall


def psnr(mse: float, value_range: tuple[float, float] = (-1.0, 1.0)) -> float:
    """Peak signal-to-noise ratio in dB for a mean squared error on images in ``value_range``."""
    peak = value_range[1] - value_range[0]
    return float("inf") if mse <= 0 else float(10.0 * math.log10(peak * peak / mse))


# Look-alike classes of mixed-case alphabets (glyphs, EMNIST byclass): the letters EMNIST's
# "bymerge" split merges because upper and lower case have the same shape, plus the
# digit/letter pairs that are the same shape in common fonts (0/O/o, 1/I/l).
_SAME_SHAPE_CASE = "cijklmopsuvwxyz"
_LOOKALIKE_SETS = ("0Oo", "1IiLl")


def lookalike_groups(class_names: list[str]) -> np.ndarray | None:
    """Group id per class that merges look-alike classes, or None when nothing merges.

    Only alphabets with both cases of a letter get groups (glyphs, EMNIST byclass): case pairs
    that share a shape (EMNIST bymerge: c, i, j, k, l, m, o, p, s, u, v, w, x, y, z) and the
    0/O/o and 1/I/l look-alikes. A reference classifier cannot separate these reliably on real
    images (they differ only in size or not at all in some fonts), so the merged accuracy says
    what the plain one cannot: whether the *shape* is right.

    Example:
        >>> lookalike_groups(["0", "O", "o", "A", "a"]).tolist()
        [0, 0, 0, 3, 4]
    """
    index = {name: i for i, name in enumerate(class_names)}
    if not any(name.lower() != name and name.lower() in index for name in class_names):
        return None
    parent = list(range(len(class_names)))

    def find(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    def union(members: list[str]) -> None:
        ids = [find(index[m]) for m in members if m in index]
        for other in ids[1:]:
            parent[other] = ids[0]

    for letter in _SAME_SHAPE_CASE:
        union([letter.upper(), letter])
    for group in _LOOKALIKE_SETS:
        union(list(group))
    groups = np.array([find(i) for i in range(len(class_names))], np.int64)
    return groups if len(set(groups.tolist())) < len(class_names) else None


def balanced_labels(n: int, n_classes: int) -> np.ndarray:
    """``0, 1, ..., K-1, 0, 1, ...``: every class gets ``n / K`` labels (±1)."""
    return (np.arange(n) % n_classes).astype(np.int64)


# ------------------------------------------------------------------------------ reference


@dataclass
class RealReference:
    """The reference network and the real test images' features, computed once per data set.

    Args:
        classifier: the reference network.
        images: real held-out images ``[N, C, H, W]``.
        labels: their labels (labelled sets) or None.
        features: their features ``[N, D]``.
        outputs: their logits / parameter estimates.
        fd_real_vs_real: FD between two disjoint halves A and B of ``features``.
        half_a: indices of half A (the real side of the equal-size comparison).
        dataset: data set name.
    """

    classifier: ReferenceClassifier
    images: np.ndarray
    labels: np.ndarray | None
    features: np.ndarray
    outputs: np.ndarray
    fd_real_vs_real: float
    half_a: np.ndarray
    dataset: str

    @classmethod
    def build(cls, spec: ClassifierSpec, n: int, cache_dir: str | Path | None = None,
              progress: Callable[[str], None] | None = None) -> "RealReference":
        """Load (or train and cache) the reference network and embed ``n`` real test images."""
        from ganport.trainer.classifier import load_test_data

        classifier = get_classifier(spec, cache_dir, progress=progress)
        test = load_test_data(spec, n)
        images = test.images[:n]
        labels = None if test.labels is None else test.labels[:n]
        features, outputs = classifier.embed(images)
        # Two disjoint random halves: what FD reads for two samples of the same distribution.
        order = np.random.default_rng(_REAL_SPLIT_SEED).permutation(len(features))
        half = len(order) // 2
        fd_rr = feature_frechet_distance(features[order[:half]], features[order[half:2 * half]])
        return cls(classifier, images, labels, features, outputs, fd_rr, order[:half], spec.dataset)

    def fd_at_real_vs_real_size(self, fake_features: np.ndarray) -> float:
        """FD between real half A and as many generated samples as half B holds.

        FD is biased upwards by small samples, so only this number compares like with like
        with :attr:`fd_real_vs_real` (same sample sizes on both sides).
        """
        return feature_frechet_distance(self.features[self.half_a], fake_features[:len(self.half_a)])


def classifier_spec_for(source: ModelSource, dataset: str | None = None,
                        data_root: str | None = None, dataset_options: Mapping[str, Any] | None = None,
                        **overrides: Any) -> ClassifierSpec:
    """The reference network spec that fits a model: its data set at its image size.

    Args:
        source: the model.
        dataset: data set name (default: the one the model was trained on).
        data_root: folder of a file-based set (default: the checkpoint's).
        dataset_options: loader options (default: the checkpoint's); only options that change
            the images are kept (``palette``, ``iterations``, ``distortion``, ``fonts``...).
        **overrides: :class:`ClassifierSpec` fields (``epochs``, ``train_n``...).

    Raises:
        InvalidInputError: no data set known, or non-square images.
    """
    name = dataset or source.dataset
    if not name:
        raise InvalidInputError("the model does not record its data set", hint="pass --dataset NAME")
    if dataset:
        from ganport.trainer.datasets.registry import get_spec

        get_spec(dataset)  # an unknown name is an error before any warning about it
    if source.dataset and dataset and source.dataset != dataset:
        logger.warning("the model was trained on %r, evaluating against %r", source.dataset, dataset)
    c, h, w = source.image_shape
    if h != w:
        raise InvalidInputError(f"images {source.image_shape} are not square")
    options = dict(source.dataset_options if dataset_options is None else dataset_options)
    # Options that only size the training set (per_class) do not change what images look like.
    options.pop("per_class", None)
    return ClassifierSpec(name, int(h), data_root if data_root is not None else source.data_root,
                          tuple(sorted(options.items())), **overrides)


# ------------------------------------------------------------------------------ evaluate


def _check_fit(source: ModelSource, reference: RealReference) -> None:
    clf = reference.classifier
    if list(source.image_shape) != list(clf.image_shape):
        raise InvalidInputError(f"the model makes images {source.image_shape} but {reference.dataset} "
                                f"images are {clf.image_shape}",
                                hint="pass the data set (and --dataset-option) the model was trained on")
    if source.conditional:
        if clf.task != "classification":
            raise InvalidInputError(f"{reference.dataset} has no classes to check a conditional model against")
        if source.class_names != clf.class_names:
            raise InvalidInputError(f"the model's classes ({source.n_classes}) differ from {reference.dataset}'s "
                                    f"({clf.n_classes})", hint="evaluate on the data set the model was trained on")


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


def evaluate(source: ModelSource, dataset: str | None = None, n: int = 10_000, *, seed: int = 0,
             reference: RealReference | None = None, cache_dir: str | Path | None = None,
             precision_recall_samples: int = PR_MAX_SAMPLES, classifier_options: Mapping[str, Any] | None = None,
             dataset_options: Mapping[str, Any] | None = None, data_root: str | None = None,
             progress: Callable[[str], None] | None = None) -> EvalResult:
    """Measure a generator against real held-out images.

    Args:
        source: the model (:func:`open_source`, :func:`source_from_modules`).
        dataset: data set (default: the model's).
        n: images to generate (and at most this many real test images).
        seed: latent seed (``numpy.random.default_rng(seed)``, as the runtime draws).
        reference: a prepared :class:`RealReference` (reused across calls), else built here.
        cache_dir: reference-network cache folder.
        precision_recall_samples: cap per side for precision/recall (0 turns it off).
        classifier_options: :class:`ClassifierSpec` overrides (``epochs``, ``train_n``...).
        dataset_options: loader options (default: the checkpoint's).
        data_root: folder of a file-based data set.
        progress: progress lines while a reference network trains.

    Returns:
        An :class:`~ganport.trainer.eval_result.EvalResult`: the judge, ``fd`` (all generated vs all
        real images), ``fd_equal_n`` (half the real images vs as many generated ones) beside
        ``fd_real_vs_real`` (one real half vs the other), precision and recall; conditional kinds
        also the conditional accuracy overall, per class and the judge's own per class on real
        images (plus look-alikes merged for mixed-case alphabets such as glyphs); unconditional
        kinds on labelled sets the class histogram; AAE reconstruction and latent statistics.
        ``result.to_dict()`` is the JSON ``ganport eval --out`` writes.

    Raises:
        InvalidInputError: the model does not fit the data set (image shape, classes), bad n.

    Example:
        >>> r = evaluate(open_source("ckpt.pt"), "digits", n=2000)    # doctest: +SKIP
        >>> r.conditional_accuracy, r.fd_equal_n, r.fd_real_vs_real  # doctest: +SKIP
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 4:
        raise InvalidInputError(f"n must be an integer >= 4, got {n!r}")
    started = time.perf_counter()
    if reference is None:
        spec = classifier_spec_for(source, dataset, data_root, dataset_options, **dict(classifier_options or {}))
        reference = RealReference.build(spec, n, cache_dir, progress)
    _check_fit(source, reference)
    clf = reference.classifier

    z = source.latents(n, seed)
    labels = balanced_labels(n, source.n_classes) if source.conditional else None
    fake = source.generate(z, labels)
    fake_features, fake_outputs = clf.embed(fake)
    if not np.isfinite(fake_features).all():
        raise InvalidInputError("the generator produced non-finite images (NaN or inf)")

    classification = clf.task == "classification"
    result = EvalResult(
        model=source.description, kind=source.kind, dataset=reference.dataset,
        image_shape=list(source.image_shape), n_generated=int(n), n_real=int(len(reference.features)),
        seed=int(seed),
        classifier=JudgeInfo(task=clf.task, path=str(clf.path) if clf.path else None,
                             test_accuracy=clf.test_metrics.get("accuracy") if classification else None,
                             test_r2=None if classification else clf.test_metrics.get("r2_mean"),
                             n_test=clf.test_metrics.get("n_test"), feature_dim=int(fake_features.shape[1])),
        fd=feature_frechet_distance(reference.features, fake_features),
        fd_equal_n=reference.fd_at_real_vs_real_size(fake_features),
        fd_real_vs_real=reference.fd_real_vs_real,
        fd_half_n=int(len(reference.half_a)),
    )
    if source.conditional:
        predicted = fake_outputs.argmax(axis=1)
        correct = predicted == labels
        result.conditional_accuracy = float(correct.mean())
        result.per_class_accuracy = {name: float(correct[labels == k].mean())
                                     for k, name in enumerate(source.class_names)}
        groups = lookalike_groups(source.class_names)
        if groups is not None:
            result.conditional_accuracy_merged = float((groups[predicted] == groups[labels]).mean())
            real_predicted = reference.outputs.argmax(axis=1)
            result.classifier.test_accuracy_merged = float(
                (groups[real_predicted] == groups[reference.labels]).mean())
            result.merged_groups = sorted(
                "/".join(name for name, g in zip(source.class_names, groups) if g == group)
                for group in set(groups.tolist()) if (groups == group).sum() > 1)
        # The judge's own accuracy per class on real images: a generated class cannot be
        # expected to score above it (glyphs: l/I/1 and 0/O are the same shape in some fonts).
        real_per_class = clf.test_metrics.get("per_class_accuracy") or []
        if len(real_per_class) == source.n_classes:
            result.per_class_accuracy_real = dict(zip(source.class_names, map(float, real_per_class)))
    elif classification:
        # Mode coverage of an unconditional model: which classes its samples look like.
        predicted = fake_outputs.argmax(axis=1)
        counts = np.bincount(predicted, minlength=clf.n_classes)
        share = counts / counts.sum()
        result.class_histogram = {name: float(s) for name, s in zip(clf.class_names, share)}
        # A class counts as covered with at least half its fair share of the samples.
        result.classes_covered = int((share >= 0.5 / clf.n_classes).sum())
        result.mean_confidence = float(_softmax(fake_outputs).max(axis=1).mean())
        result.mean_confidence_real = float(_softmax(reference.outputs).max(axis=1).mean())
    if precision_recall_samples and precision_recall_samples > PR_NEIGHBOURS:
        rng = np.random.default_rng(_PR_SEED)
        size = min(precision_recall_samples, len(reference.features), len(fake_features))
        real_sub = reference.features[rng.permutation(len(reference.features))[:size]]
        fake_sub = fake_features[rng.permutation(len(fake_features))[:size]]
        result.precision, result.recall = precision_recall(real_sub, fake_sub)
        result.pr_samples = int(size)
    if source.encode_fn is not None:
        result.reconstruction, result.latent = _autoencoder_metrics(source, reference)
    result.seconds = round(time.perf_counter() - started, 2)
    return result


def _autoencoder_metrics(source: ModelSource, reference: RealReference) -> tuple[Reconstruction, LatentStats]:
    """Reconstruction of held-out images through G(E(x)) and the codes' moments."""
    images = reference.images
    codes = source.encode(images)
    recon = source.generate(codes)
    mse = float(np.mean((recon.astype(np.float64) - images) ** 2))
    return (Reconstruction(mse=mse, psnr=psnr(mse), n=int(len(images))),
            LatentStats(mean=float(codes.mean()), std=float(codes.std()),
                        mean_per_dim=codes.mean(axis=0).tolist(), std_per_dim=codes.std(axis=0).tolist()))


# ------------------------------------------------------------------------------ training hook

# Prepared references of this process, by spec and n: loading data and embedding real images
# happens once per run, not at every periodic evaluation.
_REFERENCES: dict[tuple[str, int, str], RealReference] = {}


def _training_source(config: Any, info: Any, generator: nn.Module, encoder: nn.Module | None) -> ModelSource:
    return source_from_modules(config.kind, generator, latent_dim=config.latent_dim,
                               class_names=list(info.class_names) if config.kind in CONDITIONAL_KINDS else [],
                               image_shape=list(info.image_shape), encoder=encoder, dataset=config.dataset,
                               dataset_options=config.dataset_options, data_root=config.data_root,
                               description=f"{config.kind} in training")


def prepare_evaluation(config: Any, info: Any, *, n: int = 2000, cache_dir: str | Path | None = None,
                       classifier_options: Mapping[str, Any] | None = None) -> RealReference:
    """Train (or load) the reference network and embed the real images before training starts.

    Optional: :func:`evaluate_during_training` does this on its first call, but calling it at
    set-up keeps a first-time classifier training (a minute or two on a CPU) out of the loop,
    where it would stall the other ranks under torchrun. Same arguments as there.
    """
    spec = classifier_spec_for(_training_source(config, info, nn.Identity(), None),
                               **dict(classifier_options or {}))
    key = (spec.key(), int(n), str(cache_dir))
    if key not in _REFERENCES:
        _REFERENCES[key] = RealReference.build(spec, n, cache_dir)
    return _REFERENCES[key]


def evaluate_during_training(config: Any, info: Any, generator: nn.Module, encoder: nn.Module | None = None,
                             *, n: int = 2000, seed: int = 0, cache_dir: str | Path | None = None,
                             precision_recall_samples: int = 0,
                             classifier_options: Mapping[str, Any] | None = None) -> dict[str, float]:
    """Periodic evaluation for the training loop: flat, loggable numbers.

    Call on rank 0 every N epochs with the generator the samples show (the EMA module when EMA
    is on), and write the returned dict as a metrics row. The reference network is trained on
    first use (cached on disk, see :func:`prepare_evaluation`) and the real features are
    computed once per process.

    Args:
        config: the run's :class:`~ganport.trainer.config.TrainConfig` (kind, dataset, data_root,
            dataset_options, latent_dim).
        info: the run's :class:`~ganport.trainer.datasets.DataInfo` (class names, image shape).
        generator: the generator module (any device; switched to eval mode and back).
        encoder: the AAE encoder, for reconstruction metrics.
        n: images to generate (2000 takes a few seconds on a CPU for 28x28 models).
        seed: latent seed (fixed, so successive evaluations are comparable).
        cache_dir: reference-network cache folder (default ``~/.cache/ganport/classifiers``).
        precision_recall_samples: samples for precision/recall (0 = skip, the default here).
        classifier_options: :class:`~ganport.trainer.classifier.ClassifierSpec` overrides.

    Returns:
        ``{"eval_fd": ..., "eval_fd_equal_n": ..., "eval_fd_real": ...}`` plus ``eval_cond_acc`` (conditional kinds),
        ``eval_classes_covered`` (unconditional kinds on labelled sets),
        ``eval_precision``/``eval_recall`` (when asked), ``eval_recon_mse``, ``eval_z_mean``,
        ``eval_z_std`` (AAE), ``eval_seconds``; all floats.

    Example (inside the loop, after the step counter moved)::

        if cfg.eval_every and self.ctx.is_main and self.step % (cfg.eval_every * self.steps_per_epoch) == 0:
            generator = self.ema.module if self.ema is not None else self.nets["generator"]
            row = evaluate_during_training(cfg, self.info, generator, self.nets.get("encoder"))
    """
    reference = prepare_evaluation(config, info, n=n, cache_dir=cache_dir, classifier_options=classifier_options)
    return evaluate(_training_source(config, info, generator, encoder), n=n, seed=seed, reference=reference,
                    precision_recall_samples=precision_recall_samples).log_metrics()
