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
from ganport.runtime.manifest import CONDITIONAL_KINDS, CONV_KINDS, KINDS

logger = logging.getLogger(__name__)

# KINDS (what ``train`` accepts) and CONDITIONAL_KINDS come from ganport.runtime.manifest, their one
# home; the networks live in :mod:`ganport.trainer.models`.
LOSS_NAMES = ("bce", "minimax", "lsgan", "hinge")
#: How a conditional discriminator sees the label (``d_conditioning``).
D_CONDITIONINGS = ("concat", "projection")
#: ``aux_weight`` a conditional kind gets when it is left unset (None).
DEFAULT_AUX_WEIGHT = 0.5
#: ``ema`` a GAN kind gets when it is left unset (None); ``aae`` gets 0.
DEFAULT_EMA = 0.999
#: ``d_conditioning`` a conditional kind gets when it is left unset (None).
DEFAULT_D_CONDITIONING = "projection"
#: ``d_dropout`` each kind gets when it is left unset (None): the dropout its discriminator had
#: before the option existed, so a checkpoint without it rebuilds the same network.
DEFAULT_D_DROPOUT = {"gan": 0.0, "cgan": 0.4, "dcgan": 0.25, "cdcgan": 0.25, "aae": 0.25}
DEVICES = ("auto", "cpu", "cuda")
#: Architecture presets of the convolutional kinds (``--arch``): generator/discriminator
#: constructor arguments by name (the network code reads them in ``build_networks``).
ARCH_PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    # The 128x128 Simpsons-faces report: Linear to 512x8x8, nearest upsampling + 9x9 convolutions.
    "simpsons": {"start_channels": 512, "kernel_size": 9},
}
ARCHS = tuple(ARCH_PRESETS)

#: Options that may differ between a checkpoint's config and a resumed run.
RESUMABLE_OVERRIDES = frozenset({
    "epochs", "steps", "sample_interval", "checkpoint_interval", "keep_last", "device",
    "num_workers", "resume", "out_dir", "log_every", "amp", "eval_every", "eval_n", "tensorboard",
    "threads",
})


def _help(text: str, **cli: Any) -> dict[str, Any]:
    """Field metadata: ``help`` (docstring and ``ganport train --help``) plus CLI details
    (``flag``: another flag name, ``positional``: the positional argument, ``metavar``)."""
    return {"help": text, **cli}


