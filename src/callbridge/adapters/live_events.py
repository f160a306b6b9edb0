"""In-process fan-out of call status changes (the :class:`~callbridge.ports.EventBus`).

Each follower gets a bounded queue; a follower too slow to keep up loses the
oldest changes rather than slowing the publisher (the page re-reads the call's
status when it reconnects, so nothing is lost for good).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

_QUEUE_SIZE = 64


class MemoryEventBus:
    """Publish/subscribe by call id within one process."""

    def __init__(self) -> None:
        self._followers: dict[str, set[asyncio.Queue[Mapping[str, Any]]]] = defaultdict(set)

    async def publish(self, call_id: str, payload: Mapping[str, Any]) -> None:
        for queue in list(self._followers.get(call_id, ())):
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(payload)

    async def subscribe(self, call_id: str) -> Subscription:
        """Follow ``call_id`` from this moment on (the queue exists before this returns)."""
        queue: asyncio.Queue[Mapping[str, Any]] = asyncio.Queue(_QUEUE_SIZE)
        self._followers[call_id].add(queue)
        return Subscription(self, call_id, queue)

    def _unsubscribe(self, call_id: str, queue: asyncio.Queue[Mapping[str, Any]]) -> None:
        followers = self._followers.get(call_id)
        if followers is not None:
            followers.discard(queue)
            if not followers:
                del self._followers[call_id]

    @property
    def follower_count(self) -> int:
        """How many followers are attached (for metrics and tests)."""
        return sum(len(q) for q in self._followers.values())


class Subscription:
    """One follower's changes, in order; close it with :meth:`aclose`."""

    def __init__(
        self, bus: MemoryEventBus, call_id: str, queue: asyncio.Queue[Mapping[str, Any]]
    ) -> None:
        self._bus = bus
        self._call_id = call_id
        self._queue = queue

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Mapping[str, Any]:
        return await self._queue.get()

    async def aclose(self) -> None:
        """Stop following."""
        self._bus._unsubscribe(self._call_id, self._queue)
