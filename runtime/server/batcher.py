"""Dynamic batching: merge concurrent requests for one model into few model calls.

One :class:`DynamicBatcher` per served model owns a FIFO queue and one worker thread. Callers
(gRPC handler threads) :meth:`~DynamicBatcher.submit` latent vectors and labels and get a
:class:`concurrent.futures.Future`. The worker waits until ``max_batch`` rows are queued or the
oldest request has waited ``max_delay_ms``, takes up to ``max_batch`` rows from the head of the
queue (splitting a big request across several calls when needed), runs the model once on the
concatenation, and hands every caller exactly its own rows, in order.

Admission control: a full queue (``max_queue`` waiting requests) refuses new requests at once with
:class:`~ganport.errors.ResourceExhaustedError`. A request whose deadline has passed, whose RPC
is no longer active, or that was cancelled is dropped before it runs
(:class:`RequestDroppedError`).

The module is grpc-free and torch-free: ``run`` is any callable ``(z, labels) -> float32 NCHW``,
normally :meth:`ganport.runtime.Generator.run`.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from ganport.errors import GanportError, ResourceExhaustedError

logger = logging.getLogger(__name__)

RunFn = Callable[[np.ndarray, Optional[np.ndarray]], np.ndarray]


class RequestDroppedError(GanportError):
    """A queued request was dropped before it ran.

    Attributes:
        reason: ``"deadline"`` (its deadline passed), ``"cancelled"`` (the caller went away) or
            ``"shutdown"`` (the batcher closed without draining).
    """

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


@dataclass(eq=False)
class _Request:
    """One caller's rows and the state of their progress through the queue."""

    z: np.ndarray
    labels: Optional[np.ndarray]
    future: Future
    enqueued: float
    deadline: Optional[float]
    is_active: Optional[Callable[[], bool]]
    taken: int = 0          # rows already handed to a model call
    filled: int = 0         # rows whose output has arrived
    out: Optional[np.ndarray] = None
    cancelled: bool = False
    started: bool = False

    @property
    def rows(self) -> int:
        return int(self.z.shape[0])

    def drop_reason(self, now: float) -> Optional[str]:
        """Why this request must not run (None if it still should)."""
        if self.cancelled or self.future.cancelled():
            return "cancelled"
        if self.deadline is not None and now >= self.deadline:
            return "deadline"
        if self.is_active is not None and not self.is_active():
            return "cancelled"
        return None


@dataclass
class BatcherStats:
    """Counters kept by the batcher itself (the server also exports them as metrics)."""

    batches: int = 0
    images: int = 0
    dropped: int = 0
    batch_sizes: collections.deque = field(default_factory=lambda: collections.deque(maxlen=1024))