@dataclass
class TrainConfig:
    """Every option of a training run (defaults train well on the built-in sets).

    One field per option; each field's ``metadata["help"]`` is its documentation, listed below
    under Args and shown by ``ganport train --help``, whose flags are made from these fields
    (:func:`ganport.trainer.cli.train_options`): the flag of ``lr_g`` is ``--lr-g``.

    Example:
        >>> cfg = TrainConfig(kind="cgan", dataset="glyphs", steps=10)
        >>> cfg.validate().batch_size
        64
    """

    kind: str = field(metadata=_help(
        "model kind: gan (MLP GAN), dcgan (convolutional), cgan (conditional MLP), cdcgan "
        "(conditional convolutional) or aae (adversarial autoencoder)", positional=True))
    dataset: str = field(metadata=_help("data set name (`ganport datasets` lists them), e.g. glyphs"))
    data_root: str | None = field(default=None, metadata=_help(
        "folder holding the files of a file-based data set (mnist, fashion-mnist, cifar10, folder...)"))
    image_size: int | None = field(default=None, metadata=_help(
        "resize images to N x N (default: the data set's size)"))
    n_samples: int | None = field(default=None, metadata=_help(
        "use at most N images of the set, a deterministic subset (default: all)"))
    dataset_options: dict[str, Any] = field(default_factory=dict, metadata=_help(
        "data-set option (repeatable), e.g. palette=3; validated by the loader",
        flag="--dataset-option", metavar="KEY=VALUE"))
    latent_dim: int = field(default=100, metadata=_help("length of the latent vector z"))
    batch_size: int = field(default=64, metadata=_help("images per step (per process under torchrun)"))
    epochs: int = field(default=20, metadata=_help("passes over the data set (ignored when steps is set)"))
    steps: int | None = field(default=None, metadata=_help("total training steps; overrides epochs when set"))
    loss: str = field(default="bce", metadata=_help(
        "adversarial loss (bce: non-saturating, lsgan: least squares, hinge: margin 1 for D)",
        choices=LOSS_NAMES))
    lr_g: float = field(default=2e-4, metadata=_help("Adam learning rate of the generator"))
    lr_d: float = field(default=2e-4, metadata=_help("Adam learning rate of the discriminator"))
    lr_e: float = field(default=2e-4, metadata=_help("Adam learning rate of the encoder (aae only)"))
    beta1: float = field(default=0.5, metadata=_help("Adam beta1 of every optimizer"))
    beta2: float = field(default=0.999, metadata=_help("Adam beta2 of every optimizer"))
    sample_interval: int = field(default=200, metadata=_help(
        "write a sample grid every N steps (and at the end)"))
    checkpoint_interval: int = field(default=500, metadata=_help(
        "write checkpoints/step_NNNNNN.pt every N steps (and at the end)"))
    keep_last: int = field(default=3, metadata=_help("numbered checkpoints to keep besides latest.pt"))
    seed: int = field(default=0, metadata=_help("seed of every random number generator (weights, noise, data order)"))
    device: str = field(default="auto", metadata=_help("where to train (auto: CUDA when available)", choices=DEVICES))
    amp: bool = field(default=False, metadata=_help(
        "mixed precision: float16 autocast + GradScaler on CUDA, bfloat16 autocast on CPU"))
    ema: float | None = field(default=None, metadata=_help(
        f"decay of an exponential moving average of the generator weights (0 = off), warmed up over the "
        f"first steps; when on, the EMA weights are what samples show and what export uses (default "
        f"{DEFAULT_EMA} for the GAN kinds, 0 for aae, whose exported encoder must stay paired with the "
        f"decoder it was trained with)"))
    arch: str = field(default="default", metadata=_help(
        "architecture preset of the convolutional kinds (simpsons: the 128 px report's)", choices=ARCHS))
    aux_weight: float | None = field(default=None, metadata=_help(
        f"cgan/cdcgan: weight of the AC-GAN auxiliary classification loss (Odena et al. 2017): D gets a "
        f"class head on its features, D adds aux_weight * CE(class(x), y) on real images and G adds "
        f"aux_weight * CE(class(G(z, y)), y); 0 = the classic cGAN (default {DEFAULT_AUX_WEIGHT} for "
        f"conditional kinds, 0 for the others; measurements in docs/TRAINING.md)"))
    d_conditioning: str | None = field(default=None, metadata=_help(
        f"cgan/cdcgan: how D sees the label: concat (a label embedding concatenated with the image, an "
        f"extra plane for cdcgan; the classic cGAN) or projection (Miyato & Koyama 2018: <embed(y), "
        f"features(x)> added to the logit) (default {DEFAULT_D_CONDITIONING} for conditional kinds)",
        choices=D_CONDITIONINGS))
    d_dropout: float | None = field(default=None, metadata=_help(
        "dropout in the discriminator: after each hidden layer but the first (MLP kinds) or after "
        "each convolution (2-D dropout; convolutional kinds) (default: "
        + ", ".join(f"{k} {v:g}" for k, v in DEFAULT_D_DROPOUT.items())
        + "; measurements in docs/TRAINING.md)"))
    spectral_norm: bool = field(default=False, metadata=_help(
        "spectral normalisation of the discriminator's layers (Miyato et al. 2018)"))
    conditional_bn: bool = field(default=False, metadata=_help(
        "cgan: per-class gains and biases on the generator's BatchNorm layers (conditional batch "
        "normalisation), besides the label embedding at its input"))
    num_workers: int = field(default=0, metadata=_help(
        "DataLoader worker processes (0: load in the main process; data is in memory)"))
    resume: str | None = field(default=None, metadata=_help(
        "continue from a checkpoint, in its run directory; options left out are taken from the "
        "checkpoint (see TrainConfig.for_resume)", metavar="PATH"))
    out_dir: str = field(default="runs", metadata=_help("folder under which each run gets its own directory"))
    run_name: str | None = field(default=None, metadata=_help(
        "name of the run directory (default KIND-DATASET-YYYYmmdd-HHMMSS)"))
    log_every: int = field(default=50, metadata=_help("append averaged losses to metrics.jsonl every N steps"))
    eval_every: int = field(default=0, metadata=_help(
        "evaluate the generator every N epochs (conditional accuracy, FD, AAE reconstruction; see "
        "ganport.trainer.evaluation) and log the figures with the losses (0 = off)"))
    eval_n: int = field(default=2000, metadata=_help("generated samples per periodic evaluation"))
    tensorboard: bool = field(default=False, metadata=_help(
        "also log losses, evaluation figures and sample grids to RUN_DIR/tensorboard (needs the "
        "tensorboard package; off when missing)"))
    threads: int | None = field(default=None, metadata=_help(
        "torch intra-op threads (default: torch's choice); one is often fastest for these small "
        "networks on a shared CPU"))

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
        values.setdefault("spectral_norm", False)
        values.setdefault("conditional_bn", False)
        if values.get("d_dropout") is None and values["kind"] in DEFAULT_D_DROPOUT:
            values["d_dropout"] = DEFAULT_D_DROPOUT[values["kind"]]
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
        if self.d_dropout is None:
            self.d_dropout = DEFAULT_D_DROPOUT[self.kind]
        if (not isinstance(self.d_dropout, (int, float)) or isinstance(self.d_dropout, bool)
                or not 0 <= self.d_dropout < 1):
            raise InvalidInputError(f"d_dropout={self.d_dropout!r} must be a probability in [0, 1) (0 turns it off)")
        self.d_dropout = float(self.d_dropout)
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
        if self.conditional_bn is True and self.kind != "cgan":
            raise InvalidInputError(f"conditional_bn applies to cgan only, not {self.kind!r}")
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
        for name in ("amp", "spectral_norm", "conditional_bn"):
            if not isinstance(getattr(self, name), bool):
                raise InvalidInputError(f"{name}={getattr(self, name)!r} must be true or false")
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


