"""``ganport train`` and ``ganport datasets``.

Nothing heavy is imported at module level: ``ganport --help`` works without torch, and
``ganport datasets`` needs only numpy (the data-set layer is torch-free).

Examples::

    ganport train cgan --dataset glyphs --epochs 5
    ganport train dcgan --dataset folder --data-root ~/simpsons --image-size 128 --arch simpsons
    ganport train --resume runs/cgan-glyphs-20261101-120000/checkpoints/latest.pt --epochs 10
    torchrun --nproc_per_node=2 -m ganport train cgan --dataset glyphs --epochs 5
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
from typing import Any

from ganport.errors import InvalidInputError

logger = logging.getLogger(__name__)

_KINDS_HELP = ("gan (MLP GAN), dcgan (convolutional), cgan (conditional MLP), "
               "cdcgan (conditional convolutional), aae (adversarial autoencoder)")

# CLI flag -> (TrainConfig field, type, help). Every flag defaults to None so that only options
# the user typed are applied (which matters on --resume, where the rest come from the checkpoint).
_OPTIONS: list[tuple[str, str, Any, str]] = [
    ("--dataset", "dataset", str, "data set name (`ganport datasets` lists them)"),
    ("--data-root", "data_root", str, "folder holding the data set's files (file-based sets)"),
    ("--image-size", "image_size", int, "resize images to N x N (default: the set's size)"),
    ("--n-samples", "n_samples", int, "use at most N images of the set"),
    ("--epochs", "epochs", int, "passes over the data (default 20)"),
    ("--steps", "steps", int, "total training steps; overrides --epochs"),
    ("--batch-size", "batch_size", int, "images per step and process (default 64)"),
    ("--latent-dim", "latent_dim", int, "length of the latent vector z (default 100)"),
    ("--loss", "loss", str, "bce (non-saturating, default) | minimax | lsgan"),
    ("--lr-g", "lr_g", float, "generator learning rate (default 2e-4)"),
    ("--lr-d", "lr_d", float, "discriminator learning rate (default 2e-4)"),
    ("--lr-e", "lr_e", float, "encoder learning rate, aae only (default 2e-4)"),
    ("--beta1", "beta1", float, "Adam beta1 (default 0.5)"),
    ("--beta2", "beta2", float, "Adam beta2 (default 0.999)"),
    ("--sample-interval", "sample_interval", int, "write a sample grid every N steps (default 200)"),
    ("--checkpoint-interval", "checkpoint_interval", int, "write a checkpoint every N steps (default 500)"),
    ("--keep-last", "keep_last", int, "numbered checkpoints to keep besides latest.pt (default 3)"),
    ("--log-every", "log_every", int, "append averaged metrics every N steps (default 50)"),
    ("--seed", "seed", int, "seed of every random generator (default 0)"),
    ("--device", "device", str, "auto (CUDA when available, default) | cpu | cuda"),
    ("--ema", "ema", float, "EMA decay of the generator weights (default 0.999; aae 0; 0 = off)"),
    ("--aux-weight", "aux_weight", float,
     "cgan/cdcgan: weight of the AC-GAN auxiliary classification loss (D gets a class head; "
     "default 0.5 for conditional kinds; 0 = the classic cGAN)"),
    ("--d-conditioning", "d_conditioning", str,
     "cgan/cdcgan: how D sees the label: projection (default) | concat (the classic cGAN)"),
    ("--arch", "arch", str, "default | simpsons (128 px report architecture; conv kinds)"),
    ("--num-workers", "num_workers", int, "DataLoader worker processes (default 0)"),
    ("--out-dir", "out_dir", str, "folder for run directories (default runs)"),
    ("--run-name", "run_name", str, "run directory name (default KIND-DATASET-TIMESTAMP)"),
    ("--eval-every", "eval_every", int,
     "evaluate every N epochs (conditional accuracy, FD; logged with the losses; default 0 = off)"),
    ("--eval-n", "eval_n", int, "generated samples per periodic evaluation (default 2000)"),
    ("--threads", "threads", int, "torch intra-op threads (default: torch's choice)"),
]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``train`` and ``datasets`` to the ``ganport`` command line."""
    parser = subparsers.add_parser(
        "train", help="train a GAN, cGAN or AAE on a data set",
        description="Train a model; each run gets its own directory with config.json, metrics.jsonl, "
                    "sample grids, loss_curve.png and checkpoints. Under torchrun the same command "
                    "trains with DistributedDataParallel.")
    parser.add_argument("kind", nargs="?", metavar="KIND", help=_KINDS_HELP)
    for flag, dest, kind, text in _OPTIONS:
        parser.add_argument(flag, dest=dest, type=kind, default=None, help=text)
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                        help="mixed precision: float16 + GradScaler on CUDA, bfloat16 on CPU (default off)")
    parser.add_argument("--tensorboard", action=argparse.BooleanOptionalAction, default=None,
                        help="also log to RUN_DIR/tensorboard (needs the tensorboard package)")
    parser.add_argument("--dataset-option", dest="dataset_option", action="append", default=None,
                        metavar="KEY=VALUE", help="data-set option (repeatable), e.g. palette=3")
    parser.add_argument("--resume", default=None, metavar="PATH",
                        help="continue from a checkpoint, in its run directory; options left out are "
                             "taken from the checkpoint")
    parser.set_defaults(handler=run_train)

    datasets = subparsers.add_parser("datasets", help="list the data sets `ganport train` can use")
    datasets.set_defaults(handler=run_datasets)


