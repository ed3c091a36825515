"""Server metrics: per-model counters and histograms, Prometheus text format, optional HTTP port.

No dependency beyond the standard library: a tiny registry of counters, gauges and histograms
(thread-safe), rendered in the Prometheus text exposition format (version 0.0.4) and served by
``http.server`` in a daemon thread. The same numbers are readable in-process through
:meth:`Metrics.model_stats`, which is how tests observe batching.

Metric names (all prefixed ``ganport_``):

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
==========================================  =========  ============================================
"""

from __future__ import annotations

import logging
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterable, Sequence

logger = logging.getLogger(__name__)

#: Buckets (seconds) for latency histograms: 0.5 ms .. 10 s.
TIME_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Buckets (images) for batch sizes: powers of two up to 1024.
SIZE_BUCKETS = tuple(float(2 ** i) for i in range(11))

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape(value: str) -> str:
    """Escape a label value for the text format (backslash, quote, newline)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _format_labels(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    parts = [f'{n}="{_escape(str(v))}"' for n, v in zip(names, values)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _format_value(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class _Metric:
    """Base: a named family of time series keyed by label values."""

    kind = "untyped"

    def __init__(self, name: str, help_text: str, labelnames: Sequence[str] = ()):
        self.name = name
        self.help = help_text
        self.labelnames = tuple(labelnames)
        self._lock = threading.Lock()

    def _key(self, labels: Sequence[str]) -> tuple[str, ...]:
        if len(labels) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {tuple(labels)}")
        return tuple(str(v) for v in labels)

    def render(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}", *self._samples()]

    def _samples(self) -> list[str]:  # pragma: no cover - abstract
        raise NotImplementedError


class Counter(_Metric):
    """A monotonically increasing value per label set."""

    kind = "counter"

    def __init__(self, name: str, help_text: str, labelnames: Sequence[str] = ()):
        super().__init__(name, help_text, labelnames)
        self._values: dict[tuple[str, ...], float] = {}

    def inc(self, labels: Sequence[str] = (), amount: float = 1.0) -> None:
        """Add ``amount`` (default 1) to the series with these label values."""
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def get(self, labels: Sequence[str] = ()) -> float:
        """Current value of one series (0 if never incremented)."""
        with self._lock:
            return self._values.get(self._key(labels), 0.0)

    def items(self) -> list[tuple[tuple[str, ...], float]]:
        """Snapshot of every series as ``(label values, value)``."""
        with self._lock:
            return sorted(self._values.items())

    def _samples(self) -> list[str]:
        return [f"{self.name}{_format_labels(self.labelnames, k)} {_format_value(v)}"
                for k, v in self.items()]


class Gauge(Counter):
    """A value that can go up and down (set directly)."""

    kind = "gauge"

    def set(self, labels: Sequence[str], value: float) -> None:
        """Set the series with these label values to ``value``."""
        key = self._key(labels)
        with self._lock:
            self._values[key] = float(value)


class Histogram(_Metric):
    """Cumulative-bucket histogram per label set, plus sum and count."""

    kind = "histogram"

    def __init__(self, name: str, help_text: str, labelnames: Sequence[str] = (),
                 buckets: Iterable[float] = TIME_BUCKETS):
        super().__init__(name, help_text, labelnames)
        self.buckets = tuple(sorted(float(b) for b in buckets))
        # Per series: [count per bucket (non-cumulative, last = +Inf)], sum, count, max.
        self._series: dict[tuple[str, ...], dict] = {}

    def observe(self, labels: Sequence[str], value: float) -> None:
        """Record one observation."""
        key = self._key(labels)
        value = float(value)
        index = next((i for i, b in enumerate(self.buckets) if value <= b), len(self.buckets))
        with self._lock:
            series = self._series.get(key)
            if series is None:
                series = self._series[key] = {"buckets": [0] * (len(self.buckets) + 1),
                                              "sum": 0.0, "count": 0, "max": value}
            series["buckets"][index] += 1
            series["sum"] += value
            series["count"] += 1
            series["max"] = max(series["max"], value)

    def stats(self, labels: Sequence[str] = ()) -> dict[str, float]:
        """``{"count", "sum", "max"}`` of one series (zeros if never observed)."""
        with self._lock:
            series = self._series.get(self._key(labels))
            if series is None:
                return {"count": 0, "sum": 0.0, "max": 0.0}
            return {"count": series["count"], "sum": series["sum"], "max": series["max"]}

    def _samples(self) -> list[str]:
        lines = []
        with self._lock:
            items = sorted((k, dict(v, buckets=list(v["buckets"]))) for k, v in self._series.items())
        for key, series in items:
            cumulative = 0
            for bound, n in zip((*self.buckets, math.inf), series["buckets"]):
                cumulative += n
                le = f'le="{_format_value(bound)}"'
                lines.append(f"{self.name}_bucket{_format_labels(self.labelnames, key, le)} {cumulative}")
            labels = _format_labels(self.labelnames, key)
            lines.append(f"{self.name}_sum{labels} {_format_value(series['sum'])}")
            lines.append(f"{self.name}_count{labels} {series['count']}")
        return lines


class Metrics:
    """Every metric the server records; thread-safe.

    Example:
        >>> m = Metrics()
        >>> m.observe_batch("digits", size=8, compute_seconds=0.002)
        >>> m.model_stats("digits")["batches"]
        1
    """

    def __init__(self) -> None:
        self.requests = Counter("ganport_requests_total", "RPCs handled, by final status code.",
                                ("model", "method", "code"))
        self.request_seconds = Histogram("ganport_request_seconds", "RPC handling time in seconds.",
                                         ("model", "method"))
        self.images = Counter("ganport_images_total", "Images generated (model outputs).", ("model",))
        self.batch_size = Histogram("ganport_batch_size", "Images per model call.", ("model",),
                                    buckets=SIZE_BUCKETS)
        self.queue_seconds = Histogram("ganport_queue_seconds",
                                       "Time a request waited before its first model call.", ("model",))
        self.compute_seconds = Histogram("ganport_compute_seconds", "Duration of each model call.",
                                         ("model",))
        self.dropped = Counter("ganport_dropped_total",
                               "Requests dropped before running (expired, cancelled, shutdown).",
                               ("model", "reason"))
        self.queue_depth = Gauge("ganport_queue_depth", "Requests waiting in the batch queue.", ("model",))
        self.auth_failures = Counter("ganport_auth_failures_total", "Calls refused for a missing or wrong token.")
        self._all = (self.requests, self.request_seconds, self.images, self.batch_size,
                     self.queue_seconds, self.compute_seconds, self.dropped, self.queue_depth,
                     self.auth_failures)

    # -- recording -----------------------------------------------------------------------------
    def observe_request(self, model: str, method: str, code: str, seconds: float) -> None:
        """Record one finished RPC with its status code name (``OK``, ``INVALID_ARGUMENT``...)."""
        self.requests.inc((model, method, code))
        self.request_seconds.observe((model, method), seconds)

    def observe_batch(self, model: str, size: int, compute_seconds: float) -> None:
        """Record one model call of ``size`` images."""
        self.batch_size.observe((model,), size)
        self.compute_seconds.observe((model,), compute_seconds)
        self.images.inc((model,), size)

    def observe_queue(self, model: str, seconds: float) -> None:
        """Record how long one request waited before its first model call."""
        self.queue_seconds.observe((model,), seconds)

    def observe_drop(self, model: str, reason: str) -> None:
        """Record a request dropped before running."""
        self.dropped.inc((model, reason))

    def set_queue_depth(self, model: str, depth: int) -> None:
        """Publish the current number of waiting requests."""
        self.queue_depth.set((model,), depth)

    # -- reading -------------------------------------------------------------------------------
    def model_stats(self, model: str) -> dict[str, float]:
        """In-process summary for one model.

        Returns:
            ``batches`` (model calls), ``images``, ``max_batch`` (largest call), ``requests``
            (all methods and codes), ``ok`` (requests with code OK), ``dropped``,
            ``queue_seconds_sum``, ``compute_seconds_sum``.
        """
        batch = self.batch_size.stats((model,))
        requests = [(k, v) for k, v in self.requests.items() if k[0] == model]
        return {
            "batches": int(batch["count"]),
            "images": int(self.images.get((model,))),
            "max_batch": int(batch["max"]),
            "requests": int(sum(v for _, v in requests)),
            "ok": int(sum(v for k, v in requests if k[2] == "OK")),
            "dropped": int(sum(v for k, v in self.dropped.items() if k[0] == model)),
            "queue_seconds_sum": self.queue_seconds.stats((model,))["sum"],
            "compute_seconds_sum": self.compute_seconds.stats((model,))["sum"],
        }

    def render(self) -> str:
        """All metrics in the Prometheus text exposition format."""
        lines: list[str] = []
        for metric in self._all:
            lines.extend(metric.render())
        return "\n".join(lines) + "\n"


class MetricsHTTPServer:
    """Serves ``GET /metrics`` (Prometheus text) from a daemon thread.

    Args:
        metrics: the registry to render.
        host: interface to listen on.
        port: TCP port; 0 picks a free one (see :attr:`port`).

    Example:
        >>> http = MetricsHTTPServer(Metrics(), "127.0.0.1", 0)
        >>> http.port > 0
        True
        >>> http.close()
    """

    def __init__(self, metrics: Metrics, host: str = "127.0.0.1", port: int = 0):
        registry = metrics

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server naming
                if self.path.split("?")[0] not in ("/metrics", "/"):
                    self.send_error(404, "only /metrics is served here")
                    return
                body = registry.render().encode("utf-8")
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, fmt: str, *args) -> None:
                logger.debug("metrics http: " + fmt, *args)

        self._httpd = ThreadingHTTPServer((host, port), Handler)
        self._httpd.daemon_threads = True
        self.host = host
        self.port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="ganport-metrics",
                                        daemon=True)
        self._thread.start()
        logger.info("metrics on http://%s:%d/metrics", host, self.port)

    def close(self) -> None:
        """Stop serving and release the port."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
