"""Serving overhead: gRPC end-to-end images/s over in-process onnxruntime images/s.

For each model and batch size, the same loaded onnxruntime :class:`~ganport.runtime.Generator`
is measured twice:

* in-process: ``Generator.run(z, labels)`` on pre-drawn latents (the raw model call);
* over gRPC: the real server (``create_server`` on a loopback port, in this process, serving that
  Generator with its defaults: max batch 64, max delay 2 ms) called sequentially by
  ``GanportClient.generate(model, batch, encoding=...)``, which includes drawing the latents,
  the batcher, encoding (PNG, raw uint8 or raw float32), transport and decoding on the client.

At the target batch the same call is also measured against ``ganport serve`` in its own process
(uint8), as a deployment runs it: there client and server do not share one interpreter lock.

The ratio is gRPC / in-process; the target is >= 0.9 at batch 64. One sequential client means a
request smaller than the max batch waits the batcher's full max delay (2 ms) for company: that
cost shows at batch 1 and 8 and is part of what a lone caller sees.
"""

from __future__ import annotations

import logging
from typing import Any

from benchmarks.common import BenchContext, headline, make_table, new_result, time_calls
from benchmarks.models import MODELS
from benchmarks.servers import ServeProcess, inprocess_server

logger = logging.getLogger(__name__)

ENCODINGS = ("png", "uint8", "float32")
TARGET_RATIO = 0.9
TARGET_BATCH = 64
SERVER_OPTIONS = {"max_batch": 64, "max_delay_ms": 2.0}


def run(ctx: BenchContext) -> dict[str, Any]:
    """Measure in-process vs gRPC throughput for each model, batch size and output encoding."""
    names = ctx.pick(["mlp28"], ["mlp28", "dcgan64"])
    batches = ctx.pick((8,), (1, 8, TARGET_BATCH))
    settings = {"models": {n: MODELS[n].description for n in names}, "batches": list(batches),
                "encodings": list(ENCODINGS), "threads": ctx.threads, "server": SERVER_OPTIONS,
                "seconds_per_cell": ctx.pick(0.3, 2.0), "max_calls_per_cell": ctx.pick(20, 3000),
                "client": ("one sequential GanportClient in the server's process (and, at batch "
                           f"{TARGET_BATCH}, in its own process beside `ganport serve`), decoding every answer")}
    result = new_result("serving", ctx, settings)
    bounds = {"seconds": settings["seconds_per_cell"], "max_calls": settings["max_calls_per_cell"],
              "min_calls": ctx.pick(1, 3), "warmup": ctx.pick(1, 3)}
    for name in names:
        # One loaded model for both measurements: in-process calls and the in-process server.
        gen = ctx.zoo.generator(name, "onnx", threads=ctx.threads, max_batch=SERVER_OPTIONS["max_batch"])
        rows = _measure_model(name, gen, batches, bounds)
        result["rows"].extend(rows)
        result["tables"].append(make_table(
            f"serving: {MODELS[name].description} (images/s; ratio = gRPC / in-process)",
            ["batch", "in-process", *[f"gRPC {e}" for e in ENCODINGS], *[f"{e} ratio" for e in ENCODINGS]],
            [[r["batch"], r["in_process_images_per_s"], *[r[e]["images_per_s"] for e in ENCODINGS],
              *[f"{r[e]['ratio']:.2f}" for e in ENCODINGS]] for r in rows]))
        own = _measure_own_process(ctx, name, gen, bounds)
        result["rows"].append(own)
        result["tables"].append(make_table(
            f"serving: {MODELS[name].description}, batch {TARGET_BATCH} uint8, server in its own process",
            ["in-process", "gRPC uint8", "ratio"],
            [[own["in_process_images_per_s"], own["images_per_s"], f"{own['ratio']:.2f}"]]))
        result["headline"].append(headline(
            f"gRPC (own process)/in-process {name} batch {TARGET_BATCH} uint8", own["ratio"], "x",
            target=f">= {TARGET_RATIO}", met=own["ratio"] >= TARGET_RATIO,
            detail=f"{own['images_per_s']:,.0f} vs {own['in_process_images_per_s']:,.0f} images/s"))
        for row in rows:
            if row["batch"] != TARGET_BATCH:
                continue
            for encoding in ENCODINGS:
                ratio = row[encoding]["ratio"]
                result["headline"].append(headline(
                    f"gRPC/in-process {name} batch {TARGET_BATCH} {encoding}", ratio, "x",
                    target=f">= {TARGET_RATIO}", met=ratio >= TARGET_RATIO,
                    detail=f"{row[encoding]['images_per_s']:,.0f} vs {row['in_process_images_per_s']:,.0f} images/s"))
    return result


def _measure_model(name: str, gen: Any, batches: tuple[int, ...], bounds: dict[str, Any]) -> list[dict]:
    """One row per batch: in-process rate, then the gRPC rate and ratio for each encoding."""
    rows = []
    with inprocess_server({name: gen}, **SERVER_OPTIONS) as (_server, client):
        for batch in batches:
            # In-process right before gRPC for the same batch: on a shared machine the load drifts.
            z = gen.sample_latents(batch, seed=batch)
            labels = gen.resolve_labels(None, batch)
            local = time_calls(lambda: gen.run(z, labels), **bounds)
            row = {"model": name, "batch": batch, "in_process_images_per_s": local.rate(batch),
                   "in_process": local.summary(batch)}
            for encoding in ENCODINGS:
                logger.info("%s: gRPC batch %d %s", name, batch, encoding)
                remote = time_calls(lambda: client.generate(name, batch, seed=1, encoding=encoding), **bounds)
                row[encoding] = {**remote.summary(batch), "ratio": remote.rate(batch) / row["in_process_images_per_s"]}
            rows.append(row)
    return rows


def _measure_own_process(ctx: BenchContext, name: str, gen: Any, bounds: dict[str, Any]) -> dict[str, Any]:
    """Batch ``TARGET_BATCH`` uint8 from ``ganport serve`` in a subprocess vs in-process, interleaved."""
    from ganport.runtime.server.client import GanportClient

    z = gen.sample_latents(TARGET_BATCH, seed=TARGET_BATCH)
    labels = gen.resolve_labels(None, TARGET_BATCH)
    package = ctx.zoo.package(name, ("onnx",))
    args = ["--max-batch", str(SERVER_OPTIONS["max_batch"]), "--threads", str(ctx.threads)]
    local_rates, remote_rates = [], []
    with ServeProcess(package, args, cwd=ctx.workdir, log_path=ctx.workdir / f"serve-serving-{name}.log") as server, \
            GanportClient(server.target, timeout=30.0) as client:
        for _ in range(ctx.pick(1, 3)):  # interleaved rounds: the load on a shared machine drifts
            local_rates.append(time_calls(lambda: gen.run(z, labels), **bounds).rate(TARGET_BATCH))
            remote_rates.append(time_calls(lambda: client.generate(name, TARGET_BATCH, seed=1, encoding="uint8"),
                                           **bounds).rate(TARGET_BATCH))
    local, remote = sum(local_rates) / len(local_rates), sum(remote_rates) / len(remote_rates)
    return {"model": name, "batch": TARGET_BATCH, "server": "own process", "encoding": "uint8",
            "in_process_images_per_s": local, "images_per_s": remote, "ratio": remote / local}
