"""The training loop: every kind, one run directory, resumable, single-process or torchrun.

Usage::

    from ganport.trainer import TrainConfig, train
    result = train(TrainConfig(kind="cgan", dataset="glyphs", epochs=5))
    result.run_dir, result.checkpoint, result.step

A run directory ``out_dir/<run_name>/`` holds:

- ``config.json``: the resolved :class:`TrainConfig` (``TrainConfig.from_dict`` reads it back);
- ``metrics.jsonl``: one JSON object per ``log_every`` steps with the window averages of
  ``d_loss, g_loss, d_real_loss, d_fake_loss, d_x, d_g_z`` (the adversarial terms; AAE also
  ``recon_loss, z_mean, z_std``; with ``aux_weight`` > 0 also ``d_aux_loss, g_aux_loss`` (the
  class cross-entropies) and ``d_class_acc, d_class_acc_fake`` (D's class head on the real
  batch / on G's output for the requested labels, as seen in the G step)), plus ``step`` (steps done), ``epoch`` (0-based epoch of the last step), ``time``
  (seconds of training, continued across resumes) and ``images_per_s``;
- ``samples/step_NNNNNN.png``: generator samples every ``sample_interval`` steps from latent
  vectors fixed for the whole run (conditional kinds: one row per class, the same z in each
  column), AAE also ``samples/recon_step_NNNNNN.png`` (rows of real images / reconstructions);
- ``loss_curve.png``: redrawn at every checkpoint and at the end;
- ``progress.gif``: the sample grids as an animation, written at the end
  (:mod:`ganport.trainer.animation`);
- ``checkpoints/latest.pt`` and the last ``keep_last`` ``checkpoints/step_NNNNNN.pt``.

Algorithms (one step function per family):

- adversarial kinds (gan, dcgan, cgan, cdcgan): draw z (and random labels for conditional
  kinds), D step on real vs G(z) detached, then G step through D; conditional kinds with
  ``aux_weight`` > 0 (the default) add the AC-GAN terms: D minimises
  ``aux_weight * CE(class(x), y)`` on the real batch and G ``aux_weight * CE(class(G(z, y)), y)``;
- aae: a reconstruction step updating E and G with
  ``MSE(x, G(E(x))) + MSE(E(x), 0) + MSE(E(x)^2, 1)^0.5``, then the same adversarial D and G
  steps with z ~ N(0, 1).

Reproducibility and resume: data order depends only on ``(seed, epoch)``
(:mod:`ganport.trainer.loader`), and each checkpoint stores the step, the position in the epoch,
weights, optimizer and AMP scaler states, the EMA weights and the RNG states. Resuming skips the
batches already seen in that epoch, so ``N`` steps + resume + ``N`` steps gives the same weights
as ``2N`` steps straight (single process, same machine). Under torchrun only rank 0's RNG state is
stored; the other ranks are reseeded from ``(seed, rank, step)`` on resume, so a resumed
distributed run is statistically, not bitwise, the same.

Device and precision: ``device="auto"`` uses CUDA when available. ``amp=True`` uses float16
autocast with a GradScaler on CUDA and bfloat16 autocast (no scaler needed) on CPU.

Signals: SIGINT/SIGTERM finish the current step, write ``latest.pt`` and return with
``result.interrupted`` set; a second signal kills at once (the atomic save keeps the previous
checkpoint intact). A run killed with SIGKILL leaves the last checkpoint written, and one is
written before the first step.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import math
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from ganport.atomic import clean_debris
from ganport.errors import CheckpointError, InvalidInputError
from ganport.progress import progress_bar
from ganport.trainer import distributed
from ganport.trainer.checkpoint import (capture_rng_state, load_checkpoint, network_entry,
                                        restore_rng_state, save_checkpoint)
from ganport.trainer.config import TrainConfig
from ganport.trainer.ema import EMA
from ganport.trainer.loader import make_loader
from ganport.trainer.losses import (aae_regularised_loss, auxiliary_class_loss, discriminator_loss,
                                    get_loss)
from ganport.trainer.models import build_networks
from ganport.runtime.images import make_grid, to_uint8
from ganport.runtime.manifest import CONDITIONAL_KINDS
from ganport.trainer.animation import write_progress_gif
from ganport.trainer.plots import save_loss_curve, save_sample_grid
from ganport.trainer.tb import TensorBoardLogger

logger = logging.getLogger(__name__)

#: Columns of the sample grid (conditional: per class row; unconditional: an 8 x 8 grid).
SAMPLE_COLUMNS = 8
_UNCONDITIONAL_SAMPLES = 64
_SAMPLE_CHUNK = 256  # images per generator call when drawing grids
_AAE_RECON_IMAGES = 32
# Seed offsets so sample latents and per-rank noise never share a stream with training.
_SAMPLE_SEED_OFFSET = 7919
_RECALIBRATION_SEED_OFFSET = 104_729
_RANK_SEED_STRIDE = 1_000_003


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Args:
        run_dir: the run directory.
        checkpoint: ``run_dir/checkpoints/latest.pt``.
        step: steps done in total (including those before a resume).
        epoch: epochs completed (``step // steps_per_epoch``).
        interrupted: name of the signal that stopped the run early (``"SIGINT"``), else None.
        metrics: the last row written to ``metrics.jsonl`` (empty when none was).
        config: the resolved configuration.
    """

    run_dir: Path
    checkpoint: Path
    step: int
    epoch: int
    interrupted: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    config: TrainConfig | None = None


