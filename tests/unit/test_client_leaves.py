"""A request's work is cancelled when its client disconnects, and only then."""

from __future__ import annotations

import asyncio

import pytest

from bridge.server.lifecycle import ClientGone, unless_client_leaves


def channel(leaves_after: float | None):
    """An ASGI receive channel whose client disconnects after ``leaves_after`` seconds."""

    async def receive() -> dict:
        await asyncio.sleep(3600 if leaves_after is None else leaves_after)
        return {"type": "http.disconnect"}

    return receive


def test_work_of_a_client_that_stays_returns_its_result():
    async def main():
        result = await unless_client_leaves(channel(None), asyncio.sleep(0.01, result=7))
        assert result == 7
        await asyncio.sleep(0)
        assert len(asyncio.all_tasks()) == 1  # the watcher is gone too

    asyncio.run(main())


def test_work_of_a_client_that_leaves_is_cancelled_and_reported():
    cancelled = []

    async def work():
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    async def main():
        with pytest.raises(ClientGone):
            await unless_client_leaves(channel(0.01), work())
        assert cancelled == [True]
        assert asyncio.current_task().cancelling() == 0  # the caller can go on awaiting
        await asyncio.sleep(0.01)

    asyncio.run(main())


def test_a_cancelled_request_stays_cancelled():
    async def main():
        inner = asyncio.ensure_future(unless_client_leaves(channel(None), asyncio.sleep(3600)))
        await asyncio.sleep(0.01)
        inner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await inner

    asyncio.run(main())
