"""The typed result of ``ganport eval`` (:class:`EvalResult`) and its printed table.

:func:`ganport.trainer.evaluation.evaluate` returns an :class:`EvalResult`; ``ganport eval``
prints :func:`format_report` and writes :meth:`EvalResult.to_dict` as JSON, the sweep keeps one
per run in ``sweep.json`` (read back with :meth:`EvalResult.from_dict`) and training logs
:meth:`EvalResult.log_metrics`. A metric that does not apply to the model (conditional accuracy
of an unconditional GAN, reconstruction of a GAN) is None here and absent from the JSON.

This module needs neither torch nor numpy.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping

from ganport.errors import InvalidInputError

#: Recall below this is reported as a likely mode collapse.
COLLAPSE_RECALL = 0.05
#: What an AAE's codes should look like.
LATENT_TARGET = "N(0, 1): mean 0, std 1 in every dimension"


@dataclass
class JudgeInfo:
    """The reference network an evaluation used.

    Args:
        task: ``classification`` or ``regression``.
        path: its cache file, or None.
        test_accuracy: classification: accuracy on real held-out images (0..1).
        test_r2: regression: mean R² of the parameters on real held-out images.
        n_test: held-out images it was measured on.
        feature_dim: width of the feature space of FD and precision/recall.
        test_accuracy_merged: mixed-case alphabets: accuracy with look-alike classes merged.
    """

    task: str
    path: str | None = None
    test_accuracy: float | None = None
    test_r2: float | None = None
    n_test: int | None = None
    feature_dim: int = 0
    test_accuracy_merged: float | None = None


@dataclass
class Reconstruction:
    """AAE reconstruction of held-out images through ``G(E(x))``.

    Args:
        mse: mean squared error per pixel, images in [-1, 1].
        psnr: peak signal-to-noise ratio in dB (peak 2, the width of [-1, 1]).
        n: images reconstructed.
    """

    mse: float
    psnr: float
    n: int


@dataclass
class LatentStats:
    """Moments of an AAE's codes ``E(x)`` of held-out images, to hold against the N(0, 1) prior.

    Args:
        mean: mean over every code value.
        std: standard deviation over every code value.
        mean_per_dim: mean per latent dimension (``latent_dim`` floats).
        std_per_dim: standard deviation per latent dimension.
        target: what they should be.
    """

    mean: float
    std: float
    mean_per_dim: list[float]
    std_per_dim: list[float]
    target: str = LATENT_TARGET


@dataclass
class EvalResult:
    """What :func:`~ganport.trainer.evaluation.evaluate` measured (see its docstring).

    Args:
        model: where the generator came from (checkpoint path and step, or package and backend).
        kind: model kind.
        dataset: data set judged against.
        image_shape: ``[C, H, W]`` of the images.
        n_generated: images generated.
        n_real: real held-out images.
        seed: latent seed.
        classifier: the judge.
        fd: Fréchet distance, all generated vs all real images (judge features).
        fd_equal_n: FD of real half A vs as many generated images: the one to compare with
            ``fd_real_vs_real``.
        fd_real_vs_real: FD of real half A vs real half B (what a perfect generator scores).
        fd_half_n: images per side of those two.
        conditional_accuracy: conditional kinds: share of ``G(z, y)`` classified ``y`` (0..1).
        per_class_accuracy: class name -> that share per class.
        per_class_accuracy_real: class name -> the judge's accuracy on real images of the class.
        conditional_accuracy_merged: mixed-case alphabets: accuracy with look-alikes merged.
        merged_groups: those look-alike groups, e.g. ``"0/O/o"``.
        class_histogram: unconditional kinds on labelled sets: class -> share of the samples.
        classes_covered: classes with at least half their fair share.
        mean_confidence: mean top softmax probability of the judge on generated images.
        mean_confidence_real: the same on real images.
        precision: share of generated images inside the real k-NN manifold (k=3).
        recall: share of real images inside the generated manifold.
        pr_samples: images per side of precision/recall.
        reconstruction: AAE reconstruction.
        latent: AAE code statistics.
        seconds: wall time of the evaluation.
    """

    model: str
    kind: str
    dataset: str
    image_shape: list[int]
    n_generated: int
    n_real: int
    seed: int
    classifier: JudgeInfo
    fd: float
    fd_equal_n: float
    fd_real_vs_real: float
    fd_half_n: int
    conditional_accuracy: float | None = None
    per_class_accuracy: dict[str, float] | None = None
    per_class_accuracy_real: dict[str, float] | None = None
    conditional_accuracy_merged: float | None = None
    merged_groups: list[str] | None = None
    class_histogram: dict[str, float] | None = None
    classes_covered: int | None = None
    mean_confidence: float | None = None
    mean_confidence_real: float | None = None
    precision: float | None = None
    recall: float | None = None
    pr_samples: int | None = None
    reconstruction: Reconstruction | None = None
    latent: LatentStats | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (what ``ganport eval --out`` writes); metrics that do not apply are left out.

        Example:
            >>> EvalResult.from_dict(result.to_dict()) == result     # doctest: +SKIP
            True
        """
        return _drop_none(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvalResult:
        """Rebuild a result from :meth:`to_dict` output (a sweep's ``sweep.json``, an eval JSON).

        Raises:
            InvalidInputError: unknown or missing keys, naming them.
        """
        values = _checked(cls, data, "evaluation result")
        values["classifier"] = JudgeInfo(**_checked(JudgeInfo, data["classifier"], "classifier"))
        if data.get("reconstruction") is not None:
            values["reconstruction"] = Reconstruction(**_checked(Reconstruction, data["reconstruction"],
                                                                 "reconstruction"))
        if data.get("latent") is not None:
            values["latent"] = LatentStats(**_checked(LatentStats, data["latent"], "latent"))
        return cls(**values)

    def log_metrics(self) -> dict[str, float]:
        """The scalar metrics under ``eval_*`` names (``metrics.jsonl``, TensorBoard), all floats."""
        out = {"eval_fd": float(self.fd), "eval_fd_equal_n": float(self.fd_equal_n),
               "eval_fd_real": float(self.fd_real_vs_real)}
        optional = {"eval_cond_acc": self.conditional_accuracy,
                    "eval_cond_acc_merged": self.conditional_accuracy_merged,
                    "eval_classes_covered": self.classes_covered,
                    "eval_precision": self.precision, "eval_recall": self.recall}
        out.update({name: float(value) for name, value in optional.items() if value is not None})
        if self.reconstruction is not None:
            out["eval_recon_mse"] = float(self.reconstruction.mse)
        if self.latent is not None:
            out["eval_z_mean"] = float(self.latent.mean)
            out["eval_z_std"] = float(self.latent.std)
        out["eval_seconds"] = float(self.seconds)
        return out


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    return value


def _checked(cls: type, data: Any, what: str) -> dict[str, Any]:
    """``data`` as keyword arguments of dataclass ``cls``: a mapping with no unknown or missing keys."""
    if not isinstance(data, Mapping):
        raise InvalidInputError(f"{what} must be a JSON object, got {type(data).__name__}")
    fields = dataclasses.fields(cls)
    names = {f.name for f in fields}
    unknown = sorted(set(data) - names)
    required = [f.name for f in fields
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [name for name in required if name not in data]
    if unknown or missing:
        problems = ([f"unknown key(s) {', '.join(unknown)}"] if unknown else []) + (
            [f"missing key(s) {', '.join(missing)}"] if missing else [])
        raise InvalidInputError(f"{what}: {'; '.join(problems)}", hint=f"expected keys: {', '.join(sorted(names))}")
    return dict(data)


# ------------------------------------------------------------------------------ report


def _fmt(value: Any, pct: bool = False) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if pct:
            return f"{value:.2%}"
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.3e}"
    return str(value)


def class_percent(share: float) -> str:
    """A share as a percentage with one decimal, rounded down: only a perfect class reads "100%".

    Example:
        >>> class_percent(0.995), class_percent(0.9999), class_percent(1.0), class_percent(0.18)
        ('99.5%', '99.9%', '100%', '18.0%')
    """
    if not math.isfinite(share):
        return "-"  # a class with no real test images
    if share >= 1.0:
        return "100%"
    # The small epsilon keeps binary round-off (0.29 * 1000 = 289.999...) from losing a tenth.
    return f"{math.floor(share * 1000 + 1e-6) / 10:.1f}%"


def summary_rows(result: EvalResult) -> list[tuple[str, str]]:
    """``(metric, value)`` rows of the printed table (shared by eval, sweep and training logs)."""
    clf = result.classifier
    rows = [("model", result.model), ("data set", result.dataset)]
    if clf.task == "classification":
        rows.append(("reference classifier test accuracy", _fmt(clf.test_accuracy, pct=True)))
    else:
        rows.append(("reference regressor test R²", _fmt(clf.test_r2)))
    if result.conditional_accuracy is not None:
        rows.append(("conditional accuracy", _fmt(result.conditional_accuracy, pct=True)))
    if result.conditional_accuracy_merged is not None:
        rows.append(("  look-alikes merged (real images)",
                     f"{_fmt(result.conditional_accuracy_merged, pct=True)}  "
                     f"({_fmt(clf.test_accuracy_merged, pct=True)})"))
    if result.per_class_accuracy:
        real = result.per_class_accuracy_real or {}
        worst = sorted(result.per_class_accuracy.items(), key=lambda item: item[1])[:5]
        rows.append(("worst classes (real images)", ", ".join(
            f"{k} {class_percent(v)}" + (f" ({class_percent(real[k])})" if k in real else "") for k, v in worst)))
    rows.append(("FD generated vs real (all samples)", _fmt(result.fd)))
    half = result.fd_half_n
    rows.append((f"FD at {half} vs {half} samples",
                 f"{_fmt(result.fd_equal_n)}  (real vs real: {_fmt(result.fd_real_vs_real)})"))
    if result.precision is not None and result.recall is not None:
        rows.append(("precision / recall (k=3)", f"{result.precision:.3f} / {result.recall:.3f}"))
        if result.recall < COLLAPSE_RECALL:
            # High accuracy with no recall is what a generator that ignores z looks like.
            rows.append(("warning", "recall ~0: the samples cover almost none of the real variety "
                                    "(mode collapse?)"))
    if result.classes_covered is not None:
        rows.append(("classes covered", f"{result.classes_covered} of {len(result.class_histogram or {})}"))
    if result.reconstruction is not None:
        rec = result.reconstruction
        rows.append(("reconstruction MSE / PSNR", f"{rec.mse:.4f} / {rec.psnr:.2f} dB"))
    if result.latent is not None:
        rows.append(("latent mean / std (target 0 / 1)", f"{result.latent.mean:.3f} / {result.latent.std:.3f}"))
    rows.append(("samples (generated / real)", f"{result.n_generated} / {result.n_real}"))
    return rows


def format_report(result: EvalResult) -> str:
    """The printed table of an :class:`EvalResult`.

    Example:
        >>> print(format_report(evaluate(open_source("ckpt.pt"), "digits")))    # doctest: +SKIP
    """
    rows = summary_rows(result)
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
