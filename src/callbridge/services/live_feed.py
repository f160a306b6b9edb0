"""The operator's live channels on the event bus: every call's changes, and a call's turns.

The visitor's page follows one call on the bus channel named by its id
(``GET /api/call/{call_id}/events``: statuses only, never words). The operator
follows two more channels, whose names are not call-id shaped, so the visitor's door
(which looks up only call-id shaped names, see :func:`~callbridge.domain.call.is_call_id`)
can never open them:

- :data:`CALLS_CHANNEL`: one small message per status change of any call, so the
  ``/admin`` list refreshes when something happens instead of polling;
- :func:`turns_channel`: what the agent says and what the callee said, as the bridge
  hears it, for ``callbridge call`` and the operator's live stream.

:class:`ListingBus` wraps the bus given to the services that publish status changes, so
each of them feeds :data:`CALLS_CHANNEL` without knowing it exists.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from typing import Any, Final

import structlog

from callbridge.domain.call import CallStatus
from callbridge.errors import StoreError
from callbridge.ports import CallStore, EventBus, EventSubscription
from callbridge.services.lifecycle import CallLifecycle
from callbridge.tasks import cancel_and_wait

_log = structlog.get_logger(__name__)

CALLS_CHANNEL: Final = "admin:calls"


def turns_channel(call_id: str) -> str:
    """The channel of a call's live transcript turns."""
    return "turns:" + call_id


class ListingBus:
    """An :class:`~callbridge.ports.EventBus` that also announces every change on
    :data:`CALLS_CHANNEL` (call id and status only)."""

    def __init__(self, bus: EventBus) -> None:
        self.inner = bus

    async def publish(self, call_id: str, payload: Mapping[str, Any]) -> None:
        """Tell the call's followers, then the operator's list."""
        await self.inner.publish(call_id, payload)
        await self.inner.publish(
            CALLS_CHANNEL, {"call_id": call_id, "status": payload.get("status")}
        )

    async def subscribe(self, call_id: str) -> EventSubscription:
        """Follow one channel (as the wrapped bus)."""
        return await self.inner.subscribe(call_id)


class TurnFeed:
    """Publishes a call's turns as they happen (the bridge stores them when the call ends)."""

    def __init__(self, bus: EventBus) -> None:
        self._bus = bus

    async def publish(self, call_id: str, role: str, text: str, at: datetime) -> None:
        """Send one turn to the call's turn followers; a failing bus is logged, never
        raised (the call goes on; the stored transcript is the record)."""
        if not text.strip():
            return
        payload = {"kind": "turn", "role": role, "text": text, "at": at.isoformat()}
        try:
            await self._bus.publish(turns_channel(call_id), payload)
        except StoreError as exc:
            _log.warning("turn_publish_failed", error=exc.message)


async def follow_with_turns(
    statuses: AsyncIterator[dict[str, Any]], turns: EventSubscription
) -> AsyncIterator[dict[str, Any]]:
    """Status changes (``kind: status``) and turns (``kind: turn``) as they come, ending
    after a terminal status. The caller closes ``turns``."""
    status_next: asyncio.Task[dict[str, Any]] | None = None
    turn_next: asyncio.Task[Mapping[str, Any]] | None = None
    try:
        while True:
            if status_next is None:
                status_next = asyncio.ensure_future(anext(statuses))
            if turn_next is None:
                turn_next = asyncio.ensure_future(anext(turns))
            done, _ = await asyncio.wait(
                {status_next, turn_next}, return_when=asyncio.FIRST_COMPLETED
            )
            if turn_next in done:
                yield dict(turn_next.result())
                turn_next = None
            if status_next in done:
                try:
                    change = status_next.result()
                except StopAsyncIteration:
                    return
                status_next = None
                yield {"kind": "status", **change}
                status = str(change.get("status"))
                if status in CallStatus._value2member_map_ and CallStatus(status).is_terminal:
                    return
    finally:
        # Wait for the cancelled steps to unwind: the caller closes ``statuses`` and
        # ``turns`` next, and closing a generator whose step is still running raises.
        for task in (status_next, turn_next):
            await cancel_and_wait(task)


class OperatorLive:
    """One call followed by the operator: the statuses it went through (replayed from its
    timeline, so a follower that connects late still sees ``initiated``), each change
    from then on, and its turns as they are spoken, until it ends.

    Args:
        lifecycle: follows the call's statuses (the visitor's stream, without words).
        store: reads the timeline.
        bus: the raw bus, where :class:`TurnFeed` publishes.
    """

    def __init__(self, *, lifecycle: CallLifecycle, store: CallStore, bus: EventBus) -> None:
        self._lifecycle = lifecycle
        self._store = store
        self._bus = bus

    async def follow(self, call_id: str) -> AsyncIterator[dict[str, Any]]:
        """``{"kind": "status", ...}`` and ``{"kind": "turn", ...}`` items, in order.

        Raises:
            NotFound: no such call.
        """
        turns = await self._bus.subscribe(turns_channel(call_id))
        statuses = self._lifecycle.follow(call_id)
        try:
            first = await anext(statuses)
            now = CallStatus(str(first["status"]))
            seen = -1
            for event in await self._store.events(call_id):
                if event.status not in CallStatus._value2member_map_:
                    continue
                passed = CallStatus(event.status)
                if seen < passed.rank < now.rank:
                    seen = passed.rank
                    yield {
                        "kind": "status",
                        "call_id": call_id,
                        "status": passed.value,
                        "at": event.at.isoformat(),
                        "duration": None,
                    }
            yield {"kind": "status", **first}
            if now.is_terminal:
                return
            async for item in follow_with_turns(statuses, turns):
                yield item
        finally:
            await turns.aclose()
            close = getattr(statuses, "aclose", None)  # an async generator's
            if close is not None:
                await close()
