"""Dynamic batching: many concurrent single-image clients against max-batch 1 vs max-batch 64.

Two ``ganport serve`` processes per model (subprocesses, so the server does not share the load
generator's GIL) differ only in ``--max-batch`` (1: every request is its own model call; 64:
the batcher merges up to 64 requests: whatever is queued when the model is free, the server's
default, ``--max-delay-ms 0``). For 1, 8, 32 and
128 client threads (closed loop: each sends its next one-image ``Generate`` as soon as the last
returns, bounded in time and count), it records throughput, p50/p95/p99 latency, and from the
server's Prometheus metrics the mean batch size and model time per batch.

Targets: at 32 clients, max-batch 64 gives >= 4x the throughput of max-batch 1, with p99 latency
<= max delay + one batch time (one batch time = the in-process ``Generator.run`` median for a
full batch of 64, same threads).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from benchmarks.common import BenchContext, headline, make_table, new_result, percentiles, time_calls
from benchmarks.models import MODELS
from benchmarks.servers import ServeProcess, prometheus_value

logger = logging.getLogger(__name__)

MAX_BATCHES = (1, 64)
MAX_DELAY_MS = 0.0
TARGET_CLIENTS = 32
TARGET_SPEEDUP = 4.0
#: Client threads share this many gRPC channels (one HTTP/2 connection each).
CHANNELS = 8


def run(ctx: BenchContext) -> dict[str, Any]:
    """Throughput and latency vs concurrency for each max-batch setting."""
    names = ctx.pick(["mlp28"], ["mlp28", "dcgan64"])
    clients = ctx.pick((1, 8), (1, 8, TARGET_CLIENTS, 128))
    settings = {"models": {n: MODELS[n].description for n in names}, "clients": list(clients),
                "max_batch": list(MAX_BATCHES), "max_delay_ms": MAX_DELAY_MS, "threads": ctx.threads,
                "seconds_per_point": ctx.pick(0.5, 4.0), "max_calls_per_client": ctx.pick(50, 5000),
                "workers": max(clients) + 16, "channels": CHANNELS,
                "server": "ganport serve subprocess (onnx backend); clients: threads in the benchmark process"}
    result = new_result("batching", ctx, settings)
    for name in names:
        batch_time = _batch_time(ctx, name)
        rows = []
        for max_batch in MAX_BATCHES:
            rows.extend(_measure_server(ctx, name, max_batch, clients, settings))
        for row in rows:
            row["batch_time_ms"] = batch_time * 1000
        result["rows"].extend(rows)
        result["tables"].append(_table(name, rows, clients, batch_time))
        _add_headlines(result, name, rows, clients, batch_time)
    return result


def _batch_time(ctx: BenchContext, name: str) -> float:
    """Median seconds of one full batch (max-batch rows) in-process with the server's thread count."""
    gen = ctx.zoo.generator(name, "onnx", threads=ctx.threads, max_batch=max(MAX_BATCHES))
    z = gen.sample_latents(max(MAX_BATCHES), seed=0)
    labels = gen.resolve_labels(None, len(z))
    timing = time_calls(lambda: gen.run(z, labels), seconds=ctx.pick(0.2, 1.0), max_calls=200, min_calls=3)
    return percentiles(timing.latencies, qs=(50,))["p50"]


def _measure_server(ctx: BenchContext, name: str, max_batch: int, clients: tuple[int, ...],
                    settings: dict[str, Any]) -> list[dict[str, Any]]:
    """Start one ``ganport serve --max-batch max_batch`` and load it with each client count."""
    package = ctx.zoo.package(name, ("onnx",))
    args = ["--max-batch", str(max_batch), "--max-delay-ms", str(MAX_DELAY_MS), "--threads", str(ctx.threads),
            "--metrics-port", "0", "--workers", str(settings["workers"])]
    log = ctx.workdir / f"serve-batching-{name}-mb{max_batch}.log"
    rows = []
    with ServeProcess(package, args, cwd=ctx.workdir, log_path=log) as server:
        for n in clients:
            logger.info("%s: max-batch %d, %d client(s)", name, max_batch, n)
            before = server.metrics_text()
            load = _closed_loop(server.target, name, MODELS[name].n_classes, n, settings)
            after = server.metrics_text()
            delta = {key: prometheus_value(after, metric, {"model": name}) -
                     prometheus_value(before, metric, {"model": name})
                     for key, metric in (("batches", "ganport_batch_size_count"), ("images", "ganport_batch_size_sum"),
                                         ("compute_s", "ganport_compute_seconds_sum"))}
            batches = max(delta["batches"], 1.0)
            rows.append({"model": name, "max_batch": max_batch, "clients": n, **load,
                         "server_batches": int(delta["batches"]), "mean_batch": delta["images"] / batches,
                         "mean_compute_ms": delta["compute_s"] / batches * 1000})
    return rows


