"""Backends in-process: images/s per model size, batch size and backend, on CPU (and GPU).

For each model size (MLP cGAN 28x28 with 62 classes; DCGAN 64x64 RGB; the 128x128 ``simpsons``
DCGAN) and batch size, one :class:`ganport.runtime.Generator` per backend runs the same latents:

* CPU: torch eager (the checkpoint's module), TorchScript, pt2 (``torch.export``), onnxruntime,
  all with the same thread count (onnxruntime intra-op threads = ``torch.set_num_threads``);
* GPU, when torch sees CUDA: the same torch backends on ``cuda``, onnxruntime's CUDA provider
  (IO binding, via ``Generator(device="cuda")``) and the fp16 ONNX graph. A backend that cannot
  start (e.g. a CPU-only onnxruntime) is listed as skipped with the reason.

Every call goes through ``Generator.run`` (validation, numpy in and out), so the numbers are what
a Python caller gets. The ratio onnxruntime / eager is reported per cell, and each backend's max
abs difference from eager is recorded as a sanity check. Triton is measured by the ``peer``
benchmark (:mod:`benchmarks.peer`).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from benchmarks.common import BenchContext, headline, make_table, new_result, time_calls, triton_status
from benchmarks.models import MODELS

logger = logging.getLogger(__name__)

CPU_BACKENDS = ("eager", "torchscript", "pt2", "onnx")
#: (label, backend, fp16) measured on CUDA.
GPU_BACKENDS = (("eager", "eager", False), ("torchscript", "torchscript", False), ("pt2", "pt2", False),
                ("onnx", "onnx", False), ("onnx-fp16", "onnx", True))


def run(ctx: BenchContext) -> dict[str, Any]:
    """Measure every backend for every model size; returns the result dict."""
    import torch

    names = ctx.pick(["mlp28"], list(MODELS))
    settings = {"models": {n: MODELS[n].description for n in names}, "threads": ctx.threads,
                "seconds_per_cell": ctx.pick(0.2, 2.0), "max_calls_per_cell": ctx.pick(20, 5000),
                "cpu_backends": list(CPU_BACKENDS),
                "gpu_backends": [label for label, _, _ in GPU_BACKENDS] if ctx.cuda else []}
    result = new_result("backends", ctx, settings)
    torch.set_num_threads(ctx.threads)
    devices = ["cpu"] + (["cuda"] if ctx.cuda else [])
    for name in names:
        spec = MODELS[name]
        batches = ctx.pick(tuple(b for b in spec.batches if b <= 8), spec.batches)
        # All formats (and fp16 on GPU machines) up front: one package per model for every backend.
        ctx.zoo.package(name, ("onnx", "torchscript", "pt2"), fp16=ctx.cuda)
        for device in devices:
            rows = _measure_model(ctx, name, device, batches, settings)
            result["rows"].extend(rows)
            result["tables"].append(_pivot_table(spec.description, device, rows, batches))
            _add_headlines(result, name, device, rows, batches)
    if not ctx.cuda:
        result["notes"].append("no CUDA device: GPU rows (torch CUDA, onnxruntime CUDA with IO binding, fp16) "
                               "were not measured")
    result["export_seconds"] = dict(ctx.zoo.export_seconds)
    result["triton"] = triton_status()
    result["notes"].append(f"Triton: {result['triton']['reason']}.")
    return result


def _measure_model(ctx: BenchContext, name: str, device: str, batches: tuple[int, ...],
                   settings: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (backend, batch) for model ``name`` on ``device``."""
    spec = MODELS[name]
    seconds = settings["seconds_per_cell"] * spec.time_scale
    backends = [(b, b, False) for b in CPU_BACKENDS] if device == "cpu" else list(GPU_BACKENDS)
    rows: list[dict[str, Any]] = []
    loaded = []
    for label, backend, fp16 in backends:
        try:
            gen = ctx.zoo.generator(name, backend, device=device, threads=ctx.threads, max_batch=max(batches),
                                    fp16=fp16)
        except Exception as exc:  # noqa: BLE001 - BackendUnavailableError, PackageError...: report, go on
            logger.warning("%s %s on %s skipped: %s", name, label, device, exc)
            rows.append({"model": name, "device": device, "backend": label, "skipped": str(exc)})
            continue
        logger.info("%s: %s on %s (%s)", name, label, device, ", ".join(gen.providers))
        loaded.append((label, gen))
    # Backends take turns per batch size, so a drift in machine load hits them alike.
    for batch in batches:
        reference = None  # the first backend's output (eager) for the same latents
        for label, gen in loaded:
            z = gen.sample_latents(batch, seed=batch)
            labels = gen.resolve_labels(None, batch)
            out = gen.run(z, labels)
            reference = out if reference is None else reference
            timing = time_calls(lambda: gen.run(z, labels), seconds=seconds, max_calls=settings["max_calls_per_cell"],
                                min_calls=ctx.pick(1, 2), warmup=ctx.pick(1, 2))
            rows.append({"model": name, "device": device, "backend": label, "batch": batch,
                         "providers": gen.providers, **timing.summary(batch),
                         "max_abs_diff_vs_eager": float(np.max(np.abs(out - reference)))})
    del loaded
    for row in rows:
        eager = next((r for r in rows if r.get("backend") == "eager" and r.get("batch") == row.get("batch")
                      and "images_per_s" in r), None)
        if eager is not None and "images_per_s" in row:
            row["ratio_vs_eager"] = row["images_per_s"] / eager["images_per_s"]
    return rows


def _pivot_table(description: str, device: str, rows: list[dict[str, Any]], batches: tuple[int, ...]) -> dict:
    """images/s with one column per backend and the onnxruntime/eager ratio per batch."""
    labels = list(dict.fromkeys(r["backend"] for r in rows if "batch" in r))  # skipped ones go in the note
    body = []
    for batch in batches:
        cells = {r["backend"]: r for r in rows if r.get("batch") == batch}
        ort = cells.get("onnx", {})
        body.append([batch, *[cells.get(label, {}).get("images_per_s") for label in labels],
                     None if "ratio_vs_eager" not in ort else f"{ort['ratio_vs_eager']:.2f}x"])
    skipped = [f"{r['backend']} ({r['skipped']})" for r in rows if "skipped" in r]
    return make_table(f"backends: {description}, {device} (images/s)", ["batch", *labels, "onnx/eager"], body,
                      note=("skipped: " + "; ".join(skipped)) if skipped else None)


def _add_headlines(result: dict[str, Any], name: str, device: str, rows: list[dict[str, Any]],
                   batches: tuple[int, ...]) -> None:
    """onnxruntime/eager at the smallest and the largest batch."""
    for batch in dict.fromkeys((batches[0], batches[-1])):
        ort = next((r for r in rows if r.get("backend") == "onnx" and r.get("batch") == batch), None)
        if ort and "ratio_vs_eager" in ort:
            result["headline"].append(headline(
                f"onnxruntime/eager {name} {device} batch {batch}", ort["ratio_vs_eager"], "x",
                detail=f"{ort['images_per_s']:,.0f} images/s"))