def train(config: TrainConfig) -> TrainResult:
    """Train a model as ``config`` says and return where its files are.

    Args:
        config: the options; ``config.resume`` continues from a checkpoint, whose run-defining
            options must equal ``config``'s (build it with :meth:`TrainConfig.for_resume`).

    Returns:
        A :class:`TrainResult`.

    Raises:
        InvalidInputError: bad or conflicting options.
        DatasetError: the data set is unknown or its files are missing.
        CheckpointError: the resume file is missing, corrupt, foreign or does not fit.

    Example:
        >>> result = train(TrainConfig(kind="cgan", dataset="digits", steps=20))  # doctest: +SKIP
        >>> result.checkpoint.name  # doctest: +SKIP
        'latest.pt'
    """
    config.validate()
    resume_ckpt = _load_resume(config) if config.resume else None
    ctx = distributed.setup(config.device)
    try:
        return _Trainer(config, ctx, resume_ckpt).run()
    finally:
        distributed.teardown(ctx)


def _load_resume(config: TrainConfig) -> dict[str, Any]:
    """Load the resume checkpoint and check it fits ``config``."""
    ckpt = load_checkpoint(config.resume)
    saved = ckpt.get("config")
    if not isinstance(saved, dict):
        raise CheckpointError(f"{config.resume} has no training config, so it cannot be resumed")
    try:
        conflicts = config.conflicts_with(saved)
    except InvalidInputError as exc:
        raise CheckpointError(f"{config.resume}: its training config is unreadable ({exc})") from exc
    if conflicts:
        details = ", ".join(f"{name}={getattr(config, name)!r} (checkpoint: {saved.get(name)!r})"
                            for name in conflicts)
        raise InvalidInputError(f"cannot resume {config.resume} with different options: {details}",
                                hint="leave those options out when resuming")
    for key in ("optimizers", "epoch"):
        if key not in ckpt:
            raise CheckpointError(f"{config.resume} lacks {key!r}, so it cannot be resumed")
    if config.run_name is None:
        config.run_name = saved.get("run_name")
    return ckpt


