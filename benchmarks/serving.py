"""Serving overhead: gRPC end-to-end images/s over in-process onnxruntime images/s.

For each model and batch size, the same loaded onnxruntime :class:`~ganport.runtime.Generator`
is measured twice:

* in-process: ``Generator.run(z, labels)`` on pre-drawn latents (the raw model call);
* over gRPC: the real server (``create_server`` on a loopback port, in this process, serving that
  Generator with its defaults: max batch 64, max delay 2 ms) called sequentially by
  ``GanportClient.generate(model, batch, encoding=...)``, which includes drawing the latents,
  the batcher, encoding (PNG, raw uint8 or raw float32), transport and decoding on the client.

The ratio is gRPC / in-process; the target is >= 0.9 at batch 64. One sequential client means a
request smaller than the max batch waits the batcher's full max delay (2 ms) for company: that
cost shows at batch 1 and 8 and is part of what a lone caller sees.
"""

from __future__ import annotations

import logging
from typing import Any

from benchmarks.common import BenchContext, headline, make_table, new_result, time_calls
from benchmarks.models import MODELS
from benchmarks.servers import inprocess_server

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
                "client": "one sequential GanportClient in the server's process, decoding every answer"}
    result = new_result("serving", ctx, settings)
    for name in names:
        rows = _measure_model(ctx, name, batches, settings)
        result["rows"].extend(rows)
        result["tables"].append(make_table(
            f"serving: {MODELS[name].description} (images/s; ratio = gRPC / in-process)",
            ["batch", "in-process", *[f"gRPC {e}" for e in ENCODINGS], *[f"{e} ratio" for e in ENCODINGS]],
            [[r["batch"], r["in_process_images_per_s"], *[r[e]["images_per_s"] for e in ENCODINGS],
              *[f"{r[e]['ratio']:.2f}" for e in ENCODINGS]] for r in rows]))
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


def _measure_model(ctx: BenchContext, name: str, batches: tuple[int, ...], settings: dict[str, Any]) -> list[dict]:
    """One row per batch: in-process rate, then the gRPC rate and ratio for each encoding."""
    gen = ctx.zoo.generator(name, "onnx", threads=ctx.threads, max_batch=SERVER_OPTIONS["max_batch"])
    bounds = {"seconds": settings["seconds_per_cell"], "max_calls": settings["max_calls_per_cell"],
              "min_calls": ctx.pick(1, 3), "warmup": ctx.pick(1, 3)}
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
