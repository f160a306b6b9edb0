"""Following a call live stops cleanly when the follower goes away mid-call."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

from callbridge.services.live_feed import follow_with_turns


class _Silent:
    """A live subscription that never delivers (a call nobody speaks on)."""

    def __aiter__(self) -> _Silent:
        return self

    async def __anext__(self) -> Mapping[str, Any]:
        await asyncio.Event().wait()
        raise StopAsyncIteration

    async def aclose(self) -> None:
        return None


async def _statuses() -> AsyncIterator[dict[str, Any]]:
    yield {"status": "ringing"}
    await asyncio.Event().wait()  # no further change while the follower is cancelled
    yield {"status": "completed"}


async def _follow_and_close() -> AsyncIterator[dict[str, Any]]:
    """As OperatorLive.follow does: close the status stream as soon as following stops."""
    statuses = _statuses()
    try:
        async for item in follow_with_turns(statuses, _Silent()):
            yield item
    finally:
        await statuses.aclose()


async def test_a_cancelled_follower_closes_its_status_stream_cleanly() -> None:
    """A follower cancelled while waiting for both the next status and the next turn
    (the server shuts down, or the operator leaves) has finished both waits when it
    stops, so closing the status stream right after works: the follower ends cancelled,
    not with "aclose(): asynchronous generator is already running"."""
    first = asyncio.Event()

    async def follow() -> None:
        async for _item in _follow_and_close():
            first.set()

    follower = asyncio.create_task(follow())
    await asyncio.wait_for(first.wait(), 5)
    await asyncio.sleep(0.05)  # both waits are pending now
    follower.cancel()
    [outcome] = await asyncio.gather(follower, return_exceptions=True)
    assert isinstance(outcome, asyncio.CancelledError), repr(outcome)
