"""The dynamic batcher on its own: a fake model call, an injectable clock, no sleeps.

The fake model is a real thread-safe callable that records every batch it is given and can be
held (a ``threading.Event``) to make requests pile up while it "computes", exactly as they do
while a real model runs.
"""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from ganport.errors import ResourceExhaustedError
from ganport.runtime.server.batcher import DynamicBatcher, RequestDroppedError
from ganport.runtime.server.metrics import Metrics


class FakeModel:
    """``run(z, labels)``: image = z[:, :1] + label, shape [N, 1, 1, 1]; fails on label 13."""

    def __init__(self):
        self.batches: list[list[float]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def __call__(self, z, labels):
        self.entered.set()
        self.gate.wait(10)
        rows = z[:, 0] if labels is None else z[:, 0] + labels
        self.batches.append(rows.tolist())
        if labels is not None and (labels == 13).any():
            raise RuntimeError("label 13 breaks the model")
        return rows.reshape(-1, 1, 1, 1).astype(np.float32)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def z_of(*values: float) -> np.ndarray:
    return np.asarray(values, np.float32).reshape(-1, 1)


async def until(predicate, what: str) -> None:
    """Yield to the loop (and the model thread) until ``predicate()``; no fixed sleeps."""
    for _ in range(100000):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"timed out waiting for {what}")


async def hold(model: FakeModel, batcher: DynamicBatcher, first: asyncio.Future) -> None:
    """Wait until the model is busy with ``first``'s batch (held at its gate)."""
    await until(model.entered.is_set, "the model call to start")


def run(coro):
    return asyncio.run(coro)


def test_lone_request_runs_at_once_and_rows_come_back_in_order():
    async def main():
        model = FakeModel()
        b = DynamicBatcher(model, "m", max_batch=8)
        out = await b.submit(z_of(1, 2, 3))
        assert out.reshape(-1).tolist() == [1, 2, 3]
        assert model.batches == [[1, 2, 3]]
        await b.close()
    run(main())


def test_requests_queued_while_the_model_runs_form_the_next_batch():
    async def main():
        model = FakeModel()
        metrics = Metrics()
        b = DynamicBatcher(model, "m", max_batch=8, metrics=metrics)
        model.gate.clear()
        first = b.submit(z_of(0))
        await hold(model, b, first)
        rest = [b.submit(z_of(10 * i + 1, 10 * i + 2)) for i in range(1, 4)]
        model.gate.set()
        outs = await asyncio.gather(first, *rest)
        assert model.batches == [[0], [11, 12, 21, 22, 31, 32]]
        assert [o.reshape(-1).tolist() for o in outs] == [[0], [11, 12], [21, 22], [31, 32]]
        assert b.stats.batches == 2 and b.stats.images == 7
        assert metrics.model_stats("m")["max_batch"] == 6
        await b.close()
    run(main())


def test_big_requests_are_split_and_reassembled_in_order():
    async def main():
        model = FakeModel()
        b = DynamicBatcher(model, "m", max_batch=4)
        model.gate.clear()
        first = b.submit(z_of(*range(10)))
        second = b.submit(z_of(100, 101, 102))
        await hold(model, b, first)
        model.gate.set()
        a, c = await asyncio.gather(first, second)
        assert a.reshape(-1).tolist() == list(range(10))
        assert c.reshape(-1).tolist() == [100, 101, 102]
        assert [len(batch) for batch in model.batches] == [4, 4, 4, 1]
        assert model.batches[2] == [8, 9, 100, 101]
        await b.close()
    run(main())


def test_full_queue_is_refused_at_once():
    async def main():
        model = FakeModel()
        b = DynamicBatcher(model, "m", max_batch=1, max_queue=2)
        model.gate.clear()
        first = b.submit(z_of(1))
        await hold(model, b, first)  # first left the queue: two more fit
        queued = [b.submit(z_of(2)), b.submit(z_of(3))]
        with pytest.raises(ResourceExhaustedError, match="queue of model 'm' is full"):
            b.submit(z_of(4))
        model.gate.set()
        await asyncio.gather(first, *queued)
        await b.close()
    run(main())


def test_expired_and_cancelled_requests_never_reach_the_model():
    async def main():
        model = FakeModel()
        clock = Clock()
        metrics = Metrics()
        b = DynamicBatcher(model, "m", max_batch=8, clock=clock, metrics=metrics)
        model.gate.clear()
        first = b.submit(z_of(1))
        await hold(model, b, first)
        expiring = b.submit(z_of(2), timeout=0.5)
        cancelled = b.submit(z_of(3))
        kept = b.submit(z_of(4), timeout=5.0)
        cancelled.cancel()
        clock.now += 1.0  # past the first deadline, not the second
        model.gate.set()
        await first
        with pytest.raises(RequestDroppedError) as info:
            await expiring
        assert info.value.reason == "deadline"
        assert (await kept).reshape(-1).tolist() == [4]
        assert model.batches == [[1], [4]]
        assert b.stats.dropped == 2
        assert metrics.model_stats("m")["dropped"] == 2
        await b.close()
    run(main())


