"""Build the built-in glyphs model (runtime/builtin/glyphs) from a trained checkpoint.

Runs in the full environment. Steps, each printed as one line:

1. judge the checkpoint with ``ganport eval``'s code (conditional accuracy, FD, precision/recall;
   ``--eval-n`` images, seed 0) and refuse it below ``--min-accuracy`` (97%);
2. export ``model.onnx`` and ``model.int8.onnx`` (both verified against the eager model) into a
   scratch folder and judge the package with each backend on the same latents;
3. keep the int8 file only if its accuracy is within 1 point of fp32 (issue 15's rule), then
   export the final package with its provenance in the manifest (training command, steps,
   epochs, source checkpoint SHA-256 (also ``source_checkpoint_sha256``), the eval figures of the
   checkpoint and of each backend) and check it fits ``MAX_BYTES``.

The export is deterministic (same checkpoint, same files), so the figures measured on the scratch
package are the final package's; ``tests/test_builtin.py`` re-runs the eval to prove it.

Usage:
    python scripts/build_builtin.py RUN/checkpoints/latest.pt \\
        --command "ganport train cgan --dataset glyphs --epochs 60 --threads 1"
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
NAME = "glyphs"
OUT = ROOT / "runtime" / "builtin" / NAME
#: The package must stay small enough to ship in the wheel.
MAX_BYTES = 8 * 2**20
EVAL_SEED = 0
BACKENDS = ("onnx", "onnx-int8")
MAX_INT8_DROP_POINTS = 1.0


def figures(results: Any) -> dict:
    """The eval figures worth recording (``ganport eval``'s JSON keys), from its result."""
    if not isinstance(results, dict):
        results = results.to_dict()  # EvalResult
    keys = ("conditional_accuracy", "fd_equal_n", "fd_real_vs_real", "fd", "precision", "recall", "n_generated",
            "seed")
    return {key: results[key] for key in keys if key in results}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--command", required=True, help="the training command that made the checkpoint")
    parser.add_argument("--eval-n", type=int, default=6200, help="images per evaluation (default 6200)")
    parser.add_argument("--min-accuracy", type=float, default=0.97)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)

    import torch

    from ganport.export import run_export
    from ganport.trainer.checkpoint import file_sha256, load_checkpoint
    from ganport.trainer.evaluation import evaluate, open_source

    torch.set_num_threads(1)
    ckpt = load_checkpoint(args.checkpoint)

    def judge(path: Path | str, backend: str | None = None) -> dict:
        result = figures(evaluate(open_source(path, backend=backend), "glyphs", n=args.eval_n, seed=EVAL_SEED))
        print(f"eval {path} ({backend or 'checkpoint'}): accuracy {100 * result['conditional_accuracy']:.2f}%, "
              f"FD {result['fd_equal_n']:.1f} (real vs real {result['fd_real_vs_real']:.1f}), "
              f"precision {result.get('precision', float('nan')):.2f}, recall {result.get('recall', float('nan')):.2f}",
              flush=True)
        return result

    checkpoint_eval = judge(args.checkpoint)
    if checkpoint_eval["conditional_accuracy"] < args.min_accuracy:
        print(f"error: the checkpoint reaches {100 * checkpoint_eval['conditional_accuracy']:.2f}%, below "
              f"{100 * args.min_accuracy:.0f}%", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="builtin-") as scratch:
        trial = run_export(args.checkpoint, Path(scratch) / NAME, list(BACKENDS), name=NAME)
        diffs = {a.relpath: max(a.diffs.values()) for a in trial.artifacts if a.diffs}
        print(f"verified {', '.join(f'{k}: max abs diff {v:.2e}' for k, v in diffs.items())}", flush=True)
        package_eval = {backend: judge(trial.path, backend) for backend in BACKENDS}
    drop = 100 * (package_eval["onnx"]["conditional_accuracy"] - package_eval["onnx-int8"]["conditional_accuracy"])
    formats = list(BACKENDS) if drop <= MAX_INT8_DROP_POINTS else ["onnx"]
    if "onnx-int8" not in formats:
        package_eval.pop("onnx-int8")
        print(f"int8 loses {drop:.2f} points of accuracy: shipping fp32 only", flush=True)
    sha = file_sha256(args.checkpoint)
    provenance = {
        "training_command": args.command,
        "steps": int(ckpt["step"]), "epochs": int(ckpt.get("epoch") or 0),
        "training_seconds": round(float(ckpt.get("elapsed") or 0.0), 1),
        "source_checkpoint_sha256": sha,
        "config": {k: ckpt["config"].get(k) for k in ("kind", "dataset", "epochs", "batch_size", "latent_dim", "seed",
                                                      "ema", "aux_weight", "d_conditioning", "lr_g", "lr_d")},
        "eval": {"command": f"ganport eval CHECKPOINT_OR_PACKAGE --dataset glyphs -n {args.eval_n} --seed {EVAL_SEED}",
                 "checkpoint": checkpoint_eval, "package": package_eval},
        "verify_max_abs_diff": diffs,
    }
    report = run_export(args.checkpoint, args.out, formats, name=NAME, overwrite=True, provenance=provenance)
    size = sum(p.stat().st_size for p in report.path.iterdir())
    print(f"wrote {report.path}: {', '.join(sorted(p.name for p in report.path.iterdir()))}, {size / 2**20:.2f} MiB")
    if size > MAX_BYTES:
        print(f"error: {size} bytes is over the {MAX_BYTES} allowed in the wheel", file=sys.stderr)
        return 2
    print(json.dumps(provenance, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