class _Trainer:
    """One training run; :meth:`run` does everything and returns the result."""

    def __init__(self, config: TrainConfig, ctx: distributed.DistContext,
                 resume_ckpt: dict[str, Any] | None):
        self.config, self.ctx, self.resume_ckpt = config, ctx, resume_ckpt
        self.device = ctx.device
        self.conditional = config.kind in CONDITIONAL_KINDS
        self.loss = get_loss(config.loss)
        self.aux_weight = float(config.aux_weight or 0.0) if self.conditional else 0.0
        self._stop_signal: int | None = None
        self._records: list[dict[str, Any]] = []
        self._recalibrated_at: int | None = None

    # ----------------------------------------------------------------------------- set-up

    def _seed_everything(self) -> None:
        seed = self.config.seed
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        if self.device.type == "cuda":
            # Cheap determinism: fixed cuDNN algorithms instead of autotuned ones.
            torch.backends.cudnn.deterministic = True
            torch.backends.cudnn.benchmark = False

    def _load_data(self) -> None:
        from ganport.trainer.datasets import load_dataset

        cfg = self.config
        data = load_dataset(cfg.dataset, cfg.data_root, image_size=cfg.image_size, n=cfg.n_samples,
                            seed=cfg.seed, **cfg.dataset_options)
        if self.conditional and (data.labels is None or data.info.n_classes < 2):
            raise InvalidInputError(f"{cfg.kind} needs a labelled data set; {cfg.dataset} has no labels",
                                    hint="use gan, dcgan or aae, or a labelled data set such as glyphs")
        self.info = data.info
        self.loader, self.sampler = make_loader(
            data.images, data.labels if self.conditional else None, cfg.batch_size, cfg.seed,
            self.ctx.rank, self.ctx.world_size, cfg.num_workers,
            pin_memory=self.device.type == "cuda")
        self.steps_per_epoch = self.sampler.batches_per_epoch
        self.total_steps = cfg.steps if cfg.steps is not None else cfg.epochs * self.steps_per_epoch
        # Fixed real images for the AAE reconstruction grid (whole rows only).
        n_recon = min(_AAE_RECON_IMAGES, len(data)) // SAMPLE_COLUMNS * SAMPLE_COLUMNS
        self.recon_images = torch.from_numpy(data.images[:n_recon]).to(self.device)
        logger.info("data %s: %d images of shape %s, %d classes, %d steps per epoch",
                    cfg.dataset, len(data), data.info.image_shape, data.info.n_classes,
                    self.steps_per_epoch)

    def _build(self) -> None:
        cfg = self.config
        nets = build_networks(cfg.kind, self.info.image_shape, self.info.n_classes, cfg.latent_dim,
                              arch=cfg.arch, aux_classifier=self.aux_weight > 0,
                              projection=cfg.d_conditioning == "projection",
                              spectral_norm=cfg.spectral_norm, conditional_bn=cfg.conditional_bn,
                              d_dropout=cfg.d_dropout)
        self.nets = {role: net.to(self.device) for role, net in nets.items()}
        lrs = {"generator": cfg.lr_g, "discriminator": cfg.lr_d, "encoder": cfg.lr_e}
        # The fused kernel updates every tensor in one pass: a quarter of a CPU step was the
        # per-tensor Adam loop (docs/TRAINING.md, "Step cost on CPU").
        self.optimizers = {role: torch.optim.Adam(net.parameters(), lr=lrs[role],
                                                  betas=(cfg.beta1, cfg.beta2),
                                                  fused=self.device.type in ("cpu", "cuda"))
                           for role, net in self.nets.items()}
        self.ema = EMA(self.nets["generator"], cfg.ema) if cfg.ema > 0 else None
        use_amp = cfg.amp
        self.autocast_dtype = torch.float16 if self.device.type == "cuda" else torch.bfloat16
        self.use_amp = use_amp
        self.scaler = torch.amp.GradScaler(self.device.type,
                                           enabled=use_amp and self.device.type == "cuda")
        self.step, self.elapsed = 0, 0.0

    def _restore(self, ckpt: dict[str, Any]) -> None:
        """Load weights, optimizer/scaler/EMA state, position and RNG from a checkpoint."""
        try:
            for role, net in self.nets.items():
                net.load_state_dict(ckpt["networks"][role]["state_dict"])
            for role, opt in self.optimizers.items():
                opt.load_state_dict(ckpt["optimizers"][role])
            if self.ema is not None:
                self.ema.load_state_dict(ckpt.get("ema_generator") or
                                         ckpt["networks"]["generator"]["state_dict"])
            if ckpt.get("scaler") and self.scaler.is_enabled():
                self.scaler.load_state_dict(ckpt["scaler"])
        except (KeyError, RuntimeError, ValueError) as exc:
            reason = str(exc).splitlines()[0][:200]
            raise CheckpointError(f"{self.config.resume} does not fit this model: {reason}") from exc
        self.step = int(ckpt["step"])
        if self.step >= self.total_steps:
            raise InvalidInputError(
                f"{self.config.resume} is already at step {self.step}, and this run ends at step "
                f"{self.total_steps}", hint="pass a larger --steps or --epochs to train further")
        self.elapsed = float(ckpt.get("elapsed", 0.0))
        saved_bpe = ckpt.get("batches_per_epoch")
        if saved_bpe is not None and int(saved_bpe) != self.steps_per_epoch:
            logger.warning("steps per epoch changed from %s to %d (different world size?); the data "
                           "order after resume differs from an uninterrupted run",
                           saved_bpe, self.steps_per_epoch)
        if self.ctx.is_main:
            restore_rng_state(ckpt.get("rng") or {})
        else:
            torch.manual_seed(self.config.seed + _RANK_SEED_STRIDE * self.ctx.rank + self.step)
        logger.info("resumed from %s at step %d", self.config.resume, self.step)

    def _wrap_distributed(self) -> None:
        """Wrap the networks in DDP under torchrun (``self.nets`` keeps the plain modules)."""
        self.models: dict[str, nn.Module] = dict(self.nets)
        if not self.ctx.distributed:
            return
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [self.device.index] if self.device.type == "cuda" else None
        # No buffer sync on forward: each rank keeps its own BatchNorm statistics (rank 0's are
        # saved); an in-place broadcast on every forward can break the reused-graph GAN step.
        # torch >= 2.13 renamed the switch (the old name warns).
        params = inspect.signature(DDP.__init__).parameters
        no_sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in params
                   else {"broadcast_buffers": False})
        self.models = {role: DDP(net, device_ids=ids, **no_sync) for role, net in self.nets.items()}

    def _make_run_dir(self) -> Path:
        cfg = self.config
        if cfg.resume:
            resume_path = Path(cfg.resume).resolve()
            if resume_path.parent.name == "checkpoints" and (resume_path.parent.parent / "config.json").is_file():
                return resume_path.parent.parent
            return Path(cfg.out_dir) / str(cfg.run_name)
        if cfg.run_name:
            run_dir = Path(cfg.out_dir) / cfg.run_name
            if (run_dir / "config.json").exists():
                raise InvalidInputError(f"run directory {run_dir} already holds a run",
                                        hint="pick another --run-name, or continue it with --resume")
            return run_dir
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        base = f"{cfg.kind}-{cfg.dataset}-{stamp}"
        run_dir, n = Path(cfg.out_dir) / base, 1
        while run_dir.exists():  # two runs started in the same second
            n += 1
            run_dir = Path(cfg.out_dir) / f"{base}-{n}"
        return run_dir

    def _setup_run_dir(self) -> None:
        run_dir = self._make_run_dir() if self.ctx.is_main else Path()
        run_dir = Path(_broadcast_str(self.ctx, str(run_dir)))
        self.run_dir = run_dir
        self.config.run_name = run_dir.name
        self.ckpt_dir = run_dir / "checkpoints"
        self.sample_dir = run_dir / "samples"
        self.metrics_path = run_dir / "metrics.jsonl"
        self.tb = TensorBoardLogger(run_dir / "tensorboard", enabled=self.ctx.is_main and self.config.tensorboard)
        if not self.ctx.is_main:
            return
        self.sample_dir.mkdir(parents=True, exist_ok=True)
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        # Temp files of checkpoint writes a kill -9 interrupted (.step_N.pt.<host>-<pid>.XXXX.tmp):
        # removed when their writer is gone (ganport.atomic.clean_debris says what is stale).
        clean_debris(self.ckpt_dir, kinds=("tmp",))
        (run_dir / "config.json").write_text(json.dumps(self.config.to_dict(), indent=2) + "\n")
        self._records = self._read_metrics(upto=self.step)

    def _read_metrics(self, upto: int) -> list[dict[str, Any]]:
        """Previous metrics of a resumed run; rows after the resumed step are dropped."""
        if not self.metrics_path.exists():
            return []
        rows = []
        for line in self.metrics_path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a kill
            if isinstance(row, dict) and row.get("step", math.inf) <= upto:
                rows.append(row)
        self.metrics_path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return rows

    def _fixed_sample_inputs(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Latents (and labels) reused for every sample grid of the run."""
        gen = torch.Generator().manual_seed(self.config.seed + _SAMPLE_SEED_OFFSET)
        if self.conditional:
            n_classes = self.info.n_classes
            columns = torch.randn(SAMPLE_COLUMNS, self.config.latent_dim, generator=gen)
            z = columns.repeat(n_classes, 1)
            labels = torch.arange(n_classes).repeat_interleave(SAMPLE_COLUMNS)
            return z.to(self.device), labels.to(self.device)
        z = torch.randn(_UNCONDITIONAL_SAMPLES, self.config.latent_dim, generator=gen)
        return z.to(self.device), None

    # ----------------------------------------------------------------------------- steps

    def _autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.use_amp)

    def _optimize(self, loss: torch.Tensor, *roles: str) -> None:
        """Backpropagate ``loss`` and step the optimizers of ``roles`` (grads zeroed first)."""
        self.scaler.scale(loss).backward()
        for role in roles:
            self.scaler.step(self.optimizers[role])
        # One update per step group: the AAE steps the generator twice per batch.
        self.scaler.update()

    def _zero_grad(self, *roles: str) -> None:
        for role in roles:
            self.optimizers[role].zero_grad(set_to_none=True)

    def _generate(self, model: nn.Module, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        return model(z, labels) if self.conditional else model(z)

    def _discriminate(self, images: torch.Tensor, labels: torch.Tensor | None,
                      with_classes: bool = False) -> Any:
        d = self.models["discriminator"]
        if with_classes:
            return d(images, labels, with_classes=True)
        return d(images, labels) if self.conditional else d(images)

    @contextlib.contextmanager
    def _discriminator_frozen(self) -> Iterator[None]:
        """During the G step D needs no weight gradients (and under DDP no gradient sync)."""
        d_net = self.nets["discriminator"]
        d_net.requires_grad_(False)
        sync_off = self.models["discriminator"].no_sync() if self.ctx.distributed else contextlib.nullcontext()
        try:
            with sync_off:
                yield
        finally:
            d_net.requires_grad_(True)

    def _adversarial_step(self, real: torch.Tensor, real_labels: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """One D step and one G step (every kind; the AAE runs it after its reconstruction step)."""
        n = real.shape[0]
        z = torch.randn(n, self.config.latent_dim, device=self.device)
        fake_labels = (torch.randint(0, self.info.n_classes, (n,), device=self.device)
                       if self.conditional else None)
        with self._autocast():
            fake = self._generate(self.models["generator"], z, fake_labels)

        self._zero_grad("discriminator")
        aux = self.aux_weight > 0
        # Spectral norm: one normalised weight per layer for both D passes (real and fake), not
        # one per pass; the weights only change at the optimizer step.
        with self._autocast(), parametrize.cached():
            if aux:
                real_logits, real_classes = self._discriminate(real, real_labels, with_classes=True)
            else:
                real_logits = self._discriminate(real, real_labels)
            fake_logits = self._discriminate(fake.detach(), fake_labels)
            d_loss, d_real, d_fake = discriminator_loss(self.loss, real_logits, fake_logits)
            d_total = d_loss
            if aux:
                # Real images only: D learning to classify G's early, unformed output would teach
                # G nothing and pull D's class head away from the real classes.
                d_aux = auxiliary_class_loss(real_classes, real_labels)
                d_total = d_loss + self.aux_weight * d_aux
        self._optimize(d_total, "discriminator")

        self._zero_grad("generator")
        with self._discriminator_frozen():
            with self._autocast():
                if aux:
                    g_logits, g_classes = self._discriminate(fake, fake_labels, with_classes=True)
                    g_loss = self.loss.fn(g_logits, "generator")
                    g_aux = auxiliary_class_loss(g_classes, fake_labels)
                    g_total = g_loss + self.aux_weight * g_aux
                else:
                    g_loss = g_total = self.loss.fn(self._discriminate(fake, fake_labels), "generator")
            self._optimize(g_total, "generator")
        if self.ema is not None:
            self.ema.update(self.nets["generator"], self.step)
        metrics = {"d_loss": d_loss, "g_loss": g_loss, "d_real_loss": d_real, "d_fake_loss": d_fake,
                   "d_x": self.loss.score(real_logits.float()).mean(),
                   "d_g_z": self.loss.score(fake_logits.float()).mean()}
        if aux:
            metrics.update(d_aux_loss=d_aux, g_aux_loss=g_aux,
                           d_class_acc=(real_classes.argmax(1) == real_labels).float().mean(),
                           d_class_acc_fake=(g_classes.detach().argmax(1) == fake_labels).float().mean())
        return metrics

    def _aae_step(self, real: torch.Tensor, _labels: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Reconstruction step (E and G), then the adversarial D and G steps."""
        self._zero_grad("encoder", "generator")
        with self._autocast():
            codes = self.models["encoder"](real)
            recon = self.models["generator"](codes)
            l_eg, recon_loss = aae_regularised_loss(real, recon.float(), codes.float())
        self._optimize(l_eg, "encoder", "generator")
        metrics = self._adversarial_step(real, None)
        codes = codes.detach().float()
        metrics.update(recon_loss=recon_loss, eg_loss=l_eg, z_mean=codes.mean(), z_std=codes.std())
        return metrics

    # ----------------------------------------------------------------------------- outputs

    @torch.no_grad()
    def _write_samples(self) -> None:
        generator = self.ema.module if self.ema is not None else self.nets["generator"]
        was_training = generator.training
        generator.eval()  # BatchNorm running statistics, as in the exported model
        try:
            z, labels = self.sample_inputs
            chunks = [self._generate(generator, z[i:i + _SAMPLE_CHUNK],
                                     None if labels is None else labels[i:i + _SAMPLE_CHUNK])
                      for i in range(0, len(z), _SAMPLE_CHUNK)]
            images = torch.cat(chunks).float().cpu().numpy()
            save_sample_grid(self.sample_dir / f"step_{self.step:06d}.png", images, SAMPLE_COLUMNS,
                             self.info.value_range)
            if self.tb.active:
                grid = make_grid(to_uint8(images, self.info.value_range), nrow=SAMPLE_COLUMNS)
                self.tb.images("samples", grid, self.step)
            if self.config.kind == "aae" and len(self.recon_images):
                recon = generator(self.nets["encoder"].eval()(self.recon_images))
                self.nets["encoder"].train()
                # Rows alternate: 8 real images, then their reconstructions.
                pairs = torch.stack([self.recon_images.view(-1, SAMPLE_COLUMNS, *recon.shape[1:]),
                                     recon.float().view(-1, SAMPLE_COLUMNS, *recon.shape[1:])], dim=1)
                save_sample_grid(self.sample_dir / f"recon_step_{self.step:06d}.png",
                                 pairs.reshape(-1, *recon.shape[1:]).cpu().numpy(), SAMPLE_COLUMNS,
                                 self.info.value_range)
        finally:
            generator.train(was_training)

    def _checkpoint_payload(self) -> dict[str, Any]:
        return {
            "kind": self.config.kind,
            "networks": {role: network_entry(net) for role, net in self.nets.items()},
            "ema_generator": self.ema.state_dict() if self.ema is not None else None,
            "optimizers": {role: opt.state_dict() for role, opt in self.optimizers.items()},
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "config": self.config.to_dict(),
            "step": self.step,
            "epoch": self.step // self.steps_per_epoch,
            "batch_in_epoch": self.step % self.steps_per_epoch,
            "batches_per_epoch": self.steps_per_epoch,
            "elapsed": self.elapsed,
            "rng": capture_rng_state(),
            "data": {**self.info.to_dict(), "dataset": self.config.dataset},
            "metrics": self._records[-1] if self._records else {},
        }

    def _recalibrate_ema(self) -> None:
        """Standing BatchNorm statistics for the EMA generator's own weights (once per step).

        Between calls the EMA copies the trained network's statistics at every update, which is
        what the sample grids of the run show; the final checkpoint, the last grid and periodic
        evaluations get these. The inputs come from a generator of their own, so the training
        streams (and a resumed run) are not disturbed.
        """
        if self.ema is None or self._recalibrated_at == self.step:
            return
        gen = torch.Generator().manual_seed(self.config.seed + _RECALIBRATION_SEED_OFFSET)

        def make_inputs(n: int) -> tuple[torch.Tensor, ...]:
            z = torch.randn(n, self.config.latent_dim, generator=gen).to(self.device)
            if not self.conditional:
                return (z,)
            return z, torch.randint(0, self.info.n_classes, (n,), generator=gen).to(self.device)

        start = time.perf_counter()
        used = self.ema.recalibrate(make_inputs)
        self._recalibrated_at = self.step
        if used:
            logger.debug("EMA BatchNorm statistics re-estimated from %d latents in %.2f s",
                         used, time.perf_counter() - start)

    def _write_checkpoint(self, numbered: bool = True) -> Path:
        """Write ``step_NNNNNN.pt`` (when ``numbered``) and ``latest.pt``; prune old ones.

        The last checkpoint of a run (its final step, or a stop) holds EMA weights with their own
        BatchNorm statistics (:meth:`_recalibrate_ema`); earlier ones keep the copied ones, which
        saves the re-estimate's second or so per checkpoint.
        """
        if self.step >= self.total_steps or self._stop_signal is not None:
            self._recalibrate_ema()
        latest = self.ckpt_dir / "latest.pt"
        payload = self._checkpoint_payload()
        if not numbered:
            return save_checkpoint(latest, payload)
        path = save_checkpoint(self.ckpt_dir / f"step_{self.step:06d}.pt", payload)
        _replace_with_link(path, latest, payload)
        numbered_files = sorted(self.ckpt_dir.glob("step_*.pt"), key=_step_number)
        for old in numbered_files[:-self.config.keep_last]:
            old.unlink(missing_ok=True)
        save_loss_curve(self.run_dir / "loss_curve.png", self._records, self.run_dir.name)
        logger.debug("checkpoint %s", path)
        return path

    def _log(self, window: list[dict[str, torch.Tensor]], epoch: int, images: int, seconds: float,
             extra: dict[str, float] | None = None) -> dict[str, Any]:
        """Average the window's metrics (over ranks too) and append a row on rank 0.

        ``extra`` (periodic evaluation figures) joins the same row, so the loss curve, which
        reads the last row's keys, keeps its loss lines.
        """
        keys = list(window[0])
        means = torch.stack([torch.stack([m[k].detach().float() for m in window]).mean() for k in keys])
        means = distributed.mean_across_ranks(self.ctx, means).tolist()
        row: dict[str, Any] = {"step": self.step, "epoch": epoch}
        row.update({k: float(v) for k, v in zip(keys, means)})
        row["time"] = round(self.elapsed, 3)
        row["images_per_s"] = round(images * self.ctx.world_size / max(seconds, 1e-9), 1)
        bad = [k for k in keys if not math.isfinite(row[k])]
        if bad:
            logger.warning("step %d: non-finite %s", self.step, ", ".join(bad))
        row.update(extra or {})
        if self.ctx.is_main:
            with self.metrics_path.open("a") as handle:
                handle.write(json.dumps(row) + "\n")
            self._records.append(row)
            self.tb.scalars(row, self.step)
        return row

    def _evaluate(self) -> dict[str, float]:
        """Periodic evaluation figures (rank 0 only; other ranks return nothing)."""
        if not self.ctx.is_main:
            return {}
        from ganport.trainer import evaluation

        self._recalibrate_ema()
        generator = self.ema.module if self.ema is not None else self.nets["generator"]
        figures = evaluation.evaluate_during_training(self.config, self.info, generator,
                                                      self.nets.get("encoder"), n=self.config.eval_n)
        logger.info("step %d evaluation: %s", self.step,
                    ", ".join(f"{k}={v:.4g}" for k, v in figures.items()))
        return figures

    # ----------------------------------------------------------------------------- loop

    def _install_signal_handlers(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}

        def handler(signum: int, _frame: Any) -> None:
            self._stop_signal = signum
            # A second signal acts at once; the atomic save keeps the last checkpoint whole.
            for sig, old in previous.items():
                signal.signal(sig, old)

        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        for sig in previous:
            signal.signal(sig, handler)
        return previous

    def _should_stop(self) -> bool:
        stop = self._stop_signal is not None
        if self.ctx.distributed:  # every rank must leave the loop at the same step
            flag = torch.tensor([float(stop)], device=self.device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            stop = bool(flag.item())
            if stop and self._stop_signal is None:
                self._stop_signal = signal.SIGTERM
        return stop

    def run(self) -> TrainResult:
        cfg = self.config
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self._seed_everything()
        self._load_data()
        self._build()
        if self.resume_ckpt is not None:
            self._restore(self.resume_ckpt)
            self.resume_ckpt = None  # free the memory
        elif self.ctx.rank > 0:
            torch.manual_seed(cfg.seed + _RANK_SEED_STRIDE * self.ctx.rank)  # distinct noise per rank
        self._wrap_distributed()
        self._setup_run_dir()
        self.sample_inputs = self._fixed_sample_inputs()
        step_fn = self._aae_step if cfg.kind == "aae" else self._adversarial_step
        if self.ctx.is_main and cfg.eval_every:
            # Train/load the reference classifier now, not mid-loop where other ranks would wait.
            from ganport.trainer import evaluation

            evaluation.prepare_evaluation(cfg, self.info, n=cfg.eval_n)
        if self.ctx.is_main:
            logger.info("run %s: %s on %s, %d steps (%d per epoch)", self.run_dir, cfg.kind,
                        self.device, self.total_steps, self.steps_per_epoch)
            if not (self.ckpt_dir / "latest.pt").exists():
                self._write_checkpoint(numbered=False)  # a kill before the first interval still leaves one
        previous_handlers = self._install_signal_handlers()
        try:
            self._loop(step_fn)
        finally:
            for sig, old in previous_handlers.items():
                signal.signal(sig, old)
            self.tb.close()
        latest = self.ckpt_dir / "latest.pt"
        if self.ctx.is_main:
            self._finish()
        distributed.barrier(self.ctx)
        name = signal.Signals(self._stop_signal).name if self._stop_signal is not None else None
        return TrainResult(self.run_dir, latest, self.step, self.step // self.steps_per_epoch, name,
                           self._records[-1] if self._records else {}, cfg)

    def _loop(self, step_fn: Any) -> None:
        cfg = self.config
        for model in self.models.values():
            model.train()
        n_epochs = math.ceil(self.total_steps / self.steps_per_epoch)
        # A live bar on a terminal; redirected (a log file, a sweep worker), one line per log interval.
        bar = progress_bar(self.total_steps, initial=self.step, enabled=self.ctx.is_main, file=sys.stderr,
                           unit="step", every=cfg.log_every)
        window: list[dict[str, torch.Tensor]] = []
        window_images, window_start = 0, time.perf_counter()
        display_every = max(1, min(10, cfg.log_every))
        try:
            while self.step < self.total_steps and not self._should_stop():
                epoch, start_batch = divmod(self.step, self.steps_per_epoch)
                self.sampler.set_epoch(epoch, start_batch)
                bar.set_description(f"epoch {epoch + 1}/{n_epochs}")
                for batch_index, (images, labels) in enumerate(self.loader, start=start_batch):
                    step_start = time.perf_counter()
                    images = images.to(self.device, non_blocking=True)
                    labels = labels.to(self.device, non_blocking=True) if self.conditional else None
                    window.append({k: v.detach() for k, v in step_fn(images, labels).items()})
                    window_images += images.shape[0]
                    self.step += 1
                    self.elapsed += time.perf_counter() - step_start
                    postfix: dict[str, str] = {}
                    if self.step % display_every == 0 or self.step % cfg.log_every == 0:
                        latest = {k: float(v) for k, v in window[-1].items()
                                  if k in ("d_loss", "g_loss", "recon_loss")}
                        postfix = {"batch": f"{batch_index + 1}/{self.steps_per_epoch}",
                                   **{k: f"{v:.3f}" for k, v in latest.items()}}
                    bar.update(1, **postfix)
                    done = self.step >= self.total_steps
                    eval_due = bool(cfg.eval_every) and self.step % (cfg.eval_every * self.steps_per_epoch) == 0
                    if self.step % cfg.log_every == 0 or done or eval_due:
                        self._log(window, epoch, window_images, time.perf_counter() - window_start,
                                  extra=self._evaluate() if eval_due else None)
                        window, window_images, window_start = [], 0, time.perf_counter()
                    # The checkpoint first: at the last step its EMA statistics are the grid's too.
                    if self.ctx.is_main and self.step % cfg.checkpoint_interval == 0:
                        self._write_checkpoint()
                    if self.ctx.is_main and self.step % cfg.sample_interval == 0:
                        self._write_samples()
                    if done or self._should_stop():
                        break
        finally:
            bar.close()
        if window:  # a stop between log rows: keep its numbers
            self._log(window, (self.step - 1) // self.steps_per_epoch, window_images,
                      time.perf_counter() - window_start)

    def _finish(self) -> None:
        """Final samples, checkpoint and loss curve (skipping what this step already wrote)."""
        if self.step % self.config.checkpoint_interval or self.step == 0:
            self._write_checkpoint()
        else:
            save_loss_curve(self.run_dir / "loss_curve.png", self._records, self.run_dir.name)
        if self.step % self.config.sample_interval or self.step == 0:
            self._write_samples()
        if self._stop_signal is not None:
            logger.warning("stopped by %s at step %d; checkpoint written",
                           signal.Signals(self._stop_signal).name, self.step)
        else:  # a stopped run exits at once; `ganport animate RUN` makes its GIF later
            write_progress_gif(self.run_dir)


def _step_number(path: Path) -> int:
    """``step_000500.pt`` -> 500 (sorting by name breaks past 999999 steps)."""
    try:
        return int(path.stem.split("_", 1)[1])
    except (IndexError, ValueError):
        return -1


def _replace_with_link(source: Path, target: Path, payload: dict[str, Any]) -> None:
    """Make ``target`` the same file as ``source`` atomically (hard link + rename).

    Falls back to writing the payload again where hard links are not supported.
    """
    tmp = target.with_name(f".{target.name}.link")
    try:
        tmp.unlink(missing_ok=True)
        tmp.hardlink_to(source)
        tmp.replace(target)
    except OSError:
        tmp.unlink(missing_ok=True)
        save_checkpoint(target, payload)


def _broadcast_str(ctx: distributed.DistContext, text: str, max_bytes: int = 4096) -> str:
    """Rank 0's string on every rank (the run directory), as a fixed-size byte tensor."""
    if not ctx.distributed:
        return text
    buffer = torch.zeros(max_bytes, dtype=torch.uint8, device=ctx.device)
    if ctx.is_main:
        data = text.encode()[:max_bytes]
        buffer[:len(data)] = torch.tensor(list(data), dtype=torch.uint8)
    torch.distributed.broadcast(buffer, src=0)
    return bytes(buffer.cpu().tolist()).rstrip(b"\0").decode()