def test_one_failing_request_fails_alone():
    async def main():
        model = FakeModel()
        b = DynamicBatcher(model, "m", max_batch=8)
        model.gate.clear()
        first = b.submit(z_of(0), np.array([0]))
        await hold(model, b, first)
        good = [b.submit(z_of(i), np.array([1])) for i in range(3)]
        bad = b.submit(z_of(5), np.array([13]))
        more = b.submit(z_of(7, 8), np.array([2, 2]))
        model.gate.set()
        results = await asyncio.gather(first, *good, bad, more, return_exceptions=True)
        assert isinstance(results[4], RuntimeError)
        assert [r.reshape(-1).tolist() for r in results[1:4]] == [[1], [2], [3]]
        assert results[5].reshape(-1).tolist() == [9, 10]
        assert b.stats.retries == 1 and b.stats.failed == 1
        await b.close()
    run(main())


def test_max_delay_waits_for_company_only_when_asked():
    async def main():
        model = FakeModel()
        clock = Clock()
        b = DynamicBatcher(model, "m", max_batch=3, max_delay_ms=10_000, clock=clock)
        first = b.submit(z_of(1))
        for _ in range(50):
            await asyncio.sleep(0)
        assert model.batches == [], "a batch started before the delay or a full batch"
        second = b.submit(z_of(2))
        third = b.submit(z_of(3))  # the batch is full: it starts without waiting out the delay
        await asyncio.gather(first, second, third)
        assert model.batches == [[1, 2, 3]]
        await b.close()
    run(main())


def test_close_drains_or_drops():
    async def main():
        model = FakeModel()
        b = DynamicBatcher(model, "m", max_batch=1)
        model.gate.clear()
        first = b.submit(z_of(1))
        await hold(model, b, first)
        second = b.submit(z_of(2))
        closing = asyncio.ensure_future(b.close(drain=True))
        await asyncio.sleep(0)  # let close() begin
        with pytest.raises(RequestDroppedError):
            b.submit(z_of(3))
        model.gate.set()
        await closing
        assert (await second).reshape(-1).tolist() == [2]

        model2 = FakeModel()
        b2 = DynamicBatcher(model2, "m2", max_batch=1)
        model2.gate.clear()
        first2 = b2.submit(z_of(1))
        await until(model2.entered.is_set, "the model call to start")
        dropped = b2.submit(z_of(2))
        closing = asyncio.ensure_future(b2.close(drain=False))
        model2.gate.set()
        await closing
        await first2
        with pytest.raises(RequestDroppedError) as info:
            await dropped
        assert info.value.reason == "shutdown"
    run(main())


class ConcurrencyProbe(FakeModel):
    """A FakeModel that also records the most calls it ever had running at once."""

    def __init__(self):
        super().__init__()
        self._lock = threading.Lock()
        self.running = 0
        self.most = 0

    def __call__(self, z, labels):
        with self._lock:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            return super().__call__(z, labels)
        finally:
            with self._lock:
                self.running -= 1


@pytest.mark.parametrize("instances", [1, 2, 3])
def test_instances_bound_the_model_calls_running_at_once(instances):
    """With N instances, N batches run at once (never more); every caller still gets its own
    rows, a request split across concurrent batches comes back in order, and close drains them."""
    async def main():
        model = ConcurrencyProbe()
        b = DynamicBatcher(model, "m", max_batch=2, instances=instances)
        model.gate.clear()
        singles = [b.submit(z_of(float(i))) for i in range(4)]
        split = b.submit(z_of(10, 11, 12, 13, 14))  # three batches of at most 2 rows
        await until(lambda: model.running == instances, f"{instances} model calls to run")
        for _ in range(200):  # give a wrongly eager batcher every chance to start another call
            await asyncio.sleep(0)
        assert model.running == instances
        closing = asyncio.ensure_future(b.close(drain=True))
        model.gate.set()
        await closing
        assert [f.result().reshape(-1).tolist() for f in singles] == [[0], [1], [2], [3]]
        assert split.result().reshape(-1).tolist() == [10, 11, 12, 13, 14]
        assert model.most == instances
    run(main())


@pytest.mark.parametrize("instances, rows, sizes", [
    (1, 64, [64]),          # one instance takes it all
    (2, 64, [32, 32]),      # two idle instances split a lone big request evenly
    (3, 7, [2, 2, 3]),      # 7 rows on 3 idle instances: 3, then 2 and 2
    (2, 1, [1]),            # a lone one-row request is never split
])
def test_idle_instances_share_what_is_queued(instances, rows, sizes):
    """With several instances idle, a queued request is split among them (one call each, all
    running at once) instead of one instance computing it alone; the caller gets its rows in order."""
    async def main():
        model = ConcurrencyProbe()
        b = DynamicBatcher(model, "m", max_batch=64, instances=instances)
        model.gate.clear()
        values = [float(i) for i in range(rows)]
        future = b.submit(z_of(*values))
        await until(lambda: model.running == len(sizes), f"{len(sizes)} model calls to run")
        model.gate.set()
        out = await future
        assert out.reshape(-1).tolist() == values
        assert sorted(len(batch) for batch in model.batches) == sorted(sizes)
        assert model.most == len(sizes)
        await b.close()
    run(main())


def test_instances_must_be_positive():
    with pytest.raises(ValueError):
        DynamicBatcher(FakeModel(), "m", instances=0)
