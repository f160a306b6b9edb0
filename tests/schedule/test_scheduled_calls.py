"""Call me later: a call asked for later is placed at its time, once, or told why not.

Every test runs the real app (uvicorn on loopback, the Twilio emulator, SQLite or
PostgreSQL); the app's clock is a hand-moved one, so "two hours later" is one line.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta

from callbridge.domain.call import CallStatus
from tests.integration.helpers import wait_for_status
from tests.schedule.conftest import (
    NOON_DC,
    SCHEDULE_ENV,
    ManualClock,
    ask_later,
    calls_to,
)
from tests.support.app import Sandbox, running_sandbox

VISITOR = "+12025550143"
PLACED = {"queued", "initiated", "ringing", "in-progress", "completed"}


async def test_a_call_asked_for_later_is_placed_at_its_time(database_url: str) -> None:
    """202 scheduled with the time; nothing is dialled before it; at the time it is placed."""
    clock = ManualClock()
    async with running_sandbox(SCHEDULE_ENV, database_url=database_url, clock=clock) as sb:
        at = NOON_DC + timedelta(hours=2)
        response = await ask_later(sb, VISITOR, at, name="Ada")
        assert response.status_code == 202, response.text
        body = response.json()
        assert body["success"] is True
        assert body["status"] == "scheduled"
        assert body["scheduled_for"] == "2026-12-08T19:00:00Z"
        assert body["cancel_token"]
        call_id = body["call_id"]
        view = (await sb.http.get(f"/api/call/{call_id}")).json()
        assert view["status"] == "scheduled"
        assert view["scheduled_for"] == "2026-12-08T19:00:00Z"

        scheduler = sb.container.jobs.scheduler
        early = await scheduler.run_due(clock.advance(timedelta(minutes=119)))
        assert early.placed == 0
        assert await calls_to(sb, "+12025550143") == 0

        due = await scheduler.run_due(clock.advance(timedelta(minutes=1)))
        assert due.placed == 1
        call = await wait_for_status(sb, call_id, PLACED)
        assert call.call_sid is not None
        assert await calls_to(sb, "+12025550143") == 1
        again = await scheduler.run_due(clock.advance(timedelta(seconds=30)))
        assert again.placed == 0
        assert await calls_to(sb, "+12025550143") == 1


async def test_two_schedulers_on_one_database_place_a_due_call_once(database_url: str) -> None:
    """Two processes' passes at the same instant: the due call is claimed and dialled once."""
    clock = ManualClock()
    async with (
        running_sandbox(SCHEDULE_ENV, database_url=database_url, clock=clock) as one,
        running_sandbox(SCHEDULE_ENV, database_url=database_url, clock=clock) as two,
    ):
        ids = []
        for n in range(2):  # two numbers, one call each, due at the same minute
            number = f"+1202555014{n + 5}"
            response = await ask_later(one, number, NOON_DC + timedelta(hours=1))
            assert response.status_code == 202, response.text
            ids.append(response.json()["call_id"])
        now = clock.advance(timedelta(hours=1))
        passes = await asyncio.gather(
            *(sb.container.jobs.scheduler.run_due(now) for sb in (one, two, one, two))
        )
        assert sum(p.placed for p in passes) == 2
        for call_id in ids:
            await wait_for_status(one, call_id, PLACED)
        dialled = [call.to for sb in (one, two) for call in sb.twilio.calls.values()]
        assert sorted(dialled) == ["+12025550145", "+12025550146"]


async def test_a_call_due_while_every_process_was_down_is_placed_within_the_grace(
    database_url: str,
) -> None:
    """Restarted 10 minutes after the call's time (grace 15): it is placed at start-up."""
    clock = ManualClock()
    async with running_sandbox(SCHEDULE_ENV, database_url=database_url, clock=clock) as sb:
        call_id = (await ask_later(sb, VISITOR, NOON_DC + timedelta(hours=1))).json()["call_id"]
    clock.advance(timedelta(hours=1, minutes=10))
    async with running_sandbox(SCHEDULE_ENV, database_url=database_url, clock=clock) as sb:
        # No pass of the test's own: the start-up pass finds the call.
        call = await wait_for_status(sb, call_id, PLACED)
        assert call.call_sid is not None