class DynamicBatcher:
    """Per-model queue plus worker thread that merges requests into batched model calls.

    Args:
        run: the model call, ``run(z, labels) -> float32 [N, C, H, W]``; must accept any
            ``N <= max_batch``.
        name: model name (thread name, log lines, metric labels).
        max_batch: most rows per model call.
        max_delay_ms: longest time the oldest queued request waits for others to join it.
        max_queue: most requests waiting; more are refused with ``ResourceExhaustedError``.
        metrics: optional :class:`~ganport.runtime.server.metrics.Metrics` to record into.

    Example:
        >>> b = DynamicBatcher(lambda z, labels: z[:, :, None, None], "echo", max_batch=4)
        >>> b.submit(np.ones((2, 3), np.float32)).result().shape
        (2, 3, 1, 1)
        >>> b.close()
    """

    def __init__(self, run: RunFn, name: str, *, max_batch: int = 64, max_delay_ms: float = 2.0,
                 max_queue: int = 1024, metrics=None):
        if max_batch < 1 or max_queue < 1 or max_delay_ms < 0:
            raise ValueError("max_batch and max_queue must be >= 1 and max_delay_ms >= 0")
        self._run = run
        self.name = name
        self.max_batch = int(max_batch)
        self.max_delay = float(max_delay_ms) / 1000.0
        self.max_queue = int(max_queue)
        self._metrics = metrics
        self.stats = BatcherStats()
        self._queue: collections.deque[_Request] = collections.deque()
        self._pending_rows = 0  # rows in the queue not yet handed to a model call
        self._cond = threading.Condition()
        self._closed = False
        self._drain = True
        self._thread = threading.Thread(target=self._loop, name=f"ganport-batcher-{name}", daemon=True)
        self._thread.start()

    # -- caller side ---------------------------------------------------------------------------
    def submit(self, z: np.ndarray, labels: Optional[np.ndarray] = None, *,
               timeout: Optional[float] = None,
               is_active: Optional[Callable[[], bool]] = None) -> Future:
        """Queue ``z`` (float32 ``[n, latent_dim]``) and ``labels`` (int64 ``[n]`` or None).

        Args:
            z: latent vectors, validated by the caller.
            labels: one label per row, or None for unconditional models.
            timeout: seconds the caller is willing to wait (its RPC deadline); dropped if the
                request has not started by then.
            is_active: callable returning False once the caller is gone (``context.is_active``).

        Returns:
            A future resolving to float32 ``[n, C, H, W]`` (rows in the order given), or raising
            :class:`RequestDroppedError` or the model's exception.

        Raises:
            ResourceExhaustedError: the queue is full (nothing was queued).
            RequestDroppedError: the batcher is closed.
        """
        z = np.ascontiguousarray(z, dtype=np.float32)
        if z.ndim != 2 or z.shape[0] < 1:
            raise ValueError(f"z must be [n >= 1, latent_dim], got shape {list(z.shape)}")
        if labels is not None:
            labels = np.ascontiguousarray(labels, dtype=np.int64)
            if labels.shape != (z.shape[0],):
                raise ValueError(f"labels must be [{z.shape[0]}], got shape {list(labels.shape)}")
        now = time.monotonic()
        request = _Request(z=z, labels=labels, future=Future(), enqueued=now,
                           deadline=None if timeout is None else now + max(0.0, timeout),
                           is_active=is_active)
        with self._cond:
            if self._closed:
                raise RequestDroppedError(f"model {self.name!r} is shutting down", reason="shutdown")
            if len(self._queue) >= self.max_queue:
                raise ResourceExhaustedError(
                    f"the queue of model {self.name!r} is full ({self.max_queue} requests waiting)",
                    hint="retry later, or start the server with a larger --max-queue")
            self._queue.append(request)
            self._pending_rows += request.rows
            self._publish_depth()
            self._cond.notify()
        return request.future

    def cancel(self, future: Future) -> None:
        """Mark the request behind ``future`` as cancelled; it is dropped if it has not run yet."""
        with self._cond:
            for request in self._queue:
                if request.future is future:
                    request.cancelled = True
                    self._cond.notify()
                    return

    @property
    def queue_depth(self) -> int:
        """Requests currently waiting (including one partly run)."""
        with self._cond:
            return len(self._queue)

    def close(self, drain: bool = True, timeout: Optional[float] = None) -> None:
        """Stop the worker.

        Args:
            drain: run what is queued first (True) or drop it with reason ``shutdown``.
            timeout: seconds to wait for the worker thread.
        """
        with self._cond:
            self._closed = True
            self._drain = drain
            self._cond.notify_all()
        self._thread.join(timeout)

    # -- worker side ---------------------------------------------------------------------------
    def _publish_depth(self) -> None:
        if self._metrics is not None:
            self._metrics.set_queue_depth(self.name, len(self._queue))

    def _fail(self, request: _Request, error: BaseException) -> None:
        """Resolve a request with ``error`` and take it off the queue (caller holds the lock)."""
        self._pending_rows -= request.rows - request.taken
        request.taken = request.rows
        try:
            self._queue.remove(request)
        except ValueError:
            pass
        if not request.future.done():
            request.future.set_exception(error)

    def _drop(self, request: _Request, reason: str) -> None:
        what = {"deadline": "its deadline passed", "cancelled": "the call was cancelled",
                "shutdown": "the server is shutting down"}[reason]
        self._fail(request, RequestDroppedError(
            f"request for model {self.name!r} dropped before it ran: {what}", reason=reason))
        self.stats.dropped += 1
        if self._metrics is not None:
            self._metrics.observe_drop(self.name, reason)
        logger.debug("batcher model=%s dropped reason=%s", self.name, reason)

    def _next_batch(self) -> Optional[list[tuple[_Request, int, int]]]:
        """Block until a batch is due; return its pieces ``(request, start, rows)`` or None to exit."""
        with self._cond:
            while True:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue:
                    return None  # closed and empty
                if self._closed and not self._drain:
                    for request in list(self._queue):
                        self._drop(request, "shutdown")
                    continue
                # Give the oldest request up to max_delay for others to join it.
                due = self._queue[0].enqueued + self.max_delay
                while self._pending_rows < self.max_batch and not self._closed:
                    remaining = due - time.monotonic()
                    if remaining <= 0 or not self._queue:
                        break
                    self._cond.wait(remaining)
                pieces: list[tuple[_Request, int, int]] = []
                rows = 0
                now = time.monotonic()
                while self._queue and rows < self.max_batch:
                    request = self._queue[0]
                    reason = request.drop_reason(now)
                    if reason is not None:
                        self._drop(request, reason)
                        continue
                    take = min(request.rows - request.taken, self.max_batch - rows)
                    pieces.append((request, request.taken, take))
                    if not request.started:
                        request.started = True
                        if self._metrics is not None:
                            self._metrics.observe_queue(self.name, now - request.enqueued)
                    request.taken += take
                    rows += take
                    self._pending_rows -= take
                    if request.taken == request.rows:
                        self._queue.popleft()
                self._publish_depth()
                if pieces:
                    return pieces
                # Everything at the head was dropped: wait for more work.

    def _loop(self) -> None:
        while True:
            pieces = self._next_batch()
            if pieces is None:
                return
            self._run_batch(pieces)

    def _run_batch(self, pieces: list[tuple[_Request, int, int]]) -> None:
        """Run one model call over ``pieces`` and distribute the output rows."""
        z = np.concatenate([r.z[s:s + n] for r, s, n in pieces]) if len(pieces) > 1 \
            else pieces[0][0].z[pieces[0][1]:pieces[0][1] + pieces[0][2]]
        labels = None
        if pieces[0][0].labels is not None:
            labels = np.concatenate([r.labels[s:s + n] for r, s, n in pieces])
        started = time.perf_counter()
        try:
            out = np.asarray(self._run(z, labels))
            if out.shape[0] != z.shape[0]:
                raise RuntimeError(f"model returned {out.shape[0]} rows for {z.shape[0]} inputs")
        except Exception as exc:  # noqa: BLE001 - any model failure goes to the callers
            logger.error("batcher model=%s: model call on %d rows failed: %r", self.name, len(z), exc)
            with self._cond:
                for request, _, _ in pieces:
                    self._fail(request, exc)
            return
        elapsed = time.perf_counter() - started
        self.stats.batches += 1
        self.stats.images += len(z)
        self.stats.batch_sizes.append(len(z))
        if self._metrics is not None:
            self._metrics.observe_batch(self.name, len(z), elapsed)
        logger.debug("batcher model=%s batch=%d requests=%d compute_ms=%.2f",
                     self.name, len(z), len(pieces), elapsed * 1000)
        offset = 0
        for request, start, rows in pieces:
            if request.out is None:
                request.out = np.empty((request.rows, *out.shape[1:]), dtype=out.dtype)
            request.out[start:start + rows] = out[offset:offset + rows]
            offset += rows
            request.filled += rows
            if request.filled == request.rows and not request.future.done():
                request.future.set_result(request.out)