def parse_dataset_options(items: list[str] | None) -> dict[str, str] | None:
    """``--dataset-option KEY=VALUE`` flags as a dict (None when none were given)."""
    if items is None:
        return None
    options: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InvalidInputError(f"--dataset-option {item!r} must look like KEY=VALUE")
        options[key.strip()] = value.strip()
    return options


def config_from_args(args: argparse.Namespace) -> Any:
    """Build the :class:`TrainConfig` the parsed flags ask for.

    Without ``--resume`` unset flags take the TrainConfig defaults; with it they come from the
    checkpoint, and flags that would change the trained model are an error.
    """
    from ganport.trainer.config import TrainConfig

    given: dict[str, Any] = {dest: getattr(args, dest) for _, dest, _, _ in _OPTIONS
                             if getattr(args, dest) is not None}
    if args.kind is not None:
        given["kind"] = args.kind
    if args.amp is not None:
        given["amp"] = args.amp
    if args.tensorboard is not None:
        given["tensorboard"] = args.tensorboard
    dataset_options = parse_dataset_options(args.dataset_option)
    if dataset_options is not None:
        given["dataset_options"] = dataset_options
    if args.resume:
        from ganport.trainer.checkpoint import load_checkpoint
        from ganport.errors import CheckpointError

        ckpt = load_checkpoint(args.resume)
        if not isinstance(ckpt.get("config"), dict):
            raise CheckpointError(f"{args.resume} has no training config, so it cannot be resumed")
        return TrainConfig.for_resume(ckpt["config"], args.resume, **given)
    missing = [name for name in ("kind", "dataset") if name not in given]
    if missing:
        raise InvalidInputError(
            "missing " + " and ".join("KIND" if m == "kind" else "--dataset" for m in missing),
            hint="e.g. `ganport train cgan --dataset glyphs`; kinds: gan, dcgan, cgan, cdcgan, aae")
    return TrainConfig(**given).validate()


def run_train(args: argparse.Namespace) -> int:
    """Handler of ``ganport train``: train, then print the run directory and checkpoint."""
    from ganport.trainer.training import train

    config = config_from_args(args)
    result = train(config)
    if os.environ.get("RANK", "0") != "0":
        return 0  # under torchrun rank 0 reports for everyone
    if result.interrupted:
        print(f"interrupted by {result.interrupted} at step {result.step}")
        print(f"checkpoint: {result.checkpoint}")
        print(f"continue with: ganport train --resume {result.checkpoint}")
        return 128 + int(getattr(signal, result.interrupted))
    losses = ", ".join(f"{k} {result.metrics[k]:.4f}" for k in ("d_loss", "g_loss", "recon_loss")
                       if k in result.metrics)
    print(f"trained {config.kind} on {config.dataset}: {result.step} steps" + (f" ({losses})" if losses else ""))
    print(f"run directory: {result.run_dir}")
    print(f"checkpoint: {result.checkpoint}")
    return 0


def run_datasets(args: argparse.Namespace) -> int:
    """Handler of ``ganport datasets``: one line per data set with its description."""
    from ganport.trainer.datasets import describe_datasets

    rows = describe_datasets()
    width = max(len(name) for name, _ in rows)
    for name, description in rows:
        print(f"{name:<{width}}  {description}")
    return 0
