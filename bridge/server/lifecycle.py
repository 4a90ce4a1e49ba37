"""Graceful shutdown and abandoned requests.

On SIGTERM (or the first Ctrl-C) the server drains instead of stopping: ``/ready`` answers
503 at once so load balancers stop sending, new embedding requests get 503 with
``Retry-After``, requests in flight and the queue finish, then the process exits 0. The
drain is bounded by the grace period; a second signal stops at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import uvicorn

from bridge.model.errors import BridgeError, ShuttingDown

log = logging.getLogger(__name__)
T = TypeVar("T")


class ClientGone(BridgeError):
    """The client closed the connection before its answer was ready (nobody reads the
    answer; 499 is what the access log and metrics record)."""

    status = 499
    code = "client_gone"


class Lifecycle:
    """Whether the server drains, and how many embedding requests are in flight."""

    def __init__(self) -> None:
        self.draining = False
        self.in_flight = 0

    @contextmanager
    def request(self) -> Iterator[None]:
        """Count one embedding request; refused with 503 while draining."""
        if self.draining:
            raise ShuttingDown("the embedding service is shutting down; retry another replica")
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1


Receive = Callable[[], Awaitable[dict]]  # the ASGI receive channel of one request


async def unless_client_leaves(receive: Receive, work: Awaitable[T]) -> T:
    """Await ``work`` in this task; if the client disconnects first (``receive``, the
    request's ASGI channel, says so), cancel it (the batcher then drops its queued
    inputs) and raise ``ClientGone``. One watching task a request, nothing else."""
    task = asyncio.current_task()
    assert task is not None
    left = False

    async def watch() -> None:
        nonlocal left
        await _disconnected(receive)
        left = True
        task.cancel()

    watcher = asyncio.get_running_loop().create_task(watch())
    try:
        return await work
    except asyncio.CancelledError:
        if not left:
            raise
        task.uncancel()
        raise ClientGone("the client closed the connection") from None
    finally:
        watcher.cancel()


async def _disconnected(receive: Receive) -> None:
    """Returns when the client has gone (the body has been read already)."""
    while (await receive())["type"] != "http.disconnect":
        pass


class DrainingServer(uvicorn.Server):
    """uvicorn whose first exit signal drains (see the module docstring)."""

    def __init__(self, config: uvicorn.Config, lifecycle: Lifecycle, grace: float) -> None:
        super().__init__(config)
        self.lifecycle = lifecycle
        self.grace = grace
        self._drain_until = 0.0

    def handle_exit(self, sig: int, frame) -> None:  # noqa: ANN001 - signal handler
        if self.lifecycle.draining or self.grace <= 0:
            super().handle_exit(sig, frame)  # a second signal: stop now
            return
        self.lifecycle.draining = True
        self._drain_until = time.monotonic() + self.grace
        log.info("draining: /ready is 503, finishing in-flight work (up to %.0f s)", self.grace)

    async def on_tick(self, counter: int) -> bool:
        if self.lifecycle.draining and not self.should_exit:
            if self.lifecycle.in_flight == 0:
                log.info("drained: exiting")
                self.should_exit = True
            elif time.monotonic() > self._drain_until:
                log.warning(
                    "grace period over with %d requests in flight", self.lifecycle.in_flight
                )
                self.should_exit = True
        return await super().on_tick(counter)