def option_help(f: dataclasses.Field) -> str:
    """A field's full help: its ``metadata["help"]`` plus its choices and default.

    Shared by the docstring's Args section and ``ganport train --help``.

    Example:
        >>> option_help(next(f for f in dataclasses.fields(TrainConfig) if f.name == "epochs"))
        'passes over the data set (ignored when steps is set) (default 20)'
    """
    parts = []
    if f.metadata.get("choices"):
        parts.append("one of " + ", ".join(f.metadata["choices"]))
    default = f.default
    if isinstance(default, bool):
        parts.append(f"default {'on' if default else 'off'}")
    elif isinstance(default, float):
        parts.append(f"default {default:g}")
    elif default is not None and default is not dataclasses.MISSING:
        parts.append(f"default {default}")
    text = f.metadata["help"]
    return f"{text} ({'; '.join(parts)})" if parts else text


def _args_section() -> str:
    """The docstring's Args section, from each field's help (the one source of that text)."""
    import textwrap

    lines = ["", "    Args:"]
    for f in dataclasses.fields(TrainConfig):
        lines += textwrap.wrap(f"{f.name}: {option_help(f)}.", width=96, initial_indent=" " * 8,
                               subsequent_indent=" " * 12)
    return "\n".join(lines) + "\n"


TrainConfig.__doc__ = (TrainConfig.__doc__ or "").rstrip() + "\n" + _args_section()
