"""Work nobody waits for: cancelled and expired requests, a worker that must not die, and a
queue bounded in seconds of measured work (stub forward, no model)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from bridge.model.batcher import Batcher
from bridge.model.errors import DeadlineExceeded, Overloaded


class GatedForward:
    """A forward that holds its first batch until released, and records every batch."""

    def __init__(self, seconds_per_token: float = 0.0) -> None:
        self.gate = threading.Event()
        self.started = threading.Event()
        self.batches: list[list[int]] = []
        self.seconds_per_token = seconds_per_token

    def __call__(self, batch: list[list[int]]) -> np.ndarray:
        self.batches.append([s[0] for s in batch])
        self.started.set()
        self.gate.wait(10)
        time.sleep(self.seconds_per_token * sum(map(len, batch)))
        return np.array([[s[0], len(s)] for s in batch], dtype=np.float32)


def test_a_cancelled_caller_neither_kills_the_worker_nor_gets_computed():
    forward = GatedForward()
    drops: list[tuple[str, int]] = []
    batcher = Batcher(forward, max_batch_tokens=4, packed=True)
    batcher.drop_observer = lambda why, n: drops.append((why, n))
    try:
        first = batcher.submit([[1, 1, 1, 1]])  # fills one batch; the worker holds it
        assert forward.started.wait(5)
        first.cancel()  # its caller gave up while the batch runs: delivery must not raise
        waiting = [batcher.submit([[10 + i, 0, 0, 0]]) for i in range(3)]
        for future in waiting[:2]:
            future.cancel()  # gave up while queued: never computed
        forward.gate.set()
        assert waiting[2].result(5)[0][0] == 12
        after = batcher.submit([[99]])
        assert after.result(5)[0][0] == 99, "the worker must still serve"
        assert batcher.alive
        computed = [first for batch in forward.batches for first in batch]
        assert 10 not in computed and 11 not in computed
        assert drops == [("cancelled", 1), ("cancelled", 1)]
        assert batcher.queued_tokens == 0
    finally:
        forward.gate.set()
        batcher.close()


def test_a_request_past_its_deadline_is_dropped_with_504():
    forward = GatedForward()
    batcher = Batcher(forward, max_batch_tokens=4, packed=True)
    try:
        batcher.submit([[1, 1, 1, 1]])
        assert forward.started.wait(5)
        late = batcher.submit([[7, 7]], deadline=time.monotonic() + 0.05)
        time.sleep(0.1)
        forward.gate.set()
        with pytest.raises(DeadlineExceeded) as err:
            late.result(5)
        assert err.value.status == 504
        assert 7 not in [first for batch in forward.batches for first in batch]
    finally:
        forward.gate.set()
        batcher.close()


def test_a_worker_survives_a_failure_outside_the_forward():
    forward = GatedForward()
    forward.gate.set()
    batcher = Batcher(forward, max_batch_tokens=8)
    broken = {"once": True}
    original = batcher._finish

    def flaky(started):
        if broken.pop("once", False):
            raise RuntimeError("delivery bug")
        return original(started)

    batcher._finish = flaky  # type: ignore[method-assign]
    try:
        with pytest.raises(RuntimeError, match="delivery bug"):
            batcher.submit([[1, 2]]).result(5)
        assert batcher.submit([[3, 4]]).result(5)[0][0] == 3
        assert batcher.alive
    finally:
        batcher.close()
    assert not batcher.alive  # closed: no longer serving


def test_the_default_queue_holds_seconds_of_measured_work():
    # 1 ms per 100 tokens: about 100,000 tokens/s on a full batch of 400 tokens.
    forward = GatedForward(seconds_per_token=1e-5)
    forward.gate.set()
    batcher = Batcher(forward, max_batch_tokens=400, packed=True, queue_seconds=0.5)
    try:
        batcher.submit([[1] * 100 for _ in range(4)]).result(5)
        rate = batcher.throughput
        assert 10_000 < rate <= 110_000
        assert batcher.max_queue_tokens == max(800, int(rate * 0.5))
        assert batcher.max_queue_tokens < 60_000  # not a fixed count of 262,144 tokens
        forward.gate.clear()
        batcher.submit([[2] * 400])  # held by the worker
        assert forward.started.wait(5)
        with pytest.raises(Overloaded) as err:
            for _ in range(10_000):
                batcher.submit([[3] * 400])
        assert err.value.retry_after >= 1
    finally:
        forward.gate.set()
        batcher.close()


def test_an_explicit_queue_limit_is_kept():
    batcher = Batcher(GatedForward(), max_batch_tokens=64, max_queue_tokens=1000)
    try:
        batcher.record_rate(1_000_000, 1.0)
        assert batcher.max_queue_tokens == 1000
    finally:
        batcher._forwards[0].gate.set()
        batcher.close()
