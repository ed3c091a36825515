"""Dynamic batching on an asyncio event loop: merge concurrent requests for one model into few calls.

One :class:`DynamicBatcher` per served model owns a FIFO queue and one worker task on the server's
event loop. RPC handlers (coroutines on the same loop) :meth:`~DynamicBatcher.submit` latent
vectors and labels and await the returned :class:`asyncio.Future`. The worker runs the model in a
thread (``run_in_executor``), so the loop keeps accepting requests while the model computes.

Batching semantics (Triton's default):

* whenever the model is free, the worker takes what is queued, up to ``max_batch`` rows, from
  the head of the queue, and runs it at once: a lone request never waits for company;
* while the model runs, new requests queue up, so under load batches grow by themselves;
* ``max_delay_ms > 0`` (opt-in) lets the oldest request wait up to that long for the batch to fill;
* a request bigger than what is left of a batch is split across model calls; every caller gets
  exactly its own rows, in order;
* a model call that fails for a merged batch is retried per request, so only the request that
  breaks the model fails (the others get their rows);
* ``instances > 1`` (Triton's instance count) runs up to that many batches at once, each in its own
  executor thread: on CPU, two single-threaded calls at once get more images per second out of two
  cores than one call with two intra-op threads (benchmarks/README.md, "Model instances"). What is
  queued is shared among the free instances: with two idle, 64 queued rows run as two calls of
  32 at once, not one call of 64 on one thread.

Costs per request are one queue append and one ``Future.set_result`` on the loop; the hand-off
between the loop and the model thread happens once per batch.

Admission control: a full queue (``max_queue`` waiting requests) refuses new requests at once with
:class:`~ganport.errors.ResourceExhaustedError`. A request whose deadline has passed or whose
future was cancelled (the RPC went away) is dropped before it runs (:class:`RequestDroppedError`).

The module is grpc-free and torch-free: ``run`` is any thread-safe callable
``(z, labels) -> float32 [N, C, H, W]``, normally :meth:`ganport.runtime.Generator.run`.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from concurrent.futures import Executor, ThreadPoolExecutor
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
    future: asyncio.Future
    enqueued: float
    deadline: Optional[float]
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
        # Deadline first: grpc cancels a call whose deadline passed, and that is the reason.
        if self.deadline is not None and now >= self.deadline:
            return "deadline"
        if self.cancelled or self.future.cancelled():
            return "cancelled"
        return None


@dataclass
class BatcherStats:
    """Counters kept by the batcher itself (the server also exports them as metrics).

    Attributes:
        batches: model calls that succeeded.
        images: rows computed by those calls.
        requests: requests answered with their rows.
        failed: requests answered with an error from the model.
        dropped: requests dropped before they ran.
        retries: merged batches that failed and were retried per request.
        queue_seconds: total time requests waited before their first model call (s).
        compute_seconds: total time spent in model calls (s).
        batch_sizes: the last 1024 batch sizes.
    """

    batches: int = 0
    images: int = 0
    requests: int = 0
    failed: int = 0
    dropped: int = 0
    retries: int = 0
    queue_seconds: float = 0.0
    compute_seconds: float = 0.0
    batch_sizes: collections.deque = field(default_factory=lambda: collections.deque(maxlen=1024))


Piece = tuple[_Request, int, int]  # (request, first row, number of rows)
# Most loop iterations a batch start yields to runnable handlers (see _let_arrivals_queue).
_MAX_YIELDS = 64


class DynamicBatcher:
    """Per-model queue plus worker task that merges requests into batched model calls.

    Create and use it on one running event loop (the worker task starts with the first request).

    Args:
        run: the model call, ``run(z, labels) -> float32 [N, C, H, W]``; must accept any
            ``N <= max_batch`` and be safe to call from a worker thread.
        name: model name (log lines, metric labels).
        max_batch: most rows per model call.
        max_delay_ms: how long the oldest queued request may wait for the batch to fill, in
            milliseconds; 0 (default) runs whatever is queued as soon as the model is free.
        max_queue: most requests waiting; more are refused with ``ResourceExhaustedError``.
        metrics: optional :class:`~ganport.runtime.server.metrics.Metrics` to record into.
        instances: most model calls running at once (>= 1; default 1: calls never overlap and
            each gets every intra-op thread). ``run`` must be safe to call concurrently when > 1.
        executor: where model calls run (default: a private pool of ``instances`` threads).
        clock: monotonic clock in seconds (injectable for tests).

    Example:
        >>> async def demo():
        ...     b = DynamicBatcher(lambda z, labels: z[:, :, None, None], "echo", max_batch=4)
        ...     out = await b.submit(np.ones((2, 3), np.float32))
        ...     await b.close()
        ...     return out.shape
        >>> asyncio.run(demo())
        (2, 3, 1, 1)
    """

    def __init__(self, run: RunFn, name: str, *, max_batch: int = 64, max_delay_ms: float = 0.0,
                 max_queue: int = 1024, metrics=None, instances: int = 1, executor: Optional[Executor] = None,
                 clock: Callable[[], float] = time.monotonic):
        if max_batch < 1 or max_queue < 1 or max_delay_ms < 0 or instances < 1:
            raise ValueError("max_batch, max_queue and instances must be >= 1 and max_delay_ms >= 0")
        self._run = run
        self.name = name
        self.max_batch = int(max_batch)
        self.max_delay = float(max_delay_ms) / 1000.0
        self.max_queue = int(max_queue)
        self._metrics = metrics
        self._clock = clock
        self._own_executor = executor is None
        self.instances = int(instances)
        self._executor = executor or ThreadPoolExecutor(self.instances, thread_name_prefix=f"ganport-model-{name}")
        self._running: set[asyncio.Task] = set()  # batches in flight when instances > 1
        self.stats = BatcherStats()
        self._queue: collections.deque[_Request] = collections.deque()
        self._pending_rows = 0  # rows in the queue not yet handed to a model call
        self._wake: Optional[asyncio.Event] = None
        self._worker: Optional[asyncio.Task] = None
        self._closed = False
        self._drain = True

    # -- caller side ---------------------------------------------------------------------------
    def submit(self, z: np.ndarray, labels: Optional[np.ndarray] = None, *,
               timeout: Optional[float] = None) -> asyncio.Future:
        """Queue ``z`` (float32 ``[n, latent_dim]``) and ``labels`` (int64 ``[n]`` or None).

        Call on the batcher's event loop; await the result there.

        Args:
            z: latent vectors, already validated by the caller.
            labels: one label per row, or None for unconditional models.
            timeout: seconds the caller is willing to wait (its RPC deadline); the request is
                dropped if it has not started by then.

        Returns:
            A future resolving to float32 ``[n, C, H, W]`` (rows in the order given; possibly a
            read-only view into the batch output), or raising :class:`RequestDroppedError` or the
            model's exception. Cancelling the future (e.g. the awaiting RPC task is cancelled)
            drops the request if it has not run yet.

        Raises:
            ResourceExhaustedError: the queue is full (nothing was queued).
            RequestDroppedError: the batcher is closed.
            ValueError: ``z``/``labels`` have the wrong rank or lengths.
        """
        if z.dtype != np.float32 or not z.flags.c_contiguous:
            z = np.ascontiguousarray(z, dtype=np.float32)
        if z.ndim != 2 or z.shape[0] < 1:
            raise ValueError(f"z must be [n >= 1, latent_dim], got shape {list(z.shape)}")
        if labels is not None:
            if labels.dtype != np.int64:
                labels = np.ascontiguousarray(labels, dtype=np.int64)
            if labels.shape != (z.shape[0],):
                raise ValueError(f"labels must be [{z.shape[0]}], got shape {list(labels.shape)}")
        if self._closed:
            raise RequestDroppedError(f"model {self.name!r} is shutting down", reason="shutdown")
        if len(self._queue) >= self.max_queue:
            raise ResourceExhaustedError(
                f"the queue of model {self.name!r} is full ({self.max_queue} requests waiting)",
                hint="retry later, or start the server with a larger --max-queue")
        loop = asyncio.get_running_loop()
        now = self._clock()
        request = _Request(z=z, labels=labels, future=loop.create_future(), enqueued=now,
                           deadline=None if timeout is None else now + max(0.0, timeout))
        self._queue.append(request)
        self._pending_rows += request.rows
        if self._worker is None:
            self._wake = asyncio.Event()
            self._worker = loop.create_task(self._loop(), name=f"ganport-batcher-{self.name}")
        self._wake.set()
        self._publish_depth()
        return request.future

    def cancel(self, future: asyncio.Future) -> None:
        """Drop the request behind ``future`` if it has not run yet (same as ``future.cancel()``)."""
        future.cancel()
        if self._wake is not None:
            self._wake.set()

    @property
    def queue_depth(self) -> int:
        """Requests currently waiting (including one partly run)."""
        return len(self._queue)

    async def close(self, drain: bool = True) -> None:
        """Stop the worker.

        Args:
            drain: run what is queued first (True) or drop it with reason ``shutdown``.
        """
        self._closed = True
        self._drain = drain
        if self._worker is not None:
            self._wake.set()
            await self._worker
        if self._own_executor:
            self._executor.shutdown(wait=False)

    # -- worker side ---------------------------------------------------------------------------
    def _publish_depth(self) -> None:
        if self._metrics is not None:
            self._metrics.set_queue_depth(self.name, len(self._queue), id(self))

    def _fail(self, request: _Request, error: BaseException) -> None:
        """Resolve a request with ``error`` and take it off the queue."""
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

    def _batch_limit(self) -> int:
        """Rows for the next call: ``max_batch``, or with several instances free, this call's even
        share of what is queued (so the free instances split it instead of one taking it all)."""
        free = self.instances - len(self._running)
        if free <= 1 or self._pending_rows <= 1:
            return self.max_batch
        return min(self.max_batch, -(-self._pending_rows // free))

    def _take(self) -> list[Piece]:
        """Take up to :meth:`_batch_limit` rows from the head of the queue (dropping dead requests)."""
        pieces: list[Piece] = []
        rows = 0
        now = self._clock()
        queue = self._queue
        limit = self._batch_limit()
        while queue and rows < limit:
            request = queue[0]
            reason = request.drop_reason(now)
            if reason is not None:
                self._drop(request, reason)
                continue
            take = min(request.rows - request.taken, limit - rows)
            pieces.append((request, request.taken, take))
            if not request.started:
                request.started = True
                waited = now - request.enqueued
                self.stats.queue_seconds += waited
                if self._metrics is not None:
                    self._metrics.observe_queue(self.name, waited)
            request.taken += take
            rows += take
            self._pending_rows -= take
            if request.taken == request.rows:
                queue.popleft()
        self._publish_depth()
        return pieces

    async def _loop(self) -> None:
        wake = self._wake
        while True:
            if not self._queue:
                if self._closed:
                    if self._running:
                        await asyncio.wait(self._running)
                    return
                wake.clear()
                await wake.wait()
                continue
            if self._closed and not self._drain:
                for request in list(self._queue):
                    self._drop(request, "shutdown")
                continue
            if self.max_delay > 0 and self._pending_rows < self.max_batch and not self._closed:
                remaining = self._queue[0].enqueued + self.max_delay - self._clock()
                if remaining > 0:
                    wake.clear()
                    try:  # woken by every submit, so a batch that fills up leaves early
                        await asyncio.wait_for(wake.wait(), remaining)
                    except asyncio.TimeoutError:
                        pass
                    continue
            await self._let_arrivals_queue()
            pieces = self._take()
            if not pieces:
                continue
            if self.instances == 1:
                await self._run_pieces(pieces)
                continue
            task = asyncio.get_running_loop().create_task(self._run_pieces(pieces))
            self._running.add(task)
            task.add_done_callback(self._running.discard)
            if len(self._running) >= self.instances:  # every instance busy: wait for one
                await asyncio.wait(self._running, return_when=asyncio.FIRST_COMPLETED)

    async def _let_arrivals_queue(self) -> None:
        """Let handlers that are already runnable on the loop queue their rows before a batch starts.

        Under load the loop holds many RPCs whose bytes have arrived but whose handlers have not
        yet reached :meth:`submit`; yielding until the loop has nothing else ready (at most
        :data:`_MAX_YIELDS` times) lets them join this batch. This costs no time when the loop is
        idle, so a lone request still starts at once.
        """
        ready = getattr(asyncio.get_running_loop(), "_ready", None)  # CPython's run queue
        if ready is None:
            return
        for _ in range(_MAX_YIELDS):
            if not ready or len(self._queue) == 0 or self._pending_rows >= self.max_batch:
                return
            await asyncio.sleep(0)

    def _call(self, z: np.ndarray, labels: Optional[np.ndarray]) -> tuple[np.ndarray, float]:
        """The model call, run in the executor thread; returns the output and its duration (s)."""
        started = time.perf_counter()
        out = np.asarray(self._run(z, labels))
        if out.ndim < 1 or out.shape[0] != z.shape[0]:
            raise RuntimeError(f"model returned shape {list(out.shape)} for {z.shape[0]} inputs")
        return out, time.perf_counter() - started

    async def _compute(self, pieces: list[Piece]) -> tuple[np.ndarray, float]:
        if len(pieces) == 1:
            request, start, rows = pieces[0]
            z = request.z[start:start + rows]
            labels = None if request.labels is None else request.labels[start:start + rows]
        else:
            z = np.concatenate([r.z[s:s + n] for r, s, n in pieces])
            labels = None
            if pieces[0][0].labels is not None:
                labels = np.concatenate([r.labels[s:s + n] for r, s, n in pieces])
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._call, z, labels)

    async def _run_pieces(self, pieces: list[Piece]) -> None:
        """Run one model call over ``pieces`` and hand out the rows; isolate a failure."""
        try:
            out, elapsed = await self._compute(pieces)
        except Exception as exc:  # noqa: BLE001 - any model failure goes to the callers
            if len(pieces) == 1:
                request = pieces[0][0]
                logger.error("batcher model=%s: model call on %d rows failed: %r", self.name,
                             pieces[0][2], exc)
                self.stats.failed += 1
                self._fail(request, exc)
                return
            # One bad request must not fail the others: run each piece alone.
            self.stats.retries += 1
            logger.warning("batcher model=%s: batch of %d requests failed (%r); retrying each alone",
                           self.name, len(pieces), exc)
            for piece in pieces:
                if not piece[0].future.done():
                    await self._run_pieces([piece])
            return
        self._record(len(out), elapsed)
        offset = 0
        for request, start, rows in pieces:
            part = out[offset:offset + rows]
            offset += rows
            if request.future.done():
                continue  # cancelled while the model ran
            if rows == request.rows:
                request.filled = rows
                self.stats.requests += 1
                request.future.set_result(part)
                continue
            if request.out is None:
                request.out = np.empty((request.rows, *out.shape[1:]), dtype=out.dtype)
            request.out[start:start + rows] = part
            request.filled += rows
            if request.filled == request.rows:
                self.stats.requests += 1
                request.future.set_result(request.out)

    def _record(self, size: int, elapsed: float) -> None:
        stats = self.stats
        stats.batches += 1
        stats.images += size
        stats.compute_seconds += elapsed
        stats.batch_sizes.append(size)
        if self._metrics is not None:
            self._metrics.observe_batch(self.name, size, elapsed)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("batcher model=%s batch=%d compute_ms=%.2f", self.name, size, elapsed * 1000)