def _closed_loop(target: str, name: str, n_classes: int, n: int, settings: dict[str, Any]) -> dict[str, Any]:
    """``n`` threads, each sending one-image Generate calls back to back; aggregate figures."""
    from ganport.runtime.server.client import GanportClient

    channels = [GanportClient(target, timeout=60.0) for _ in range(min(n, CHANNELS))]
    barrier = threading.Barrier(n)
    timings, errors = [None] * n, []

    def client(index: int) -> None:
        stub = channels[index % len(channels)]
        labels = [index % n_classes] if n_classes else None
        try:
            timings[index] = time_calls(lambda: stub.generate(name, 1, seed=index, labels=labels),
                                        seconds=settings["seconds_per_point"],
                                        max_calls=settings["max_calls_per_client"], warmup=2, start_barrier=barrier)
        except Exception as exc:  # noqa: BLE001 - count and report, never hang the others
            errors.append(repr(exc))
            barrier.abort()

    threads = [threading.Thread(target=client, args=(i,), name=f"bench-client-{i}") for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for channel in channels:
        channel.close()
    done = [t for t in timings if t is not None]
    latencies = [x for t in done for x in t.latencies]
    wall = max((t.wall for t in done), default=0.0)
    return {"calls": len(latencies), "seconds": wall,
            "images_per_s": len(latencies) / wall if wall else float("nan"),
            **percentiles(latencies, scale=1000.0, suffix="_ms"), "errors": errors[:5], "error_count": len(errors)}


def _table(name: str, rows: list[dict[str, Any]], clients: tuple[int, ...], batch_time: float) -> dict:
    """One line per client count: both servers side by side and the throughput ratio."""
    body = []
    for n in clients:
        one = next(r for r in rows if r["clients"] == n and r["max_batch"] == 1)
        big = next(r for r in rows if r["clients"] == n and r["max_batch"] == max(MAX_BATCHES))
        body.append([n, one["images_per_s"], one["p50_ms"], one["p99_ms"], big["images_per_s"], big["p50_ms"],
                     big["p95_ms"], big["p99_ms"], big["mean_batch"],
                     f"{big['images_per_s'] / one['images_per_s']:.2f}x"])
    return make_table(
        f"batching: {MODELS[name].description}, one-image requests (images/s, latency ms)",
        ["clients", "mb1 img/s", "mb1 p50", "mb1 p99", "mb64 img/s", "mb64 p50", "mb64 p95", "mb64 p99",
         "mb64 mean batch", "mb64/mb1"], body,
        note=f"max delay {MAX_DELAY_MS:g} ms; one full batch of {max(MAX_BATCHES)} takes {batch_time * 1000:.2f} ms "
             f"in-process")


def _add_headlines(result: dict[str, Any], name: str, rows: list[dict[str, Any]], clients: tuple[int, ...],
                   batch_time: float) -> None:
    """The two targets at 32 clients (or the most clients measured): speed-up and p99 bound."""
    n = TARGET_CLIENTS if TARGET_CLIENTS in clients else max(clients)
    one = next(r for r in rows if r["clients"] == n and r["max_batch"] == 1)
    big = next(r for r in rows if r["clients"] == n and r["max_batch"] == max(MAX_BATCHES))
    speedup = big["images_per_s"] / one["images_per_s"]
    result["headline"].append(headline(
        f"max-batch 64 / max-batch 1 throughput, {name}, {n} clients", speedup, "x",
        target=f">= {TARGET_SPEEDUP:g}x", met=speedup >= TARGET_SPEEDUP,
        detail=f"{big['images_per_s']:,.0f} vs {one['images_per_s']:,.0f} images/s"))
    bound = MAX_DELAY_MS + batch_time * 1000
    result["headline"].append(headline(
        f"p99 latency at max-batch 64, {name}, {n} clients", big["p99_ms"], "ms",
        target=f"<= {bound:.2f} ms (max delay + one batch)", met=big["p99_ms"] <= bound,
        detail=f"p50 {big['p50_ms']:.2f} ms, mean batch {big['mean_batch']:.1f}"))
