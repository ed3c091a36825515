"""Word rendering latency: ``RenderWord`` over gRPC for a 10-character text, p50/p95/p99.

The MLP glyph cGAN (62 classes) is served in-process by the real server, and one client renders
the same 10-character text (``Hello 2026``: 9 glyphs and a space) with a new seed per call. For
reference the same Generator's ``render_word`` is timed in-process, and the server is measured
with its defaults (max delay 0: a lone request runs at once) and with an opt-in max delay of 2 ms.

The response cache (``--cache-mb``) is measured on the same text with a fixed seed: a miss path
(every call a new seed, cache on) against the hit path (the same seed again). Target: hits >= 5x
faster than misses, and the cache's size stays under its bound. Two figures are reported: the
client's round trip, which a hit cannot bring below one gRPC call (the ``ListModels`` row is that
floor, measured alongside), and the server's own handling time per call (``ganport_request_seconds``
sum / count over each phase: from the body handed over by grpcio to the response returned), which is
what the cache saves and what bounds a loaded server's throughput.
"""

from __future__ import annotations

import logging
import itertools
from typing import Any

from benchmarks.common import BenchContext, headline, make_table, new_result, time_calls
from benchmarks.models import MODELS
from benchmarks.servers import inprocess_server

logger = logging.getLogger(__name__)

MODEL = "mlp28"
TEXT = "Hello 2026"
#: Server configurations measured: label -> create_server options.
SERVER_CONFIGS = {"gRPC, defaults (max delay 0)": {"max_batch": 64, "max_delay_ms": 0.0},
                  "gRPC, max delay 2 ms": {"max_batch": 64, "max_delay_ms": 2.0}}
#: Response cache size for the cache rows (MiB).
CACHE_MB = 1.0
CACHE_TARGET = 5.0


def run(ctx: BenchContext) -> dict[str, Any]:
    """Latency percentiles of rendering :data:`TEXT` in-process and over gRPC."""
    settings = {"model": MODELS[MODEL].description, "text": TEXT, "characters": len(TEXT), "threads": ctx.threads,
                "seconds": ctx.pick(0.5, 5.0), "max_calls": ctx.pick(30, 1000), "servers": SERVER_CONFIGS,
                "client": "one sequential GanportClient.render_word (raw uint8 answer), new seed per call"}
    result = new_result("word", ctx, settings)
    gen = ctx.zoo.generator(MODEL, "onnx", threads=ctx.threads, max_batch=64)
    bounds = {"seconds": settings["seconds"], "max_calls": settings["max_calls"], "min_calls": ctx.pick(5, 50),
              "warmup": 3}
    seeds = itertools.count()
    glyphs = len(gen.plan_word(TEXT, seed=0).labels)

    def add(label: str, fn) -> None:
        timing = time_calls(fn, **bounds)
        result["rows"].append({"path": label, "glyphs": glyphs, **timing.summary(1, unit="words_per_s")})

    add("in-process Generator.render_word", lambda: gen.render_word(TEXT, seed=next(seeds)))
    for label, options in SERVER_CONFIGS.items():
        logger.info("RenderWord via %s", label)
        with inprocess_server({MODEL: gen}, **options) as (_server, client):
            add(label, lambda: client.render_word(MODEL, TEXT, seed=next(seeds)))
    with inprocess_server({MODEL: gen}, max_batch=64, cache_mb=CACHE_MB) as (server, client):
        add("gRPC ListModels (round-trip floor)", client.list_models)
        handling = _HandlingTime(server.metrics.registry, MODEL, "RenderWord")
        add("gRPC, cache on, miss (new seed per call)", lambda: client.render_word(MODEL, TEXT, seed=next(seeds)))
        miss_server_ms = handling.lap()
        client.render_word(MODEL, TEXT, seed=1)
        handling.lap()
        add("gRPC, cache on, hit (same seed)", lambda: client.render_word(MODEL, TEXT, seed=1))
        hit_server_ms = handling.lap()
        cache_bytes = server.cache.bytes
    miss, hit = result["rows"][-2], result["rows"][-1]
    miss["server_ms"], hit["server_ms"] = miss_server_ms, hit_server_ms
    speedup = miss["p50_ms"] / hit["p50_ms"] if hit["p50_ms"] else None
    server_speedup = miss_server_ms / hit_server_ms if hit_server_ms else None
    result["notes"].append(f"cache held {cache_bytes / 1024:.0f} KiB of its {CACHE_MB:g} MiB bound at the end")
    result["tables"].append(make_table(
        f"word: RenderWord {TEXT!r} ({len(TEXT)} characters, {glyphs} glyphs), latency ms",
        ["path", "p50", "p95", "p99", "words/s", "calls", "server ms/call"],
        [[r["path"], r["p50_ms"], r["p95_ms"], r["p99_ms"], r["words_per_s"], r["calls"], r.get("server_ms", "")]
         for r in result["rows"]]))
    default = result["rows"][1]
    result["headline"].append(headline(f"RenderWord {len(TEXT)} characters over gRPC, p50", default["p50_ms"], "ms",
                                       detail=f"p99 {default['p99_ms']:.2f} ms; default server settings"))
    result["headline"].append(headline(
        "RenderWord with --cache-mb: miss p50 / hit p50", speedup, "x", target=f">= {CACHE_TARGET:g}x",
        met=None if speedup is None else speedup >= CACHE_TARGET and cache_bytes <= CACHE_MB * 1024 * 1024,
        detail=f"miss {miss['p50_ms']:.2f} ms, hit {hit['p50_ms']:.2f} ms (one ListModels round trip: "
               f"{result['rows'][-3]['p50_ms']:.2f} ms); cache {cache_bytes} B <= {CACHE_MB:g} MiB"))
    result["headline"].append(headline(
        "RenderWord with --cache-mb: server handling time, miss / hit", server_speedup, "x",
        target=f">= {CACHE_TARGET:g}x",
        met=None if server_speedup is None else server_speedup >= CACHE_TARGET,
        detail=f"miss {miss_server_ms:.3f} ms, hit {hit_server_ms:.3f} ms per call "
               f"(ganport_request_seconds, transport excluded)"))
    return result


class _HandlingTime:
    """Mean server handling time per call of one method since the previous :meth:`lap`.

    Reads the server's own ``ganport_request_seconds`` histogram (sum and count) from its
    ``prometheus_client`` registry.
    """

    def __init__(self, registry: Any, model: str, method: str):
        self._registry = registry
        self._labels = {"model": model, "method": method}
        self._last = self._read()

    def _read(self) -> tuple[float, float]:
        get = self._registry.get_sample_value
        return (get("ganport_request_seconds_sum", self._labels) or 0.0,
                get("ganport_request_seconds_count", self._labels) or 0.0)

    def lap(self) -> float:
        """Milliseconds per call since the last lap (0 when no call was made)."""
        total, count = self._read()
        (last_total, last_count), self._last = self._last, (total, count)
        calls = count - last_count
        return 1000.0 * (total - last_total) / calls if calls else 0.0
