"""Call me later: a hand-moved clock, the databases, and helpers to ask for a call later."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tests.store.conftest import database_url, postgres_url, store  # noqa: F401 - fixtures
from tests.support.app import Sandbox

#: Quick scheduler settings for tests: the background loop runs at start-up and then
#: rarely, so a test's own passes (at the instants it chooses) do the work.
SCHEDULE_ENV = {"CALLBRIDGE_SCHEDULE_POLL_SECONDS": "60"}

#: A Tuesday noon in Washington, DC (+1 202 numbers ring in America/New_York).
NOON_DC = datetime(2026, 12, 8, 17, 0, tzinfo=UTC)


class ManualClock:
    """A :class:`callbridge.ports.Clock` that moves only when the test says so."""

    def __init__(self, start: datetime = NOON_DC) -> None:
        self.at = start

    def now(self) -> datetime:
        return self.at

    def monotonic(self) -> float:
        return time.monotonic()

    def advance(self, delta: timedelta) -> datetime:
        """Move forward by ``delta``; return the new time."""
        self.at += delta
        return self.at


def iso(at: datetime) -> str:
    """An ISO 8601 time with an offset, as a page sends it."""
    return at.isoformat()


async def ask_later(sb: Sandbox, number: str, at: datetime | str, **fields: Any) -> httpx.Response:
    """POST /api/call/outbound with ``at``."""
    when = at if isinstance(at, str) else iso(at)
    return await sb.request_call(number, at=when, **fields)


async def calls_to(sb: Sandbox, e164: str) -> int:
    """How many calls the Twilio emulator was asked to place to ``e164``."""
    return sum(1 for call in sb.twilio.calls.values() if call.to == e164)
