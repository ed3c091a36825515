"""``ganport eval``, ``ganport sweep`` and ``ganport explore``: measuring and exploring generators.

Nothing heavy is imported at module level (``ganport --help`` works without torch).

Examples::

    ganport eval runs/cgan-glyphs-.../checkpoints/latest.pt --dataset glyphs -n 10000 --out eval.json
    ganport eval models/glyphs                      # an exported package (onnxruntime)
    ganport sweep cgan --dataset digits --grid lr_g=1e-4,2e-4 lr_d=1e-4,2e-4 --steps 2000
    ganport explore runs/cgan-digits-.../checkpoints/latest.pt --out explore/
    ganport explore --fractal runs/aae-fractal-dream-.../checkpoints/latest.pt --out fractal/
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from ganport.errors import InvalidInputError
from ganport.trainer.cli import parse_dataset_options

logger = logging.getLogger(__name__)


def _add_reference_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cache-dir", default=None, metavar="DIR",
                        help="reference-classifier cache (default $GANPORT_CACHE_DIR or ~/.cache/ganport/classifiers)")
    parser.add_argument("--classifier-epochs", type=int, default=None, metavar="N",
                        help="epochs of the reference classifier when it must be trained (default: auto)")
    parser.add_argument("--classifier-train-n", type=int, default=None, metavar="N",
                        help="train the reference classifier on at most N images (default: the data set's own, "
                             "100,000 rendered glyphs for glyphs, else the whole training split)")
    _add_threads(parser)


def _add_threads(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="torch CPU threads (default: torch's choice; 1 is often fastest on a busy machine)")


def _apply_threads(args: argparse.Namespace) -> None:
    if args.threads is None:
        return
    if args.threads < 1:
        raise InvalidInputError(f"--threads must be >= 1, got {args.threads}")
    import torch

    torch.set_num_threads(args.threads)


def _classifier_options(args: argparse.Namespace) -> dict[str, Any]:
    options = {}
    if args.classifier_epochs is not None:
        options["epochs"] = args.classifier_epochs
    if args.classifier_train_n is not None:
        options["train_n"] = args.classifier_train_n
    return options


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``eval``, ``sweep`` and ``explore`` to the ``ganport`` command line."""
    p = subparsers.add_parser(
        "eval", help="measure a generator: conditional accuracy, FD, precision/recall, AAE reconstruction",
        description="Evaluate a checkpoint or an exported package against real held-out images with "
                    "ganport's reference classifier (trained once per data set and cached).")
    p.add_argument("model", metavar="CHECKPOINT_OR_PACKAGE", help="a .pt checkpoint, a package directory, builtin:NAME or a "
                   ".onnx/.ts/.pt2 file")
    p.add_argument("--dataset", default=None, help="data set to compare with (default: the model's)")
    p.add_argument("--data-root", default=None, help="folder of a file-based data set")
    p.add_argument("--dataset-option", action="append", default=None, metavar="KEY=VALUE",
                   help="data-set option (default: the checkpoint's), e.g. palette=3")
    p.add_argument("-n", type=int, default=10_000, help="images to generate (default 10000)")
    p.add_argument("--seed", type=int, default=0, help="latent seed (default 0)")
    from ganport.runtime.backends import BACKENDS  # the one table of backends (numpy-only import)

    p.add_argument("--backend", default=None, choices=tuple(BACKENDS),
                   help="package backend (default onnx; onnx-int8 judges the int8 file)")
    p.add_argument("--no-ema", action="store_true", help="checkpoints: evaluate the raw generator weights")
    p.add_argument("--pr-samples", type=int, default=5000, help="precision/recall samples per side (0: skip)")
    p.add_argument("--out", default=None, metavar="FILE.json",
                   help="write the results as JSON (default for a run's checkpoint: RUN/eval/<checkpoint>-<dataset>.json)")
    _add_reference_options(p)
    p.set_defaults(handler=run_eval)

    s = subparsers.add_parser(
        "sweep", help="train every combination of a hyperparameter grid, evaluate and rank them",
        description="Runs each combination (one after the other, or --jobs at a time), evaluates it, and "
                    "writes results.csv, results.md and contact_sheet.png. Rerunning the same command skips "
                    "finished combinations.")
    s.add_argument("kind", metavar="KIND", help="gan, dcgan, cgan, cdcgan or aae")
    s.add_argument("--dataset", required=True, help="data set name")
    s.add_argument("--grid", nargs="+", required=True, metavar="OPTION=V1,V2",
                   help="TrainConfig options and their values, e.g. lr_g=1e-4,2e-4 batch_size=32,64")
    s.add_argument("--steps", type=int, required=True, help="training steps per combination")
    s.add_argument("--set", dest="settings", action="append", default=[], metavar="OPTION=VALUE",
                   help="a fixed TrainConfig option of every run (repeatable), e.g. --set ema=0.999")
    s.add_argument("--out", default=None, metavar="DIR", help="sweep folder (default sweeps/KIND-DATASET)")
    s.add_argument("--eval-n", type=int, default=2000, help="images generated per evaluation (default 2000)")
    s.add_argument("--seed", type=int, default=0, help="evaluation seed (default 0)")
    s.add_argument("--jobs", type=int, default=1,
                   help="runs trained at the same time, each in its own process (default 1); each gets "
                        "cpu_count/jobs torch threads unless --set threads=N")
    _add_reference_options(s)
    s.set_defaults(handler=run_sweep_command)

    e = subparsers.add_parser(
        "explore", help="latent interpolation grids, per-class walks; --fractal: AAE parameter correspondence",
        description="Writes interpolation.png, class_walks.png (conditional), latent_dims.png and, for an AAE, "
                    "encoded_interpolation.png. With --fractal (AAE on fractal-dream, latent_dim 4) compares "
                    "G(v) with the attractor FD(v) for parameter vectors v.")
    e.add_argument("model", metavar="CHECKPOINT_OR_PACKAGE")
    e.add_argument("--out", default=None, metavar="DIR", help="output folder (default explore-<model name>)")
    e.add_argument("--fractal", action="store_true", help="run the fractal-dream latent-correspondence experiment")
    e.add_argument("--rows", type=int, default=8, help="interpolation rows (default 8)")
    e.add_argument("--steps", type=int, default=10, help="frames per walk (default 10)")
    e.add_argument("--classes", default=None, help="comma-separated classes of the interpolation rows")
    e.add_argument("--mode", default="slerp", choices=("slerp", "linear"), help="interpolation (default slerp)")
    e.add_argument("-n", type=int, default=16, help="--fractal: parameter vectors shown (default 16)")
    e.add_argument("--fit-n", type=int, default=512, help="--fractal: vectors for the affine fits (default 512)")
    e.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    e.add_argument("--backend", default=None, help="package backend: onnx (default), torchscript, pt2")
    _add_threads(e)
    e.set_defaults(handler=run_explore)


