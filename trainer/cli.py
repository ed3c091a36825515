"""``ganport train``, ``ganport datasets`` and ``ganport animate``.

Nothing heavy is imported at module level: ``ganport --help`` works without torch, and
``ganport datasets`` needs only numpy (the data-set layer is torch-free).

Examples::

    ganport train cgan --dataset glyphs --epochs 5
    ganport train dcgan --dataset folder --data-root ~/simpsons --image-size 128 --arch simpsons
    ganport train --resume runs/cgan-glyphs-20261101-120000/checkpoints/latest.pt --epochs 10
    torchrun --nproc_per_node=2 -m ganport train cgan --dataset glyphs --epochs 5
    ganport animate runs/cgan-glyphs-20261101-120000        # -> .../progress.gif
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
from typing import Any

from ganport.errors import InvalidInputError

logger = logging.getLogger(__name__)

_TYPES = {"int": int, "float": float, "str": str}


def train_options() -> list[tuple[str, Any]]:
    """``(flag, field)`` of every :class:`TrainConfig` field: the flags of ``ganport train``.

    The flag is ``--`` + the field name with ``-`` for ``_`` unless the field's metadata names
    another (``dataset_options`` -> ``--dataset-option``); ``kind`` is the positional ``KIND``.
    """
    import dataclasses

    from ganport.trainer.config import TrainConfig

    return [(f.metadata.get("flag") or ("KIND" if f.metadata.get("positional") else "--" + f.name.replace("_", "-")), f)
            for f in dataclasses.fields(TrainConfig)]


def _add_option(parser: argparse.ArgumentParser, flag: str, f: Any) -> None:
    """One flag from one field. Every flag defaults to None so that only options the user typed
    are applied (which matters on --resume, where the rest come from the checkpoint)."""
    from ganport.trainer.config import option_help

    text = option_help(f)
    kind = str(f.type).replace(" | None", "")
    if f.metadata.get("positional"):
        parser.add_argument(f.name, nargs="?", metavar=flag, help=text)
    elif kind == "bool":
        parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=text)
    elif kind.startswith("dict"):  # KEY=VALUE pairs, repeatable
        parser.add_argument(flag, dest=f.name, action="append", default=None,
                            metavar=f.metadata.get("metavar"), help=text)
    else:
        parser.add_argument(flag, dest=f.name, type=_TYPES[kind], default=None,
                            metavar=f.metadata.get("metavar"), help=text)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``train`` and ``datasets`` to the ``ganport`` command line."""
    parser = subparsers.add_parser(
        "train", help="train a GAN, cGAN or AAE on a data set",
        description="Train a model; each run gets its own directory with config.json, metrics.jsonl, "
                    "sample grids, loss_curve.png and checkpoints. Under torchrun the same command "
                    "trains with DistributedDataParallel.")
    for flag, f in train_options():
        _add_option(parser, flag, f)
    parser.set_defaults(handler=run_train)

    datasets = subparsers.add_parser("datasets", help="list the data sets `ganport train` can use")
    datasets.set_defaults(handler=run_datasets)

    from ganport.trainer import animation  # numpy only, like the data-set layer

    animate = subparsers.add_parser(
        "animate", help="a run's sample grids as an animated GIF (training progress)",
        description="Write RUN/progress.gif from the sample grids RUN/samples/step_NNNNNN.png of a training "
                    "run (training does this at its end; this command redoes it, e.g. for a stopped run).")
    animate.add_argument("run_dir", metavar="RUN", help="run directory of `ganport train`")
    animate.add_argument("--out", default=None, metavar="FILE.gif", help="destination (default RUN/progress.gif)")
    animate.add_argument("--max-frames", type=int, default=None, metavar="N",
                         help=f"frames kept at most, evenly spread over the run (default {animation.MAX_FRAMES})")
    animate.add_argument("--frame-ms", type=int, default=None, metavar="MS",
                         help=f"display time of each frame in milliseconds (default {animation.FRAME_MS})")
    animate.set_defaults(handler=run_animate)


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

    given: dict[str, Any] = {f.name: getattr(args, f.name) for _, f in train_options()
                             if getattr(args, f.name) is not None}
    if "dataset_options" in given:
        given["dataset_options"] = parse_dataset_options(given["dataset_options"])
    if args.resume:
        from ganport.trainer.checkpoint import load_checkpoint
        from ganport.errors import CheckpointError

        ckpt = load_checkpoint(args.resume)
        if not isinstance(ckpt.get("config"), dict):
            raise CheckpointError(f"{args.resume} has no training config, so it cannot be resumed")
        given.pop("resume")
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


def run_animate(args: argparse.Namespace) -> int:
    """Handler of ``ganport animate``: write the GIF, print its path."""
    from ganport.trainer.animation import write_progress_gif

    options = {k: v for k, v in (("max_frames", args.max_frames), ("frame_ms", args.frame_ms)) if v is not None}
    print(f"animation: {write_progress_gif(args.run_dir, args.out, **options)}")
    return 0
