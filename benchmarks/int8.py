"""int8 against fp32: images/s side by side, and what the rounding does to the pictures.

* Speed: the MLP cGAN 28x28 and the DCGAN 64x64 of the model zoo (:mod:`benchmarks.models`),
  exported with ``--format onnx onnx-int8`` into one package, loaded with ``backend="onnx"`` and
  ``backend="onnx-int8"`` at 1 and 2 onnxruntime threads, batch 1 and 16. The two backends are
  timed in alternating rounds (fp32, int8, fp32, int8, ...) so a busy neighbour slows both alike;
  the table gives images/s of each and the ratio int8 / fp32 per cell.
* Quality: the built-in glyphs cGAN (``builtin:glyphs``, trained; it ships ``model.onnx`` and
  ``model.int8.onnx``) judged by ``ganport eval``'s code (:func:`ganport.trainer.evaluation.evaluate`)
  with each backend on the same latents and labels: conditional accuracy and FD (with its
  real-vs-real value), and the change in points. int8 is made a default nowhere (issue 15's rule:
  not where it is slower, nor where accuracy drops by more than 1 point).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from benchmarks.common import BenchContext, headline, make_table, new_result, time_calls

logger = logging.getLogger(__name__)

MODELS = ("mlp28", "dcgan64")
THREADS = (1, 2)
BATCHES = (1, 16)
BACKENDS = ("onnx", "onnx-int8")
#: Accuracy may drop by at most this many points before int8 would be refused as a default.
MAX_ACCURACY_DROP = 1.0


def run(ctx: BenchContext) -> dict[str, Any]:
    """Speed table for the zoo models and eval figures for the built-in glyphs model."""
    settings = {"models": list(MODELS), "threads": list(THREADS), "batches": list(BATCHES),
                "rounds": ctx.pick(2, 5), "seconds_per_round": ctx.pick(0.05, 0.4),
                "eval_n": ctx.pick(620, 6200), "eval_seed": 0}
    result = new_result("int8", ctx, settings)
    for name in MODELS:
        rows = _speed(ctx, name, settings)
        result["rows"].extend(rows)
    result["tables"].append(make_table(
        "int8 vs fp32 (onnxruntime CPU), images/s, alternating rounds",
        ["model", "threads", "batch", "fp32 img/s", "int8 img/s", "int8 / fp32"],
        [[r["model"], r["threads"], r["batch"], r["fp32_images_per_s"], r["int8_images_per_s"], r["ratio"]]
         for r in result["rows"]]))
    for name in MODELS:
        cells = [r["ratio"] for r in result["rows"] if r["model"] == name]
        result["headline"].append(headline(f"int8 / fp32 images/s, {name}, worst cell", min(cells), "x",
                                           detail=f"best {max(cells):.2f}x over threads {THREADS} x batch {BATCHES}"))
    quality = _quality(ctx, settings)
    result["quality"] = quality
    if quality.get("rows"):
        result["tables"].append(make_table(
            f"int8 vs fp32: built-in glyphs cGAN, ganport eval, n={settings['eval_n']}",
            ["backend", "conditional accuracy %", "FD", "FD real vs real", "precision", "recall"],
            [[r["backend"], r["accuracy_pct"], r["fd"], r["fd_real_vs_real"], r["precision"], r["recall"]]
             for r in quality["rows"]]))
        drop = quality["accuracy_drop_points"]
        result["headline"].append(headline("conditional accuracy drop, int8 vs fp32 (glyphs)", drop, "points",
                                           target=f"<= {MAX_ACCURACY_DROP}", met=drop <= MAX_ACCURACY_DROP))
    else:
        result["notes"].append(quality.get("reason", "eval not run"))
    return result


def _speed(ctx: BenchContext, name: str, settings: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows (threads, batch) for one zoo model: both backends in alternating rounds."""
    package = ctx.zoo.package(name, ("onnx", "onnx-int8"))
    from ganport.runtime.generator import Generator

    rows = []
    for threads in THREADS:
        gens = {b: Generator.load(package, backend=b, threads=threads, max_batch=max(BATCHES)) for b in BACKENDS}
        for batch in BATCHES:
            z = gens["onnx"].sample_latents(batch, seed=batch)
            labels = gens["onnx"].resolve_labels(None, batch)
            rates: dict[str, list[float]] = {b: [] for b in BACKENDS}
            for _ in range(settings["rounds"]):
                for backend, gen in gens.items():
                    timing = time_calls(lambda g=gen: g.run(z, labels), seconds=settings["seconds_per_round"],
                                        max_calls=100_000, warmup=2)
                    rates[backend].append(timing.rate(batch))
            fp32, int8 = (float(np.median(rates[b])) for b in BACKENDS)
            diff = float(np.abs(gens["onnx"].run(z, labels) - gens["onnx-int8"].run(z, labels)).max())
            logger.info("%s threads %d batch %d: fp32 %.0f, int8 %.0f img/s", name, threads, batch, fp32, int8)
            rows.append({"model": name, "threads": threads, "batch": batch, "fp32_images_per_s": fp32,
                         "int8_images_per_s": int8, "ratio": int8 / fp32, "max_abs_diff": diff,
                         "rounds": rates})
    return rows


def _quality(ctx: BenchContext, settings: dict[str, Any]) -> dict[str, Any]:
    """``ganport eval`` figures of the built-in glyphs cGAN with each backend."""
    from ganport.errors import GanportError
    from ganport.runtime.builtins import BUILTIN_PREFIX
    from ganport.trainer.evaluation import evaluate, source_from_package

    rows = []
    for backend in BACKENDS:
        try:
            source = source_from_package(BUILTIN_PREFIX + "glyphs", backend)
        except GanportError as exc:
            return {"reason": f"built-in glyphs model not usable with {backend}: {exc}"}
        results = evaluate(source, "glyphs", n=settings["eval_n"], seed=settings["eval_seed"],
                           precision_recall_samples=ctx.pick(500, 5000))
        rows.append({"backend": backend, **_figures(results)})
    drop = rows[0]["accuracy_pct"] - rows[1]["accuracy_pct"]
    return {"rows": rows, "accuracy_drop_points": drop}


def _figures(results: Any) -> dict[str, float | None]:
    """The figures of one evaluation (an ``EvalResult``, or its dict)."""
    data = results if isinstance(results, dict) else results.to_dict()  # EvalResult
    get = data.get
    accuracy = get("conditional_accuracy")
    return {"accuracy_pct": None if accuracy is None else 100.0 * float(accuracy), "fd": get("fd_equal_n"),
            "fd_real_vs_real": get("fd_real_vs_real"), "precision": get("precision"), "recall": get("recall")}
