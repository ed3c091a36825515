"""Training configuration: one dataclass, one field per option, validated in one place.

:class:`TrainConfig` is what ``ganport train`` builds from its flags and what
:func:`ganport.trainer.train` takes. The resolved config (run name filled in) is written to the
run's ``config.json`` and into every checkpoint, so ``TrainConfig.from_dict(ckpt["config"])``
gives back exactly the settings a model was trained with.

Resuming: :meth:`TrainConfig.for_resume` starts from the checkpoint's config and applies only
the options the caller changes. Options that decide what is trained (kind, data, network sizes,
loss, learning rates, seed, ...) must not change on resume; an attempt is an error, never a
silent rewrite. Options that only decide how long and how verbosely to train (``epochs``,
``steps``, intervals, ``keep_last``, ``device``, ``num_workers``, ...) may change.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from ganport.errors import InvalidInputError
from ganport.runtime.manifest import CONDITIONAL_KINDS, KINDS

logger = logging.getLogger(__name__)

# KINDS (what ``train`` accepts) and CONDITIONAL_KINDS come from ganport.runtime.manifest, their one
# home; the networks live in :mod:`ganport.trainer.models`.
#: Kinds whose generator is convolutional (the only ones ``arch`` applies to).
CONV_KINDS = ("dcgan", "cdcgan", "aae")
LOSS_NAMES = ("bce", "minimax", "lsgan")
#: How a conditional discriminator sees the label (``d_conditioning``).
D_CONDITIONINGS = ("concat", "projection")
#: ``aux_weight`` a conditional kind gets when it is left unset (None).
DEFAULT_AUX_WEIGHT = 0.5
#: ``ema`` a GAN kind gets when it is left unset (None); ``aae`` gets 0.
DEFAULT_EMA = 0.999
#: ``d_conditioning`` a conditional kind gets when it is left unset (None).
DEFAULT_D_CONDITIONING = "projection"
DEVICES = ("auto", "cpu", "cuda")
ARCHS = ("default", "simpsons")

#: Options that may differ between a checkpoint's config and a resumed run.
RESUMABLE_OVERRIDES = frozenset({
    "epochs", "steps", "sample_interval", "checkpoint_interval", "keep_last", "device",
    "num_workers", "resume", "out_dir", "log_every", "amp", "eval_every", "eval_n", "tensorboard",
    "threads",
})


@dataclass
class TrainConfig:
    """Every option of a training run (defaults train well on the built-in sets).

    Args:
        kind: model kind: ``gan``, ``dcgan``, ``cgan``, ``cdcgan`` or ``aae``.
        dataset: data set name (``ganport datasets`` lists them), e.g. ``glyphs``.
        data_root: folder holding the files of a file-based data set (mnist, cifar10, folder...).
        image_size: resize images to this square size (None: the data set's default).
        n_samples: use at most this many images (None: all), a deterministic subset.
        dataset_options: extra data-set options (e.g. ``{"palette": 3}``), validated by the loader.
        latent_dim: length of the latent vector z.
        batch_size: images per step (per process under torchrun).
        epochs: passes over the data set (ignored when ``steps`` is set).
        steps: total number of training steps; overrides ``epochs`` when set.
        loss: adversarial loss: ``bce`` (non-saturating), ``minimax`` or ``lsgan`` (least squares).
        lr_g: Adam learning rate of the generator.
        lr_d: Adam learning rate of the discriminator.
        lr_e: Adam learning rate of the encoder (``aae`` only).
        beta1: Adam beta1 of every optimizer.
        beta2: Adam beta2 of every optimizer.
        sample_interval: write a sample grid every this many steps (and at the end).
        checkpoint_interval: write ``checkpoints/step_NNNNNN.pt`` every this many steps (and at the end).
        keep_last: keep this many ``step_*.pt`` checkpoints besides ``latest.pt``.
        seed: seed of every random number generator (weights, noise, data order).
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
        amp: mixed precision: float16 autocast + GradScaler on CUDA, bfloat16 autocast on CPU.
        ema: decay of an exponential moving average of the generator weights (0 = off), warmed
            up over the first steps (see :class:`~ganport.trainer.ema.EMA`); when on, the EMA
            weights are what samples show and what export uses. None (the default) resolves to
            ``DEFAULT_EMA`` (0.999) for the GAN kinds and 0 for ``aae``, whose exported encoder
            must stay paired with the decoder it was trained with.
        arch: architecture preset of the convolutional kinds: ``default`` or ``simpsons`` (128 px report).
        aux_weight: conditional kinds: weight of the auxiliary classification loss (AC-GAN,
            Odena et al. 2017). The discriminator gets a class head on its features (fed the image
            without the label); D adds ``aux_weight * CE(class(x), y)`` on real images and G adds
            ``aux_weight * CE(class(G(z, y)), y)``. None (the default) resolves to
            ``DEFAULT_AUX_WEIGHT`` (0.5) for cgan/cdcgan and 0 for the other kinds; 0 gives the
            classic cGAN, whose only conditioning signal is D's label input. Measured on glyphs
            (cgan, 60 epochs, one CPU core, ``ganport eval -n 6200``): conditional accuracy 98.6%
            with projection + 0.5 (FD 15.8, precision/recall 0.84/0.44), 97.1% with projection +
            0.25 (FD 16.9, 0.81/0.48); on digits (200 epochs) 99.95% vs 99.91% (FD 24.3 vs 28.5).
            Earlier, shorter runs (4000 steps, glyphs before the baseline layout) showed why the
            weight stays moderate: 1.0 with the concatenated label reached 82% where 0 reached
            36.5%, but with collapsed variety (recall 0 on glyphs), and on digits 1.0 lost to 0.
        d_conditioning: how a conditional discriminator sees the label: ``concat`` (a label
            embedding concatenated with the image, or an extra plane for cdcgan) or ``projection``
            (Miyato & Koyama 2018: ``<embed(y), features(x)>`` added to the logit). None (the
            default) resolves to ``DEFAULT_D_CONDITIONING`` for cgan/cdcgan, ``concat`` (unused)
            for the other kinds.
        num_workers: DataLoader worker processes (0: load in the main process; data is in memory).
        resume: checkpoint to continue from (see :meth:`for_resume`).
        out_dir: folder under which each run gets its own directory.
        run_name: name of the run directory (None: ``KIND-DATASET-YYYYmmdd-HHMMSS``).
        log_every: append averaged losses to ``metrics.jsonl`` every this many steps.
        eval_every: every this many epochs, evaluate the generator (conditional accuracy, FD,
            AAE reconstruction; see :mod:`ganport.trainer.evaluation`) and log the figures with
            the losses (0 = off).
        eval_n: generated samples per periodic evaluation.
        tensorboard: also log losses, evaluation figures and sample grids to
            ``run_dir/tensorboard`` (needs the ``tensorboard`` package; off when missing).
        threads: torch intra-op threads (None: torch's default). One is often fastest for
            these small networks on a shared CPU.

    Example:
        >>> cfg = TrainConfig(kind="cgan", dataset="glyphs", steps=10)
        >>> cfg.validate().batch_size
        64
    """

    kind: str
    dataset: str
    data_root: str | None = None
    image_size: int | None = None
    n_samples: int | None = None
    dataset_options: dict[str, Any] = field(default_factory=dict)
    latent_dim: int = 100
    batch_size: int = 64
    epochs: int = 20
    steps: int | None = None
    loss: str = "bce"
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    lr_e: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    sample_interval: int = 200
    checkpoint_interval: int = 500
    keep_last: int = 3
    seed: int = 0
    device: str = "auto"
    amp: bool = False
    ema: float | None = None
    arch: str = "default"
    aux_weight: float | None = None
    d_conditioning: str | None = None
    num_workers: int = 0
    resume: str | None = None
    out_dir: str = "runs"
    run_name: str | None = None
    log_every: int = 50
    eval_every: int = 0
    eval_n: int = 2000
    tensorboard: bool = False
    threads: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict of every field (what ``config.json`` and checkpoints hold)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrainConfig":
        """Rebuild a config from :meth:`to_dict` output; unknown keys are an error.

        Raises:
            InvalidInputError: a key is not a TrainConfig field or a required one is missing.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise InvalidInputError(f"unknown training option(s): {', '.join(unknown)}",
                                    hint=f"valid options: {', '.join(sorted(names))}")
        for required in ("kind", "dataset"):
            if required not in data:
                raise InvalidInputError(f"training config lacks {required!r}")
        values = dict(data)
        # Configs written before these options existed trained the classic cGAN.
        values.setdefault("aux_weight", 0.0)
        values.setdefault("d_conditioning", "concat")
        values["dataset_options"] = dict(values.get("dataset_options") or {})
        return cls(**values)

    @classmethod
    def for_resume(cls, checkpoint_config: Mapping[str, Any], resume: str,
                   **overrides: Any) -> "TrainConfig":
        """The config of a resumed run: the checkpoint's config plus allowed overrides.

        Args:
            checkpoint_config: ``ckpt["config"]`` of the checkpoint to resume.
            resume: the checkpoint path (stored in the new config).
            **overrides: options the caller sets explicitly. Those in
                :data:`RESUMABLE_OVERRIDES` replace the checkpoint's value; any other option
                must equal the checkpoint's value.

        Returns:
            The validated config.

        Raises:
            InvalidInputError: an override changes an option that defines the trained model.

        Example:
            >>> TrainConfig.for_resume(ckpt["config"], "latest.pt", steps=2000)  # doctest: +SKIP
        """
        base = cls.from_dict(checkpoint_config).to_dict()
        for name, value in overrides.items():
            if name not in base:
                raise InvalidInputError(f"unknown training option {name!r}")
            if name not in RESUMABLE_OVERRIDES and value != base[name]:
                raise InvalidInputError(
                    f"cannot change {name} when resuming: the checkpoint was trained with "
                    f"{name}={base[name]!r}, got {value!r}",
                    hint=f"options that may change on resume: {', '.join(sorted(RESUMABLE_OVERRIDES))}")
            base[name] = value
        base["resume"] = str(resume)
        return cls.from_dict(base).validate()

    def conflicts_with(self, checkpoint_config: Mapping[str, Any]) -> list[str]:
        """Names of run-defining options that differ from a checkpoint's config."""
        other = TrainConfig.from_dict(checkpoint_config).to_dict()
        mine = self.to_dict()
        # A run name left unset means "the checkpoint's run", not a different one.
        skip = set(RESUMABLE_OVERRIDES) | ({"run_name"} if self.run_name is None else set())
        return [name for name in mine if name not in skip and mine[name] != other[name]]

    def validate(self) -> "TrainConfig":
        """Check every option; returns ``self`` so calls chain.

        Raises:
            InvalidInputError: naming the option, the bad value and the valid choices.
        """
        _choice("kind", self.kind, KINDS)
        _choice("loss", self.loss, LOSS_NAMES)
        _choice("device", self.device, DEVICES)
        _choice("arch", self.arch, ARCHS)
        conditional = self.kind in CONDITIONAL_KINDS
        if self.d_conditioning is None:
            self.d_conditioning = DEFAULT_D_CONDITIONING if conditional else "concat"
        _choice("d_conditioning", self.d_conditioning, D_CONDITIONINGS)
        if self.aux_weight is None:
            self.aux_weight = DEFAULT_AUX_WEIGHT if conditional else 0.0
        if (not isinstance(self.aux_weight, (int, float)) or isinstance(self.aux_weight, bool)
                or not math.isfinite(self.aux_weight) or self.aux_weight < 0):
            raise InvalidInputError(f"aux_weight={self.aux_weight!r} must be a number >= 0 (0 turns it off)")
        self.aux_weight = float(self.aux_weight)
        if not conditional and self.aux_weight > 0:
            raise InvalidInputError(f"aux_weight applies to conditional kinds only, not {self.kind!r}",
                                    hint="use cgan or cdcgan, or --aux-weight 0")
        if not conditional and self.d_conditioning != "concat":
            raise InvalidInputError(f"d_conditioning={self.d_conditioning!r} applies to conditional kinds only",
                                    hint="use cgan or cdcgan")
        if self.arch != "default" and self.kind not in CONV_KINDS:
            raise InvalidInputError(f"arch={self.arch!r} applies to convolutional kinds only, not {self.kind!r}",
                                    hint=f"use --arch default, or a kind among {', '.join(CONV_KINDS)}")
        if not isinstance(self.dataset, str) or not self.dataset:
            raise InvalidInputError("dataset must be a non-empty name", hint="`ganport datasets` lists them")
        for name in ("latent_dim", "batch_size", "epochs", "sample_interval", "checkpoint_interval",
                     "keep_last", "log_every", "eval_n"):
            _positive_int(name, getattr(self, name))
        for name in ("steps", "image_size", "n_samples", "threads"):
            if getattr(self, name) is not None:
                _positive_int(name, getattr(self, name))
        _int_at_least("num_workers", self.num_workers, 0)
        _int_at_least("eval_every", self.eval_every, 0)
        _int_at_least("seed", self.seed, 0)
        for name in ("lr_g", "lr_d", "lr_e"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < 1:
                raise InvalidInputError(f"{name}={value!r} must be a number in (0, 1)")
        for name in ("beta1", "beta2"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < 1:
                raise InvalidInputError(f"{name}={value!r} must be a number in [0, 1)")
        if self.ema is None:
            self.ema = 0.0 if self.kind == "aae" else DEFAULT_EMA
        if not isinstance(self.ema, (int, float)) or isinstance(self.ema, bool) or not 0 <= self.ema < 1:
            raise InvalidInputError(f"ema={self.ema!r} must be a decay in [0, 1) (0 turns EMA off)",
                                    hint="typical values are 0.999 or 0.9999")
        if not isinstance(self.amp, bool):
            raise InvalidInputError(f"amp={self.amp!r} must be true or false")
        if not isinstance(self.dataset_options, dict):
            raise InvalidInputError("dataset_options must be a mapping of option name to value")
        if self.run_name is not None and (not self.run_name or "/" in self.run_name
                                          or self.run_name in (".", "..")):
            raise InvalidInputError(f"run_name {self.run_name!r} must be a plain directory name")
        return self


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise InvalidInputError(f"unknown {name} {value!r}", hint=f"choose one of {', '.join(choices)}")


def _int_at_least(name: str, value: Any, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise InvalidInputError(f"{name}={value!r} must be an integer >= {low}")


def _positive_int(name: str, value: Any) -> None:
    _int_at_least(name, value, 1)
