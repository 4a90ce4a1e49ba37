"""Unit tests of the batcher with a stub forward (no model)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from bridge.model.batcher import (
    Batcher,
    Overloaded,
    TooLarge,
    _Item,
    _Request,
    take_batch,
    take_packed,
)


def echo_forward(calls: list[list[int]] | None = None):
    """Each row is [first token, length]: lets a test see which row went where."""

    def forward(batch: list[list[int]]) -> np.ndarray:
        if calls is not None:
            calls.append([len(s) for s in batch])
        return np.array([[s[0], len(s)] for s in batch], dtype=np.float32)

    return forward


def pending(lengths, oldest: int = 0):
    """Items sorted by length; the one at index ``oldest`` (of ``lengths``) arrived first."""
    req = _Request(None, [None] * len(lengths), len(lengths))  # type: ignore[arg-type]
    made = [
        _Item(n, [0] * n, req, i, seq_no=0 if i == oldest else i + 1) for i, n in enumerate(lengths)
    ]
    return sorted(made, key=lambda it: it.length)


def test_batch_holds_the_oldest_and_fits_the_budget():
    lengths = [5, 100, 7, 90, 3, 60, 2, 95, 6]
    queue = pending(lengths, oldest=3)  # the 90-token sequence waited longest
    batch = take_batch(queue, max_batch_tokens=300)
    got = sorted(it.length for it in batch)
    assert 90 in got
    assert max(got) * len(got) <= 300
    assert got == [90, 95, 100], "neighbours in length, not short ones padded to 90"
    assert sorted(it.length for it in queue) == [2, 3, 5, 6, 7, 60]


def test_short_oldest_takes_short_neighbours():
    queue = pending([50, 4, 5, 6, 48, 3], oldest=1)
    batch = take_batch(queue, max_batch_tokens=24)
    assert sorted(it.length for it in batch) == [3, 4, 5, 6]


def test_oversized_sequence_gets_its_own_batch():
    queue = pending([500, 3], oldest=0)
    assert [it.length for it in take_batch(queue, max_batch_tokens=100)] == [500]
    assert [it.length for it in take_batch(queue, max_batch_tokens=100)] == [3]


def test_packed_batches_take_the_oldest_up_to_the_real_token_budget():
    req = _Request(None, [None] * 5, 5)  # type: ignore[arg-type]
    queue = [_Item(n, [0] * n, req, i, seq_no=i) for i, n in enumerate([100, 5, 90, 300, 2])]
    assert [it.length for it in take_packed(queue, max_batch_tokens=200)] == [100, 5, 90]
    assert [it.length for it in take_packed(queue, max_batch_tokens=200)] == [300]  # alone
    assert [it.length for it in take_packed(queue, max_batch_tokens=200)] == [2]


def test_packed_batcher_keeps_arrival_order_and_counts_real_tokens():
    calls: list[list[int]] = []
    seen: list[tuple[int, int, int]] = []
    gate = threading.Event()
    forward = echo_forward(calls)
    batcher = Batcher(
        lambda b: (gate.wait(5), forward(b))[1],
        max_batch_tokens=100,
        packed=True,
        observer=lambda items, padded, real, s: seen.append((items, padded, real)),
    )
    try:
        first = batcher.submit([[9]])
        time.sleep(0.05)
        out = batcher.submit([[i] * n for i, n in enumerate([60, 2, 30, 50])])
        gate.set()
        first.result(5)
        assert out.result(5)[:, 1].tolist() == [60, 2, 30, 50]
        assert calls == [[1], [60, 2, 30], [50]]
        assert seen[1] == (3, 92, 92)  # no padding counted
    finally:
        batcher.close()


def test_several_workers_share_a_short_queue():
    calls: list[list[int]] = []
    started: list[int] = []
    gate = threading.Event()
    lock = threading.Lock()

    def forward(batch):
        started.append(len(batch))
        gate.wait(5)
        with lock:
            calls.append([len(s) for s in batch])
        return echo_forward()(batch)

    batcher = Batcher([forward, forward], 1000, packed=True, min_share_tokens=200)
    try:
        time.sleep(0.05)
        out = batcher.submit([[i] * 100 for i in range(8)])  # 800 tokens, two idle workers
        time.sleep(0.1)
        assert started == [4, 2], "both workers busy at once, on a fair share each"
        gate.set()
        assert out.result(5).shape == (8, 2)
        # the first worker takes half (400), not all 800; the rest is shared down to 200
        assert sorted(map(sum, calls)) == [200, 200, 400]
    finally:
        batcher.close()


def test_results_come_back_in_caller_order():
    batcher = Batcher(echo_forward(), max_batch_tokens=64)
    try:
        seqs = [[i] * n for i, n in enumerate([9, 1, 30, 4, 17, 2])]
        out = batcher.submit(seqs).result(5)
        assert out[:, 0].tolist() == list(range(6))
        assert out[:, 1].tolist() == [9, 1, 30, 4, 17, 2]
    finally:
        batcher.close()


def test_requests_are_merged_into_batches():
    calls: list[list[int]] = []
    gate = threading.Event()
    forward = echo_forward(calls)

    def gated(batch):
        gate.wait(5)
        return forward(batch)

    batcher = Batcher(gated, max_batch_tokens=1000)
    try:
        first = batcher.submit([[1, 1]])
        time.sleep(0.05)  # the worker is now blocked on the first request
        later = [batcher.submit([[i] * 3]) for i in range(10)]
        gate.set()
        first.result(5)
        assert [f.result(5)[0, 0] for f in later] == list(range(10))
        assert len(calls) == 2 and calls[1] == [3] * 10
    finally:
        batcher.close()


def test_full_queue_refuses_at_once():
    gate = threading.Event()
    batcher = Batcher(lambda b: (gate.wait(5), echo_forward()(b))[1], 16, max_queue_tokens=20)
    try:
        batcher.submit([[1] * 10])
        time.sleep(0.05)
        batcher.submit([[1] * 10, [2] * 10])
        with pytest.raises(Overloaded) as err:
            batcher.submit([[3] * 5])
        assert err.value.retry_after >= 1
        with pytest.raises(TooLarge):
            batcher.submit([[1] * 21])
    finally:
        gate.set()
        batcher.close()


def test_a_queue_full_of_abandoned_work_takes_a_new_request():
    """Work nobody waits for any more does not count against the queue's bound: a full
    queue whose requests were cancelled takes a new one at once (not a 429 until the
    busy worker next cuts a batch)."""
    gate = threading.Event()
    batcher = Batcher(lambda b: (gate.wait(5), echo_forward()(b))[1], 16, max_queue_tokens=20)
    try:
        batcher.submit([[1] * 10])
        time.sleep(0.05)  # the worker holds this one (blocked in forward)
        left = batcher.submit([[2] * 10, [3] * 10])
        with pytest.raises(Overloaded):
            batcher.submit([[4] * 5])
        left.cancel()  # its client went away
        kept = batcher.submit([[5] * 5])
        gate.set()
        assert kept.result(5).tolist() == [[5, 5]]
    finally:
        gate.set()
        batcher.close()


def test_out_of_memory_splits_then_fails_only_the_culprit():
    def forward(batch):
        if any(len(s) > 50 for s in batch) or len(batch) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return echo_forward()(batch)

    batcher = Batcher(forward, max_batch_tokens=10_000)
    try:
        ok = batcher.submit([[i] * 5 for i in range(6)])
        huge = batcher.submit([[9] * 60])
        assert ok.result(5)[:, 0].tolist() == list(range(6))
        with pytest.raises(TooLarge, match="does not fit in device memory"):
            huge.result(5)
        assert batcher.submit([[4] * 3]).result(5)[0, 0] == 4  # still serving
    finally:
        batcher.close()


def test_model_failure_reaches_caller_and_worker_survives():
    def forward(batch):
        if batch[0][0] == 13:
            raise ValueError("boom")
        return echo_forward()(batch)

    batcher = Batcher(forward, max_batch_tokens=100)
    try:
        with pytest.raises(ValueError, match="boom"):
            batcher.submit([[13, 1]]).result(5)
        assert batcher.submit([[2]]).result(5)[0, 0] == 2
    finally:
        batcher.close()


def test_several_workers_share_one_queue():
    """One worker per GPU: both take batches from the one queue; answers stay exact."""
    used = [0, 0]

    def worker(i: int):
        echo = echo_forward()

        def forward(batch):
            time.sleep(0.01)
            used[i] += 1
            return echo(batch)

        return forward

    batcher = Batcher([worker(0), worker(1)], max_batch_tokens=16)
    try:
        assert batcher.workers == 2
        futures = [batcher.submit([[j + 1] * (j % 7 + 1)]) for j in range(60)]
        for j, future in enumerate(futures):
            assert future.result(10).tolist() == [[j + 1, j % 7 + 1]]
        assert used[0] > 0 and used[1] > 0
    finally:
        batcher.close()


def test_device_lists():
    from bridge.model.embedder import pick_devices

    assert pick_devices("cpu") == ["cpu"]
    assert pick_devices("cuda:0, cuda:1") == ["cuda:0", "cuda:1"]
    expected = torch.cuda.device_count() if torch.cuda.device_count() > 1 else 1
    assert len(pick_devices("cuda")) == expected


class Started:
    """A forward pass that is still running until ``done`` is set (a GPU's InFlight)."""

    def __init__(self, rows: np.ndarray, done: threading.Event, waited: list[str]) -> None:
        self.rows, self.done, self.waited = rows, done, waited

    def result(self) -> np.ndarray:
        self.waited.append(f"wait {int(self.rows[0][0])}")
        assert self.done.wait(5), "never finished"
        return self.rows


def test_the_next_batch_starts_before_the_running_one_is_waited_for():
    """With a forward that returns before its device is done, the worker cuts and starts
    the next batch first, then waits for and delivers the first; each caller gets its rows."""
    events: list[str] = []
    done, second_queued = threading.Event(), threading.Event()

    def launch(batch):
        events.append(f"start {batch[0][0]}")
        if batch[0][0] == 1:
            assert second_queued.wait(5)  # the second request is queued while this one runs
        return Started(echo_forward()(batch), done, events)

    batcher = Batcher(launch, max_batch_tokens=4, packed=True)
    try:
        a = batcher.submit([[1, 1, 1, 1]])
        deadline = time.monotonic() + 5
        while not events and time.monotonic() < deadline:
            time.sleep(0.005)
        b = batcher.submit([[2, 2, 2]])
        second_queued.set()
        while len(events) < 3 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert events == ["start 1", "start 2", "wait 1"]
        assert not a.done() and not b.done()  # both still "on the device"
        done.set()
        assert a.result(5).tolist() == [[1, 4]] and b.result(5).tolist() == [[2, 3]]
        assert events == ["start 1", "start 2", "wait 1", "wait 2"]
    finally:
        done.set()
        batcher.close()


def test_going_idle_calls_on_idle_without_holding_up_a_submit():
    """The idle hook (a CPU server trims its heap) runs outside the queue's lock: a request
    arriving meanwhile is queued at once and served after it."""
    in_hook, release = threading.Event(), threading.Event()

    def on_idle():
        in_hook.set()
        release.wait(5)

    batcher = Batcher(echo_forward(), max_batch_tokens=8, on_idle=on_idle)
    try:
        assert in_hook.wait(5)  # a new batcher has nothing to do: idle at once
        started = time.monotonic()
        future = batcher.submit([[5, 5]])
        assert time.monotonic() - started < 1.0
        release.set()
        assert future.result(5).tolist() == [[5, 2]]
    finally:
        release.set()
        batcher.close()


def test_an_idle_worker_takes_new_work_before_a_busy_one_queues_it_behind_its_own():
    """Two GPUs: while one has a batch in flight, a new request goes to the idle one
    (started at once), not behind the busy one's batch."""
    done = threading.Event()
    started_by: list[tuple[str, int]] = []

    def launcher(name: str):
        def launch(batch):
            started_by.append((name, batch[0][0]))
            return Started(echo_forward()(batch), done, [])

        return launch

    batcher = Batcher([launcher("a"), launcher("b")], max_batch_tokens=4, packed=True)
    try:
        first = batcher.submit([[1, 1, 1, 1]])
        deadline = time.monotonic() + 5
        while not started_by and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(0.05)  # the busy worker loops back to look for more work
        second = batcher.submit([[2, 2]])
        while len(started_by) < 2 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert len(started_by) == 2, started_by
        (busy, _), (other, _) = started_by
        assert busy != other, started_by
        done.set()
        assert first.result(5).tolist() == [[1, 4]] and second.result(5).tolist() == [[2, 2]]
    finally:
        done.set()
        batcher.close()


def test_vectors_a_forward_returned_are_delivered_before_the_next_batch_runs():
    """A forward that computes to the end (CPU) delivers each batch at once: a caller never
    waits for the batch after its own."""
    delivered = threading.Event()
    second_ran_first: list[bool] = []

    def forward(batch):
        if batch[0][0] == 2:
            second_ran_first.append(not delivered.is_set())
        return echo_forward()(batch)

    batcher = Batcher(forward, max_batch_tokens=4, packed=True)
    try:
        first = batcher.submit([[1, 1, 1, 1]])
        second = batcher.submit([[2, 2]])
        first.add_done_callback(lambda _f: delivered.set())
        assert second.result(5).tolist() == [[2, 2]] and first.result(5).tolist() == [[1, 4]]
        assert second_ran_first == [False]
    finally:
        batcher.close()
