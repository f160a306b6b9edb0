"""Retries: a busy or unanswered call is tried again when the visitor asked, never after
a decline, and at most CALLBRIDGE_RETRY_MAX times."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from callbridge.domain.call import CallStatus
from tests.integration.helpers import wait_for_status
from tests.schedule.conftest import SCHEDULE_ENV, ManualClock, calls_to
from tests.support.app import Sandbox, running_sandbox

VISITOR = "+12025550151"
ENDED = {"busy", "no-answer", "completed", "failed", "canceled"}


async def _first_call(sb: Sandbox, *, retry: bool = True) -> str:
    response = await sb.request_call(VISITOR, retry_on_no_answer=retry)
    assert response.status_code == 200, response.text
    call_id = str(response.json()["call_id"])
    await wait_for_status(sb, call_id, ENDED, timeout=30)
    return call_id


async def _retry_of(sb: Sandbox, call_id: str) -> list[str]:
    upcoming = await sb.container.jobs.scheduler.upcoming()
    return [call.id for call in upcoming if call.retry_of == call_id]


async def test_a_busy_call_is_retried_after_the_delay_once() -> None:
    """Busy, opted in: one retry, linked, due RETRY_AFTER_MINUTES after the end; placed then;
    busy again, no second retry (RETRY_MAX 1)."""
    clock = ManualClock()
    env = {**SCHEDULE_ENV, "CALLBRIDGE_SANDBOX_CALLEE": "busy"}
    async with running_sandbox(env, clock=clock) as sb:
        call_id = await _first_call(sb)
        first = await sb.container.store.get_call(call_id)
        assert first is not None and first.status is CallStatus.BUSY
        scheduler = sb.container.jobs.scheduler
        made = await scheduler.run_due(clock.now())
        assert made.retries == 1
        assert (await scheduler.run_due(clock.now())).retries == 0  # one retry, not two
        [retry_id] = await _retry_of(sb, call_id)
        retry = await sb.container.store.get_call(retry_id)
        assert retry is not None
        assert retry.attempt == 2
        assert first.ended_at is not None
        assert retry.scheduled_for == first.ended_at + timedelta(minutes=10)

        assert (await scheduler.run_due(clock.advance(timedelta(minutes=9)))).placed == 0
        # Quotas run on the wall clock, not the app's: let the sandbox's per-number
        # cool-down (1 s) pass, as the real 10 minutes would pass the default one.
        await asyncio.sleep(1.1)
        placed = await scheduler.run_due(clock.advance(timedelta(minutes=1)))
        assert placed.placed == 1
        await wait_for_status(sb, retry_id, {"busy"}, timeout=30)
        assert (await scheduler.run_due(clock.now())).retries == 0
        assert await calls_to(sb, VISITOR) == 2


async def test_an_unanswered_call_is_retried() -> None:
    """No answer, opted in: a retry is scheduled."""
    clock = ManualClock()
    env = {
        **SCHEDULE_ENV,
        "CALLBRIDGE_SANDBOX_CALLEE": "no-answer",
        "CALLBRIDGE_RING_TIMEOUT": "5",
    }
    async with running_sandbox(env, clock=clock) as sb:
        call_id = await _first_call(sb)
        call = await sb.container.store.get_call(call_id)
        assert call is not None and call.status is CallStatus.NO_ANSWER
        assert (await sb.container.jobs.scheduler.run_due(clock.now())).retries == 1
        assert len(await _retry_of(sb, call_id)) == 1


async def test_a_declined_call_is_never_retried() -> None:
    """The callee declines (Twilio: busy with SIP 603): no retry, even though opted in."""
    clock = ManualClock()
    env = {**SCHEDULE_ENV, "CALLBRIDGE_SANDBOX_CALLEE": "reject"}
    async with running_sandbox(env, clock=clock) as sb:
        call_id = await _first_call(sb)
        call = await sb.container.store.get_call(call_id)
        assert call is not None and call.status is CallStatus.BUSY
        scheduler = sb.container.jobs.scheduler
        assert (await scheduler.run_due(clock.now())).retries == 0
        assert (await scheduler.run_due(clock.advance(timedelta(hours=1)))).placed == 0
        assert await _retry_of(sb, call_id) == []
        assert await calls_to(sb, VISITOR) == 1


async def test_a_busy_call_without_the_visitors_wish_is_not_retried() -> None:
    """Busy, not opted in: no retry."""
    clock = ManualClock()
    env = {**SCHEDULE_ENV, "CALLBRIDGE_SANDBOX_CALLEE": "busy"}
    async with running_sandbox(env, clock=clock) as sb:
        call_id = await _first_call(sb, retry=False)
        assert (await sb.container.jobs.scheduler.run_due(clock.now())).retries == 0
        assert await _retry_of(sb, call_id) == []


async def test_a_retry_that_would_fall_in_quiet_hours_waits_for_the_morning() -> None:
    """Busy at 20:55 callee-local (window 08:00-21:00): the retry is due at 08:00 the next
    morning, not 21:05; the page's view of the first call names it."""
    clock = ManualClock(datetime(2026, 12, 9, 1, 55, tzinfo=UTC))  # 20:55 in DC
    env = {
        **SCHEDULE_ENV,
        "CALLBRIDGE_SANDBOX_CALLEE": "busy",
        "CALLBRIDGE_QUIET_HOURS": "08:00-21:00",
    }
    async with running_sandbox(env, clock=clock) as sb:
        call_id = await _first_call(sb)
        assert (await sb.container.jobs.scheduler.run_due(clock.now())).retries == 1
        [retry_id] = await _retry_of(sb, call_id)
        retry = await sb.container.store.get_call(retry_id)
        assert retry is not None
        assert retry.scheduled_for == datetime(2026, 12, 9, 13, 0, tzinfo=UTC)
        view = (await sb.http.get(f"/api/call/{call_id}")).json()
        assert view["retry"] == {
            "call_id": retry_id,
            "status": "scheduled",
            "scheduled_for": "2026-12-09T13:00:00Z",
        }
