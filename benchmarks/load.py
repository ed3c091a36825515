"""A multi-process, closed-loop load generator: the same one for ganport and for the Triton peer.

:class:`LoadPool` starts N client *processes* once (``spawn``; each imports only numpy, grpc,
``tritonclient.grpc`` and ganport's client, never torch) and reuses them for every measured
point, so 32 clients are 32 processes with their own GIL and their own gRPC channel, and the
start-up cost is paid once per run. Each point is one :meth:`LoadPool.run` call:

* ``protocol="kserve"``: ``tritonclient.grpc.InferenceServerClient.infer`` with inputs ``z``
  (FP32 ``[B, latent_dim]``, seeded: ``default_rng(seed)``) and for conditional models ``label``
  (INT64 ``[B, 1]``), output ``image`` FP32, read back with ``as_numpy``: the exact same request
  bytes for ganport's KServe service and for Triton;
* ``protocol="native"``: ganport's own API, :class:`ganport.runtime.server.client.GanportClient`
  ``generate(model, B, seed=..., labels=..., encoding="uint8")`` (raw uint8, decoded to an array);
  a new seed per call, so no answer can come from a cache.

Every client warms up (``warmup`` calls, not measured), reports ready, and all start together at
one instant (``time.monotonic`` is system-wide on Linux); each sends its next request as soon as
the last one returned, until ``seconds`` have passed or ``max_calls``. Works with tritonclient
2.41 and 2.73 (only ``InferenceServerClient``, ``InferInput``, ``InferRequestedOutput``,
``infer`` and ``as_numpy`` are used).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import queue
import time
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

#: Seconds the coordinator waits for a client to warm up / finish beyond the measuring time.
_SLACK_S = 120.0


@dataclass(frozen=True)
class Point:
    """One measured load point, sent to every client that takes part.

    Args:
        protocol: ``kserve`` (tritonclient.grpc) or ``native`` (GanportClient).
        target: ``host:port`` of the gRPC server.
        model: model name.
        batch: images per request.
        latent_dim: length of ``z``.
        n_classes: classes of a conditional model (0: no ``label`` input).
        seconds: measuring time.
        max_calls: most measured calls per client.
        warmup: unmeasured calls per client first.
    """

    protocol: str
    target: str
    model: str
    batch: int
    latent_dim: int
    n_classes: int
    seconds: float
    max_calls: int
    warmup: int = 3


def _worker(index: int, commands: "mp.Queue", results: "mp.Queue") -> None:
    """One client process: run points until told to stop."""
    import numpy as np

    clients: dict[tuple[str, str], Any] = {}

    def client_for(protocol: str, target: str) -> Any:
        key = (protocol, target)
        if key not in clients:
            if protocol == "kserve":
                import tritonclient.grpc as triton

                clients[key] = triton.InferenceServerClient(target)
            else:
                from ganport.runtime.server.client import GanportClient

                clients[key] = GanportClient(target, timeout=60.0)
        return clients[key]

    def close_clients() -> None:
        for client in clients.values():
            try:
                client.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass
        clients.clear()

    def make_call(point: Point):
        client = client_for(point.protocol, point.target)
        label = index % point.n_classes if point.n_classes else None
        if point.protocol == "kserve":
            import tritonclient.grpc as triton

            rng = np.random.default_rng(index)
            requests = []
            for _ in range(8):  # a few different latents, cycled (request building is not measured)
                z = triton.InferInput("z", [point.batch, point.latent_dim], "FP32")
                z.set_data_from_numpy(rng.standard_normal((point.batch, point.latent_dim)).astype(np.float32))
                inputs = [z]
                if label is not None:
                    lab = triton.InferInput("label", [point.batch, 1], "INT64")
                    lab.set_data_from_numpy(np.full((point.batch, 1), label, dtype=np.int64))
                    inputs.append(lab)
                requests.append(inputs)
            outputs = [triton.InferRequestedOutput("image")]
            counter = iter(range(1 << 62))

            def call() -> None:
                reply = client.infer(point.model, requests[next(counter) % len(requests)], outputs=outputs,
                                     client_timeout=60.0)
                image = reply.as_numpy("image")
                assert image is not None and image.shape[0] == point.batch
            return call
        seeds = iter(range(index * 10_000_000, (index + 1) * 10_000_000))
        labels = [label] * point.batch if label is not None else None

        def call() -> None:
            images = client.generate(point.model, point.batch, seed=next(seeds), labels=labels, encoding="uint8")
            assert images.shape[0] == point.batch
        return call

    while True:
        command = commands.get()
        if command is None:
            break
        if command == "close":
            close_clients()
            continue
        point: Point = command
        try:
            call = make_call(point)
            for _ in range(point.warmup):
                call()
        except Exception as exc:  # noqa: BLE001 - reported, never hangs the coordinator
            results.put(("ready", index, f"{type(exc).__name__}: {exc}"[:500]))
            commands.get()  # the "go" (or abort) that follows
            results.put(("done", index, {"latencies": [], "first": None, "last": None, "errors": 1,
                                         "error": f"warm-up: {type(exc).__name__}: {exc}"[:500]}))
            continue
        results.put(("ready", index, None))
        start_at = commands.get()
        if start_at is None:  # aborted
            results.put(("done", index, {"latencies": [], "first": None, "last": None, "errors": 0, "error": None}))
            continue
        delay = start_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        end_at = start_at + point.seconds
        latencies: list[float] = []
        errors, error = 0, None
        first = time.perf_counter()
        last = first
        while len(latencies) < point.max_calls and time.monotonic() < end_at:
            began = time.perf_counter()
            try:
                call()
            except Exception as exc:  # noqa: BLE001 - count it; stop this client after too many
                errors += 1
                error = error or f"{type(exc).__name__}: {exc}"[:500]
                if errors >= 20:
                    break
                continue
            last = time.perf_counter()
            latencies.append(last - began)
        results.put(("done", index, {"latencies": latencies, "wall": last - first, "errors": errors, "error": error}))
    close_clients()


class LoadPool:
    """``n`` client processes, started once and reused for every point.

    Example:
        >>> with LoadPool(4) as pool:                                            # doctest: +SKIP
        ...     row = pool.run(Point("kserve", "127.0.0.1:8001", "mlp28", 1, 100, 62, 4.0, 5000), clients=4)
        >>> row["images_per_s"], row["p50_ms"]                                   # doctest: +SKIP
    """

    def __init__(self, n: int):
        self.n = n
        self._ctx = mp.get_context("spawn")
        self._results: mp.Queue = self._ctx.Queue()
        self._commands = [self._ctx.Queue() for _ in range(n)]
        self._procs = [self._ctx.Process(target=_worker, args=(i, self._commands[i], self._results), daemon=True,
                                         name=f"bench-load-{i}") for i in range(n)]

    def start(self) -> "LoadPool":
        started = time.perf_counter()
        for proc in self._procs:
            proc.start()
        logger.info("started %d load-generator processes in %.1f s", self.n, time.perf_counter() - started)
        return self

    def run(self, point: Point, clients: int) -> dict[str, Any]:
        """Measure one point with the first ``clients`` processes; returns the aggregate figures.

        Returns:
            ``calls``, ``seconds`` (the longest client's measuring wall time), ``images_per_s``
            (calls x batch / seconds), ``requests_per_s``, ``p50_ms``/``p95_ms``/``p99_ms`` over every
            call, ``error_count`` and the first ``errors``.
        """
        from benchmarks.common import percentiles

        if not 1 <= clients <= self.n:
            raise ValueError(f"clients must be 1..{self.n}, got {clients}")
        for i in range(clients):
            self._commands[i].put(point)
        warm_errors = []
        for _ in range(clients):
            _kind, index, error = self._get(point.seconds)
            if error:
                warm_errors.append(f"client {index}: {error}")
        start_at = time.monotonic() + 0.05
        for i in range(clients):
            self._commands[i].put(start_at)
        done = [self._get(point.seconds)[2] for _ in range(clients)]
        latencies = [x for d in done for x in d["latencies"]]
        wall = max((d.get("wall") or 0.0) for d in done)
        errors = [d["error"] for d in done if d["error"]]
        calls = len(latencies)
        return {"protocol": point.protocol, "clients": clients, "batch": point.batch, "calls": calls,
                "seconds": wall, "images_per_s": calls * point.batch / wall if wall > 0 else float("nan"),
                "requests_per_s": calls / wall if wall > 0 else float("nan"),
                **percentiles(latencies, scale=1000.0, suffix="_ms"),
                "error_count": sum(d["errors"] for d in done), "errors": (warm_errors + errors)[:3],
                "latencies": latencies}

    def _get(self, seconds: float) -> tuple:
        try:
            return self._results.get(timeout=seconds + _SLACK_S)
        except queue.Empty:
            raise TimeoutError("a load-generator process did not answer") from None

    def close_clients(self) -> None:
        """Close every process's channels (before the servers they point at stop)."""
        for commands in self._commands:
            commands.put("close")

    def stop(self) -> None:
        for commands in self._commands:
            commands.put(None)
        for proc in self._procs:
            proc.join(10)
            if proc.is_alive():
                proc.terminate()
                proc.join(5)

    def __enter__(self) -> "LoadPool":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