def default_results_path(model: str | Path, dataset: str) -> Path | None:
    """Where ``ganport eval`` writes JSON when ``--out`` is not given.

    A checkpoint of a run directory (``RUN/checkpoints/NAME.pt`` beside ``RUN/config.json``)
    keeps its evaluations with the run: ``RUN/eval/NAME-DATASET.json``. Anything else (a
    package, a loose file) gets no default file.

    Example:
        >>> default_results_path("runs/x/checkpoints/latest.pt", "glyphs")  # doctest: +SKIP
        PosixPath('runs/x/eval/latest-glyphs.json')
    """
    path = Path(model)
    run_dir = path.parent.parent
    if path.is_file() and path.parent.name == "checkpoints" and (run_dir / "config.json").is_file():
        return run_dir / "eval" / f"{path.stem}-{dataset}.json"
    return None


def run_eval(args: argparse.Namespace) -> int:
    """Handler of ``ganport eval``: print the table, write JSON (``--out`` or the run's folder)."""
    _apply_threads(args)
    from ganport.trainer.evaluation import evaluate, format_report, open_source

    source = open_source(args.model, backend=args.backend, use_ema=not args.no_ema)
    result = evaluate(source, args.dataset, n=args.n, seed=args.seed, cache_dir=args.cache_dir,
                       precision_recall_samples=args.pr_samples,
                       classifier_options=_classifier_options(args),
                       dataset_options=parse_dataset_options(args.dataset_option), data_root=args.data_root,
                       progress=lambda line: print(line, file=sys.stderr))
    print(format_report(result))
    out = Path(args.out) if args.out else default_results_path(args.model, result.dataset)
    if out is not None:
        from ganport.atomic import atomic_write

        out.parent.mkdir(parents=True, exist_ok=True)
        text = (json.dumps(result.to_dict(), indent=2) + "\n").encode()
        atomic_write(out, lambda handle: handle.write(text))
        print(f"results: {out}")
    return 0


def run_sweep_command(args: argparse.Namespace) -> int:
    """Handler of ``ganport sweep``."""
    _apply_threads(args)
    from ganport.trainer.sweep import parse_grid, parse_settings, run_sweep

    result = run_sweep(args.kind, args.dataset, parse_grid(args.grid), steps=args.steps, out_dir=args.out,
                       settings=parse_settings(args.settings), eval_n=args.eval_n, seed=args.seed,
                       cache_dir=args.cache_dir, classifier_options=_classifier_options(args), progress=print,
                       jobs=args.jobs)
    print(result.markdown_path.read_text())
    print(f"ran {len(result.ran)}, skipped {len(result.skipped)} finished before")
    print(f"table: {result.csv_path}, {result.markdown_path}")
    if result.contact_sheet:
        print(f"contact sheet: {result.contact_sheet}")
    return 0


def run_explore(args: argparse.Namespace) -> int:
    """Handler of ``ganport explore``."""
    _apply_threads(args)
    from ganport.trainer.evaluation import open_source
    from ganport.trainer.explore import explore, fractal_experiment

    source = open_source(args.model, backend=args.backend)
    out = Path(args.out) if args.out else Path(f"explore-{Path(args.model).stem}")
    if args.fractal:
        summary = fractal_experiment(source, out, n=args.n, fit_n=args.fit_n, seed=args.seed)
        print(Path(summary["files"]["mse_md"]).read_text())
        for key, how in (("r2_params_from_codes", "affine"), ("r2_params_from_codes_knn", "5-NN")):
            print(f"R² of v from E(FD(v)) ({how}, held out): "
                  + ", ".join(f"{k} {v:.3f}" for k, v in summary[key].items()))
        print(summary["verdict"])
        for name, path in summary["files"].items():
            print(f"{name}: {path}")
        return 0
    classes = [c for c in args.classes.split(",") if c] if args.classes else None
    written = explore(source, out, seed=args.seed, rows=args.rows, steps=args.steps, classes=classes,
                      mode=args.mode)
    for name, path in written.items():
        print(f"{name}: {path}")
    return 0