async def test_a_call_due_longer_ago_than_the_grace_is_missed_and_the_page_is_told(
    database_url: str,
) -> None:
    """Restarted 20 minutes late (grace 15): never dialled, ``missed``, with a sentence."""
    clock = ManualClock()
    async with running_sandbox(SCHEDULE_ENV, database_url=database_url, clock=clock) as sb:
        call_id = (await ask_later(sb, VISITOR, NOON_DC + timedelta(hours=1))).json()["call_id"]
    clock.advance(timedelta(hours=1, minutes=20))
    async with running_sandbox(SCHEDULE_ENV, database_url=database_url, clock=clock) as sb:
        await wait_for_status(sb, call_id, {"missed"})
        # The pass counts and records it just after the status changes.
        await wait_until_async(lambda: _has_event(sb, call_id, "missed"))
        view = (await sb.http.get(f"/api/call/{call_id}")).json()
        assert view["status"] == "missed"
        assert "couldn't call at the time you asked" in view["failure"]["message"]
        assert await calls_to(sb, "+12025550143") == 0
        metrics = (await sb.http.get("/metrics")).text
        assert 'callbridge_scheduled_calls_total{event="missed"} 1.0' in metrics


async def test_a_number_put_on_the_do_not_call_list_in_between_is_never_dialled(
    database_url: str,
) -> None:
    """Scheduled, then the number opts out: at the time the call fails, nothing is dialled,
    and the page's sentence does not say why (opting out stays private)."""
    clock = ManualClock()
    async with running_sandbox(SCHEDULE_ENV, database_url=database_url, clock=clock) as sb:
        call_id = (await ask_later(sb, VISITOR, NOON_DC + timedelta(hours=3))).json()["call_id"]
        await sb.container.admission.add_do_not_call("+12025550143")
        result = await sb.container.jobs.scheduler.run_due(clock.advance(timedelta(hours=3)))
        assert (result.placed, result.refused) == (0, 1)
        call = await sb.container.store.get_call(call_id)
        assert call is not None
        assert call.status is CallStatus.FAILED
        assert call.failure_code == "refused_at_time"
        assert call.failure_reason is not None and "do_not_call" in call.failure_reason
        assert await calls_to(sb, "+12025550143") == 0
        view = (await sb.http.get(f"/api/call/{call_id}")).json()
        assert "not call" not in view["failure"]["message"].lower()
        assert "do_not_call" not in view["failure"]["message"]


async def test_the_visitor_cancels_with_the_calls_capability_and_nothing_else() -> None:
    """Cancel needs the 202's cancel_token: the id alone or another call's token is 401;
    cancelled, the call is never placed, and a second cancel is 409."""
    clock = ManualClock()
    async with running_sandbox(SCHEDULE_ENV, clock=clock) as sb:
        first = (await ask_later(sb, VISITOR, NOON_DC + timedelta(hours=1))).json()
        other = (await ask_later(sb, "+12025550144", NOON_DC + timedelta(hours=1))).json()
        path = f"/api/call/{first['call_id']}/cancel"
        no_token = await sb.http.post(path, json={"cancel_token": "x" * 40})
        assert no_token.status_code == 401
        wrong = await sb.http.post(path, json={"cancel_token": other["cancel_token"]})
        assert wrong.status_code == 401
        ok = await sb.http.post(path, json={"cancel_token": first["cancel_token"]})
        assert ok.status_code == 200, ok.text
        assert ok.json()["status"] == "canceled"
        again = await sb.http.post(path, json={"cancel_token": first["cancel_token"]})
        assert again.status_code == 409
        result = await sb.container.jobs.scheduler.run_due(clock.advance(timedelta(hours=1)))
        assert result.placed == 1  # the other call only
        view = (await sb.http.get(f"/api/call/{first['call_id']}")).json()
        assert view["status"] == "canceled"
        assert await calls_to(sb, "+12025550143") == 0


async def test_a_draining_process_claims_nothing_and_another_places_the_call(
    database_url: str,
) -> None:
    """After SIGTERM's drain began, this process's passes leave due calls to the others."""
    clock = ManualClock()
    async with (
        running_sandbox(SCHEDULE_ENV, database_url=database_url, clock=clock) as leaving,
        running_sandbox(SCHEDULE_ENV, database_url=database_url, clock=clock) as staying,
    ):
        asked = await ask_later(leaving, VISITOR, NOON_DC + timedelta(hours=1))
        call_id = asked.json()["call_id"]
        await leaving.container.operator.drain.drain()  # no live calls: returns at once
        now = clock.advance(timedelta(hours=1))
        assert (await leaving.container.jobs.scheduler.run_due(now)).placed == 0
        call = await leaving.container.store.get_call(call_id)
        assert call is not None and call.status is CallStatus.SCHEDULED
        assert (await staying.container.jobs.scheduler.run_due(now)).placed == 1
        await wait_for_status(staying, call_id, PLACED)


async def _has_event(sb: Sandbox, call_id: str, status: str) -> bool:
    return any(e.status == status for e in await sb.container.store.events(call_id))


async def wait_until_async(
    check: Callable[[], Awaitable[bool]],
    timeout: float = 10.0,  # noqa: ASYNC109 - a plain deadline reads best in tests
) -> None:
    """Wait until the async ``check`` is true."""
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)
