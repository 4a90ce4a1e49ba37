"""The dynamic batcher: merges many callers' sequences into token-budget batches.

Callers (any thread or event loop) ``submit`` already-tokenized sequences and get a
future; one worker thread per model replica drives it. For a padded model, waiting
sequences are kept sorted by length and each batch is cut around the oldest one from its
neighbours in length, within a padded-token budget (``max_batch_tokens``); for a packed
(padding-free) model, padding costs nothing and batches are the oldest sequences up to
the budget in real tokens. Each caller gets its rows back in its own order. The queue is
bounded in tokens: a submit that does not fit is refused at once with ``Overloaded``,
never left hanging. By default the bound is ``queue_seconds`` of work at the measured
throughput, so a 429 means a real backlog, and its Retry-After comes from the same rate.

A forward may return before its device is done (``Pending``): the worker then cuts and
starts the next batch before it waits, so the GPU never idles while the host packs a
batch and hands results out.

Work nobody waits for is not computed: a request whose future was cancelled (its caller
went away) or whose deadline passed is dropped when the next batch is cut. A worker
survives any failure of a batch (the callers get the error) and ``alive`` tells whether
every worker thread still runs.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from typing import Protocol, TypeVar

import numpy as np
import torch

from bridge.model.errors import DeadlineExceeded, Overloaded, ShuttingDown, TooLarge

log = logging.getLogger(__name__)
T = TypeVar("T")


class Pending(Protocol):
    """A forward pass still running on its device; ``result`` waits for its vectors."""

    def result(self) -> np.ndarray: ...


# A forward pass: its vectors, or (a GPU's large batch) a Pending it started.
ForwardFn = Callable[[list[list[int]]], np.ndarray | Pending]
BatchObserver = Callable[[int, int, int, float], None]  # items, padded, real tokens, seconds
DropObserver = Callable[[str, int], None]  # reason ("cancelled" or "deadline"), inputs

# Until a full batch has been timed, the queue holds this (the measured rate then rules).
UNMEASURED_QUEUE_TOKENS = 262144


@dataclass
class _Request:
    future: Future
    rows: list[np.ndarray | None]
    remaining: int
    failed: bool = False
    deadline: float | None = None  # time.monotonic() after which nobody waits for it

    @property
    def abandoned(self) -> str | None:
        """Why nobody waits for this request any more (None: somebody does)."""
        if self.future.cancelled():
            return "cancelled"
        if self.deadline is not None and time.monotonic() > self.deadline:
            return "deadline"
        return None


@dataclass
class _Item:
    length: int
    seq: list[int]
    request: _Request
    index: int
    seq_no: int = 0


@dataclass
class _Started:
    """A batch whose forward pass has been started."""

    items: list[_Item]
    out: np.ndarray | Pending
    forward: ForwardFn
    began: float  # when its device could start on it (after the batch before it)


def padded_tokens(lengths: list[int]) -> int:
    return max(lengths) * len(lengths) if lengths else 0


def take_packed(pending: list[_Item], max_batch_tokens: int) -> list[_Item]:
    """Remove and return the oldest sequences of ``pending`` (kept in arrival order) whose
    tokens fit the budget; a single longer sequence forms a batch of its own."""
    total, end = pending[0].length, 1
    while end < len(pending) and total + pending[end].length <= max_batch_tokens:
        total += pending[end].length
        end += 1
    batch = pending[:end]
    del pending[:end]
    return batch


def take_batch(pending: list[_Item], max_batch_tokens: int) -> list[_Item]:
    """Remove and return one batch from ``pending`` (kept sorted by length).

    The batch holds the oldest waiting sequence, so nothing starves, and grows around it
    with the neighbours that waste the least padding while the padded size fits the
    budget. A single sequence longer than the budget forms a batch of its own.
    """
    k = min(range(len(pending)), key=lambda i: pending[i].seq_no)
    lo = hi = k
    while True:
        width = pending[hi].length
        count = hi - lo + 1
        grow_down = lo > 0 and (count + 1) * width <= max_batch_tokens
        up_width = pending[hi + 1].length if hi + 1 < len(pending) else None
        grow_up = up_width is not None and (count + 1) * up_width <= max_batch_tokens
        if grow_down and grow_up:
            waste_down = width - pending[lo - 1].length
            waste_up = (up_width - width) * count  # type: ignore[operator]
            grow_up = waste_up < waste_down
            grow_down = not grow_up
        if grow_down:
            lo -= 1
        elif grow_up:
            hi += 1
        else:
            break
    batch = pending[lo : hi + 1]
    del pending[lo : hi + 1]
    return batch


class Batcher:
    """Owns one worker thread per ``forward`` (one per GPU); thread-safe ``submit``.

    The workers share the pending list: whichever is free cuts the next batch, so several
    GPUs serve one queue (data parallel). ``packed``: the forward does not pad (budget in
    real tokens, oldest first)."""

    def __init__(
        self,
        forward: ForwardFn | Sequence[ForwardFn],
        max_batch_tokens: int = 16384,
        max_queue_tokens: int | None = None,
        observer: BatchObserver | None = None,
        on_idle: Callable[[], None] | None = None,
        packed: bool = False,
        min_share_tokens: int = 4096,
        queue_seconds: float = 30.0,
    ) -> None:
        self.packed = packed
        self.min_share_tokens = min_share_tokens
        self._forwards = [forward] if callable(forward) else list(forward)
        if not self._forwards:
            raise ValueError("at least one forward function is needed")
        self._on_idle = on_idle
        self.max_batch_tokens = max_batch_tokens
        self.fixed_queue_tokens = max_queue_tokens  # None: queue_seconds of measured work
        self.queue_seconds = queue_seconds
        self.observer = observer
        self.drop_observer: DropObserver | None = None
        self._earliest_deadline = float("inf")  # of anything pending: when to look again
        self._cancel_seen = False  # a caller went away: look for its items at the next cut
        self._pending: list[_Item] = []  # sorted by length, or in arrival order if packed
        self._queued_tokens = 0
        self._seq_no = 0
        self._cond = threading.Condition()
        self._stopping = False
        self._tokens_per_second = 0.0
        self._busy = 0
        self._threads = [
            threading.Thread(target=self._run, args=(i,), name=f"bridge-batcher-{i}", daemon=True)
            for i in range(len(self._forwards))
        ]
        for thread in self._threads:
            thread.start()

    @property
    def workers(self) -> int:
        return len(self._forwards)

    @property
    def queued_items(self) -> int:
        return len(self._pending)

    @property
    def queued_tokens(self) -> int:
        return self._queued_tokens

    @property
    def alive(self) -> bool:
        """Every worker thread runs (False: the service cannot serve; restart it)."""
        return all(t.is_alive() for t in self._threads) and not self._stopping

    @property
    def throughput(self) -> float:
        """Measured tokens per second of all workers (0 until a full batch was timed)."""
        return self._tokens_per_second * len(self._forwards)

    @property
    def max_queue_tokens(self) -> int:
        """Tokens allowed to wait: the explicit limit, else ``queue_seconds`` of work at the
        measured throughput (never below two full batches)."""
        if self.fixed_queue_tokens:
            return self.fixed_queue_tokens
        if not self._tokens_per_second:
            return max(16 * self.max_batch_tokens, UNMEASURED_QUEUE_TOKENS)
        return max(2 * self.max_batch_tokens, int(self.throughput * self.queue_seconds))

    def record_rate(self, tokens: int, seconds: float) -> None:
        """Count a timed full batch (the start-up calibration, or a served one)."""
        if seconds <= 0:
            return
        rate = tokens / seconds
        previous = self._tokens_per_second
        self._tokens_per_second = rate if not previous else 0.8 * previous + 0.2 * rate

    def submit(self, seqs: list[list[int]], deadline: float | None = None) -> Future:
        """Queue the sequences of one request; the future yields an (n, native_dim) array.

        Cancel the future when nobody waits any more; ``deadline`` (``time.monotonic()``)
        drops the request if no batch took it by then (``DeadlineExceeded``)."""
        future: Future = Future()
        if not seqs:
            future.set_result(np.zeros((0, 0), dtype=np.float32))
            return future
        tokens = sum(len(s) for s in seqs)
        if tokens > self.max_queue_tokens:
            raise TooLarge(
                f"request has {tokens} tokens, more than the queue holds "
                f"({self.max_queue_tokens}); split it into smaller requests"
            )
        request = _Request(future, [None] * len(seqs), len(seqs), deadline=deadline)
        future.add_done_callback(self._on_done)
        with self._cond:
            if self._stopping:
                raise ShuttingDown("the embedding service is shutting down")
            if self._queued_tokens + tokens > self.max_queue_tokens:
                self._drop_abandoned()  # work nobody waits for does not hold the queue
            if self._queued_tokens + tokens > self.max_queue_tokens:
                raise Overloaded(
                    f"the queue is full ({self._queued_tokens} tokens waiting)",
                    retry_after=self._retry_after(),
                )
            for i, seq in enumerate(seqs):
                item = _Item(len(seq), seq, request, i, self._seq_no)
                self._seq_no += 1
                if self.packed:
                    self._pending.append(item)
                else:
                    bisect.insort(self._pending, item, key=lambda it: it.length)
            self._queued_tokens += tokens
            if deadline is not None:
                self._earliest_deadline = min(self._earliest_deadline, deadline)
            self._cond.notify()
        return future

    def _on_done(self, future: Future) -> None:
        if future.cancelled():
            self._cancel_seen = True  # read (and reset) under the lock by the next cut

    def _drop_abandoned(self) -> None:
        """Remove the pending items nobody waits for (called with the lock held)."""
        now = time.monotonic()
        if not self._cancel_seen and now <= self._earliest_deadline:
            return
        self._cancel_seen = False
        keep: list[_Item] = []
        dropped: dict[int, tuple[_Request, str]] = {}  # by id(): requests are unhashable
        earliest = float("inf")
        for item in self._pending:
            why = item.request.abandoned
            if why is None:
                keep.append(item)
                if item.request.deadline is not None:
                    earliest = min(earliest, item.request.deadline)
            else:
                dropped[id(item.request)] = (item.request, why)
                self._queued_tokens -= item.length
        self._pending = keep
        self._earliest_deadline = earliest
        for request, why in dropped.values():
            if why == "deadline":
                self._fail(request, DeadlineExceeded("the request's deadline passed in the queue"))
            if self.drop_observer:
                self.drop_observer(why, len(request.rows))

    def _budget(self) -> int:
        """The token budget of the next batch. With several workers, a queue shorter than a
        full batch each is shared out (down to ``min_share_tokens``), so that no GPU idles
        while another works through the last of it."""
        budget = self.max_batch_tokens
        workers = len(self._forwards)
        if workers > 1:
            share = -(-self._queued_tokens // workers)
            budget = min(budget, max(share, self.min_share_tokens))
        return budget

    def _retry_after(self) -> float:
        """Seconds until the backlog is worked off at the measured rate."""
        rate = self.throughput or 1000.0 * len(self._forwards)
        return max(1.0, round(self._queued_tokens / rate, 1))

    def close(self, timeout: float = 10.0) -> None:
        """Stop taking work, finish what is queued, and join the worker."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout)

    def _next_batch(self, wait: bool = True) -> list[_Item] | None:
        """The next batch to run; None when stopping with nothing left. ``wait=False``
        (this worker still has a batch in flight): an empty list when nothing is queued."""
        if wait:
            with self._cond:
                self._busy -= 1
                idle = not self._pending and not self._busy
            if idle and self._on_idle is not None:
                self._on_idle()  # outside the lock: a submit meanwhile need not wait for it
        with self._cond:
            if not wait and self._busy < len(self._forwards):
                return []  # another worker is idle: the queued work is its to start now
            while True:
                self._drop_abandoned()
                if self._pending or self._stopping or not wait:
                    break
                timeout = self._earliest_deadline - time.monotonic()
                self._cond.wait(None if timeout == float("inf") else max(timeout, 0.001))
            if not self._pending:
                return None if wait else []
            take = take_packed if self.packed else take_batch
            batch = take(self._pending, self._budget())
            self._queued_tokens -= sum(it.length for it in batch)
            if wait:
                self._busy += 1
            if self._pending:  # one submit wakes one worker: pass the rest on to another
                self._cond.notify()
            return batch

    def _run(self, worker: int) -> None:
        """Cut a batch and start it; while it runs on its device, cut and start the next
        one, then deliver the first (one batch in flight at most beside the one being
        started). A forward that returned its vectors is delivered at once."""
        with self._cond:
            self._busy += 1
        forward = self._forwards[worker]
        in_flight: _Started | None = None
        while True:
            batch = self._next_batch(wait=in_flight is None)
            if batch is None:
                return
            started = (
                self._guarded(batch, lambda b=batch: self._start(b, forward)) if batch else None
            )
            if in_flight is not None:
                self._guarded(in_flight.items, lambda s=in_flight: self._finish(s))
                if started is not None:
                    started.began = max(started.began, time.perf_counter())
            if started is not None and isinstance(started.out, np.ndarray):
                self._guarded(started.items, lambda s=started: self._finish(s))  # done: now
                started = None
            in_flight = started

    def _guarded(self, batch: list[_Item], step: Callable[[], T]) -> T | None:
        """Run one step of a batch; an error outside the forward pass goes to its
        callers, and the worker goes on."""
        try:
            return step()
        except BaseException as exc:  # noqa: BLE001 - the worker must outlive any batch
            log.exception("batch failed outside the forward pass; its callers get the error")
            for it in batch:
                self._fail(it.request, exc)
            return None

    def _run_batch(self, batch: list[_Item], forward: ForwardFn) -> None:
        """Run one batch to the end (start, wait, deliver)."""
        started = self._start(batch, forward)
        if started is not None:
            self._finish(started)

    def _start(self, batch: list[_Item], forward: ForwardFn) -> _Started | None:
        live = [it for it in batch if not it.request.failed and not it.request.future.done()]
        if not live:
            return None
        began = time.perf_counter()
        try:
            out = forward([it.seq for it in live])
        except torch.OutOfMemoryError:
            self._after_oom(live, forward)
            return None
        except Exception as exc:  # a model failure must reach the callers, not kill the thread
            log.exception("forward pass failed")
            for it in live:
                self._fail(it.request, exc)
            return None
        return _Started(live, out, forward, began)

    def _finish(self, started: _Started) -> None:
        live = started.items
        try:
            rows = started.out if isinstance(started.out, np.ndarray) else started.out.result()
        except torch.OutOfMemoryError:
            self._after_oom(live, started.forward)
            return
        except Exception as exc:
            log.exception("forward pass failed")
            for it in live:
                self._fail(it.request, exc)
            return
        seconds = time.perf_counter() - started.began
        real = sum(it.length for it in live)
        if real >= self.max_batch_tokens // 2:  # small batches understate the throughput
            self.record_rate(real, seconds)
        if self.observer:
            padded = real if self.packed else padded_tokens([it.length for it in live])
            self.observer(len(live), padded, real, seconds)
        for it, row in zip(live, rows, strict=True):
            self._deliver(it, row)

    def _after_oom(self, batch: list[_Item], forward: ForwardFn) -> None:
        """Out of device memory: split the batch; a single sequence that still fails is refused."""
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if len(batch) == 1:
            self._fail(
                batch[0].request,
                TooLarge(
                    f"an input of {batch[0].length} tokens does not fit in device memory; "
                    "lower --max-input-tokens or send shorter texts"
                ),
            )
            return
        log.warning("out of device memory on a batch of %d; splitting", len(batch))
        half = len(batch) // 2
        self._run_batch(batch[:half], forward)
        self._run_batch(batch[half:], forward)

    @staticmethod
    def _deliver(item: _Item, row: np.ndarray) -> None:
        request = item.request
        if request.failed:
            return
        request.rows[item.index] = row
        request.remaining -= 1
        if request.remaining == 0:
            # the caller may have cancelled meanwhile: then nobody wants the rows
            with contextlib.suppress(InvalidStateError):
                request.future.set_result(np.stack(request.rows))  # type: ignore[arg-type]

    @staticmethod
    def _fail(request: _Request, exc: BaseException) -> None:
        if not request.failed:
            request.failed = True
            with contextlib.suppress(InvalidStateError):  # cancelled by its caller meanwhile
                request.future.set_exception(exc)
