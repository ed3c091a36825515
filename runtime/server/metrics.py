"""Server metrics with ``prometheus_client``: one registry per server, optional HTTP port.

Each :class:`Metrics` owns its own ``CollectorRegistry`` (two servers in one process never mix
their numbers), rendered in the Prometheus text format by ``prometheus_client`` and served on
their own port by its ``start_http_server``. The same numbers are readable in-process through
:meth:`Metrics.model_stats`, which is how tests observe batching.

Metric names (unchanged from ganport 0.1, all prefixed ``ganport_``):

==========================================  =========  ============================================
name                                        type       labels
==========================================  =========  ============================================
``ganport_requests_total``                  counter    model, method, code
``ganport_request_seconds``                 histogram  model, method
``ganport_images_total``                    counter    model
``ganport_batch_size``                      histogram  model (one observation per model call)
``ganport_queue_seconds``                   histogram  model (enqueue -> start of first model call)
``ganport_compute_seconds``                 histogram  model (duration of each model call)
``ganport_dropped_total``                   counter    model, reason (deadline, cancelled, ...)
``ganport_queue_depth``                     gauge      model (requests waiting)
``ganport_auth_failures_total``             counter    (none)
``ganport_model_loads_total``               counter    model, result (ok, failed): loads after start-up
``ganport_cache_requests_total``            counter    model, result (hit, miss): response cache lookups
``ganport_cache_bytes``                      gauge      (none): bytes held by the response cache
``ganport_decode_errors_total``             counter    (none): request bodies that were not valid protobuf
==========================================  =========  ============================================
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Optional

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST, start_http_server

logger = logging.getLogger(__name__)

#: Buckets (seconds) for latency histograms: 0.5 ms .. 10 s.
TIME_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Buckets (images) for batch sizes: powers of two up to 1024.
SIZE_BUCKETS = tuple(float(2 ** i) for i in range(11))

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    """Every metric one server records; thread-safe (``prometheus_client`` locks per series).

    Attributes:
        registry: the ``prometheus_client.CollectorRegistry`` holding them.

    Example:
        >>> m = Metrics()
        >>> m.observe_batch("digits", size=8, compute_seconds=0.002)
        >>> m.model_stats("digits")["batches"]
        1
    """

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("ganport_requests", "RPCs handled, by final status code.",
                                ("model", "method", "code"), registry=registry)
        self.request_seconds = Histogram("ganport_request_seconds", "RPC handling time in seconds.",
                                         ("model", "method"), buckets=TIME_BUCKETS, registry=registry)
        self.images = Counter("ganport_images", "Images generated (model outputs).", ("model",),
                              registry=registry)
        self.batch_size = Histogram("ganport_batch_size", "Images per model call.", ("model",),
                                    buckets=SIZE_BUCKETS, registry=registry)
        self.queue_seconds = Histogram("ganport_queue_seconds",
                                       "Time a request waited before its first model call.", ("model",),
                                       buckets=TIME_BUCKETS, registry=registry)
        self.compute_seconds = Histogram("ganport_compute_seconds", "Duration of each model call.",
                                         ("model",), buckets=TIME_BUCKETS, registry=registry)
        self.dropped = Counter("ganport_dropped", "Requests dropped before running (expired, cancelled, "
                               "shutdown).", ("model", "reason"), registry=registry)
        self.queue_depth = Gauge("ganport_queue_depth", "Requests waiting in the batch queue.", ("model",),
                                 registry=registry)
        self.auth_failures = Counter("ganport_auth_failures", "Calls refused for a missing or wrong token.",
                                     registry=registry)
        self.model_loads = Counter("ganport_model_loads", "Package loads and reloads after start-up (explicit "
                                   "or polled), by result.", ("model", "result"), registry=registry)
        self.cache_requests = Counter("ganport_cache_requests", "Response cache lookups of deterministic requests.",
                                      ("model", "result"), registry=registry)
        self.cache_bytes = Gauge("ganport_cache_bytes", "Bytes of responses held by the response cache.",
                                 registry=registry)
        self.decode_errors = Counter("ganport_decode_errors", "Request bodies that were not valid protobuf.",
                                     registry=registry)
        self._max_batch: dict[str, int] = {}
        # Exact in-process totals behind the KServe ModelStatistics call (the Prometheus series
        # above keep durations in histograms without the status code, and batch sizes bucketed).
        self._totals_lock = threading.Lock()
        self._request_totals: dict[tuple[str, str, str], list] = {}  # (model, method, code) -> [n, s]
        self._batch_totals: dict[str, dict[int, list]] = {}  # model -> {size: [n, s]}
        self._last_batch: dict[str, float] = {}  # model -> time.time() at the end of its last call
        self._queue_depths: dict[str, dict[Any, int]] = {}  # model -> {batcher: waiting requests}
        # Labelled series looked up once: ``labels()`` takes a lock and builds a key on every call,
        # and these are recorded several times per request.
        self._series: dict[tuple, Any] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, cached (series are never removed)."""
        key = (id(metric), *labels)  # the metric objects live as long as this Metrics
        child = self._series.get(key)
        if child is None:
            child = self._series[key] = metric.labels(*labels)
        return child

    # -- recording -----------------------------------------------------------------------------
    def observe_request(self, model: str, method: str, code: str, seconds: float) -> None:
        """Record one finished RPC with its status code name (``OK``, ``INVALID_ARGUMENT``...)."""
        self._child(self.requests, model, method, code).inc()
        self._child(self.request_seconds, model, method).observe(seconds)
        with self._totals_lock:
            total = self._request_totals.setdefault((model, method, code), [0, 0.0])
            total[0] += 1
            total[1] += seconds

    def observe_batch(self, model: str, size: int, compute_seconds: float) -> None:
        """Record one model call of ``size`` images."""
        self._child(self.batch_size, model).observe(size)
        self._child(self.compute_seconds, model).observe(compute_seconds)
        self._child(self.images, model).inc(size)
        if size > self._max_batch.get(model, 0):
            self._max_batch[model] = size
        with self._totals_lock:
            total = self._batch_totals.setdefault(model, {}).setdefault(int(size), [0, 0.0])
            total[0] += 1
            total[1] += compute_seconds
            self._last_batch[model] = time.time()

    def observe_queue(self, model: str, seconds: float) -> None:
        """Record how long one request waited before its first model call."""
        self._child(self.queue_seconds, model).observe(seconds)

    def observe_drop(self, model: str, reason: str) -> None:
        """Record a request dropped before running."""
        self.dropped.labels(model, reason).inc()

    def observe_load(self, model: str, ok: bool) -> None:
        """Record one package (re)load after start-up (``result`` label ``ok`` or ``failed``)."""
        self.model_loads.labels(model, "ok" if ok else "failed").inc()

    def observe_cache(self, model: str, hit: bool) -> None:
        """Record one response-cache lookup (``result`` label ``hit`` or ``miss``)."""
        self.cache_requests.labels(model, "hit" if hit else "miss").inc()

    def set_cache_bytes(self, size: int) -> None:
        """Publish the response cache's size in bytes."""
        self.cache_bytes.set(size)

    def set_queue_depth(self, model: str, depth: int, source: Any = None) -> None:
        """Publish the current number of waiting requests of one batcher (``source``); the gauge
        is the sum over the model's batchers (its versions)."""
        with self._totals_lock:
            depths = self._queue_depths.setdefault(model, {})
            if depth:
                depths[source] = depth
            else:
                depths.pop(source, None)  # idle batchers (and closed ones) leave no entry
            total = sum(depths.values())
        self._child(self.queue_depth, model).set(total)

    # -- reading -------------------------------------------------------------------------------
    def _sum(self, name: str, **labels: str) -> float:
        """Sum of every sample called ``name`` whose labels include ``labels``."""
        total = 0.0
        for family in self.registry.collect():
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    total += sample.value
        return total

    def model_stats(self, model: str) -> dict[str, float]:
        """In-process summary for one model.

        Returns:
            ``batches`` (model calls), ``images``, ``max_batch`` (largest call), ``requests``
            (all methods and codes), ``ok`` (requests with code OK), ``dropped``,
            ``queue_seconds_sum``, ``compute_seconds_sum``.
        """
        return {
            "batches": int(self._sum("ganport_batch_size_count", model=model)),
            "images": int(self._sum("ganport_images_total", model=model)),
            "max_batch": int(self._max_batch.get(model, 0)),
            "requests": int(self._sum("ganport_requests_total", model=model)),
            "ok": int(self._sum("ganport_requests_total", model=model, code="OK")),
            "dropped": int(self._sum("ganport_dropped_total", model=model)),
            "queue_seconds_sum": self._sum("ganport_queue_seconds_sum", model=model),
            "compute_seconds_sum": self._sum("ganport_compute_seconds_sum", model=model),
        }

    def request_totals(self, model: str) -> dict[tuple[str, str], tuple[int, float]]:
        """Finished RPCs of one model: ``{(method, code): (count, total seconds)}``."""
        with self._totals_lock:
            return {(method, code): (int(n), float(s)) for (name, method, code), (n, s)
                    in self._request_totals.items() if name == model}

    def batch_totals(self, model: str) -> dict[int, tuple[int, float]]:
        """Successful model calls of one model by batch size: ``{size: (count, total seconds)}``."""
        with self._totals_lock:
            return {size: (int(n), float(s)) for size, (n, s) in sorted(self._batch_totals.get(model, {}).items())}

    def last_batch_time(self, model: str) -> Optional[float]:
        """``time.time()`` when the model's last successful call ended, or None."""
        with self._totals_lock:
            return self._last_batch.get(model)

    def queue_totals(self, model: str) -> tuple[int, float]:
        """Requests that reached a model call and their summed queue time (s)."""
        return (int(self._sum("ganport_queue_seconds_count", model=model)),
                self._sum("ganport_queue_seconds_sum", model=model))

    def count(self, name: str, **labels: str) -> float:
        """The value of a counter (summed over the other labels), e.g. ``count("ganport_auth_failures_total")``."""
        return self._sum(name, **labels)

    def render(self) -> str:
        """All metrics in the Prometheus text exposition format."""
        return generate_latest(self.registry).decode("utf-8")


class MetricsHTTPServer:
    """Serves the registry at ``GET /metrics`` with ``prometheus_client.start_http_server``.

    Args:
        metrics: the registry to serve.
        host: interface to listen on.
        port: TCP port; 0 picks a free one (see :attr:`port`).

    Raises:
        OSError: the port cannot be bound.

    Example:
        >>> http = MetricsHTTPServer(Metrics(), "127.0.0.1", 0)
        >>> http.port > 0
        True
        >>> http.close()
    """

    def __init__(self, metrics: Metrics, host: str = "127.0.0.1", port: int = 0):
        self._httpd, self._thread = start_http_server(port, addr=host, registry=metrics.registry)
        self.host = host
        self.port: int = int(self._httpd.server_port)
        logger.info("metrics on http://%s:%d/metrics", host, self.port)

    def close(self, timeout: Optional[float] = 5.0) -> None:
        """Stop serving and release the port."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout)
