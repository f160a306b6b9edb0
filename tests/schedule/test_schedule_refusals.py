"""Call me later: a time that cannot be is a clear 4xx, and quiet hours become an offer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.schedule.conftest import NOON_DC, SCHEDULE_ENV, ManualClock, ask_later
from tests.support.app import count_rows, running_sandbox

VISITOR = "+12025550147"
#: 23:00 in Washington, DC (quiet hours 08:00-21:00 there).
LATE_EVENING_DC = datetime(2026, 12, 9, 4, 0, tzinfo=UTC)


async def test_a_time_in_the_past_too_far_ahead_or_without_offset_is_422() -> None:
    """Past, beyond CALLBRIDGE_SCHEDULE_MAX_DAYS, or naive: 422 with its code; nothing stored."""
    clock = ManualClock()
    env = {**SCHEDULE_ENV, "CALLBRIDGE_SCHEDULE_MAX_DAYS": "3"}
    async with running_sandbox(env, clock=clock) as sb:
        cases = {
            "schedule_in_past": (NOON_DC - timedelta(minutes=5)).isoformat(),
            "schedule_too_far": (NOON_DC + timedelta(days=3, minutes=1)).isoformat(),
            "schedule_naive": "2026-12-08T19:00:00",
        }
        for code, at in cases.items():
            response = await ask_later(sb, VISITOR, at)
            assert response.status_code == 422, (code, response.text)
            error = response.json()["error"]
            assert error["code"] == code
            assert error["message"]
        garbage = await ask_later(sb, VISITOR, "tomorrow at nine")
        assert garbage.status_code == 400
        assert garbage.json()["success"] is False
        assert await count_rows(sb, "calls") == 0
        fine = await ask_later(sb, VISITOR, NOON_DC + timedelta(days=2, hours=23))
        assert fine.status_code == 202, fine.text


async def test_a_request_in_quiet_hours_gets_409_with_the_next_allowed_times() -> None:
    """At 23:00 callee-local, "call me now" is 409 quiet_hours with three offers (08:00 local
    on the next three days, in the callee's zone and UTC); nothing is dialled or stored."""
    clock = ManualClock(LATE_EVENING_DC)
    env = {**SCHEDULE_ENV, "CALLBRIDGE_QUIET_HOURS": "08:00-21:00"}
    async with running_sandbox(env, clock=clock) as sb:
        response = await sb.request_call(VISITOR)
        assert response.status_code == 409, response.text
        body = response.json()
        assert body["error"]["code"] == "quiet_hours"
        assert [slot["utc"] for slot in body["next_allowed"]] == [
            "2026-12-09T13:00:00Z",
            "2026-12-10T13:00:00Z",
            "2026-12-11T13:00:00Z",
        ]
        first = body["next_allowed"][0]
        assert first["local"] == "2026-12-09T08:00:00-05:00"
        assert first["zone"] == "America/New_York"
        assert await count_rows(sb, "calls") == 0

        # One click on an offer schedules it.
        chosen = await ask_later(sb, VISITOR, first["utc"].replace("Z", "+00:00"))
        assert chosen.status_code == 202, chosen.text
        assert chosen.json()["scheduled_for"] == "2026-12-09T13:00:00Z"


async def test_a_time_asked_for_inside_quiet_hours_is_409_with_the_next_allowed_times() -> None:
    """Asking for 06:30 callee-local is 409 quiet_hours offering 08:00 that day first."""
    clock = ManualClock()
    env = {**SCHEDULE_ENV, "CALLBRIDGE_QUIET_HOURS": "08:00-21:00"}
    async with running_sandbox(env, clock=clock) as sb:
        response = await ask_later(sb, VISITOR, "2026-12-09T06:30:00-05:00")
        assert response.status_code == 409, response.text
        body = response.json()
        assert body["error"]["code"] == "quiet_hours"
        assert body["next_allowed"][0]["utc"] == "2026-12-09T13:00:00Z"
        assert await count_rows(sb, "calls") == 0


async def test_pending_scheduled_calls_are_limited_per_number_and_per_requester() -> None:
    """A third waiting call to one number is 429 like any per-number refusal; a fourth
    waiting call from one requester is 429 too."""
    clock = ManualClock()
    async with running_sandbox(SCHEDULE_ENV, clock=clock) as sb:
        for hours in (1, 2):
            ok = await ask_later(sb, VISITOR, NOON_DC + timedelta(hours=hours))
            assert ok.status_code == 202, ok.text
        third = await ask_later(sb, VISITOR, NOON_DC + timedelta(hours=3))
        assert third.status_code == 429
        assert third.json()["error"]["code"] == "policy_rejected"
        other = await ask_later(sb, "+12025550148", NOON_DC + timedelta(hours=3))
        assert other.status_code == 202, other.text
        fourth = await ask_later(sb, "+12025550149", NOON_DC + timedelta(hours=3))
        assert fourth.status_code == 429
        assert "already have 3 calls scheduled" in fourth.json()["error"]["message"]


async def test_a_do_not_call_number_is_refused_like_any_busy_number() -> None:
    """Asking for a later call to an opted-out number is the same 429 (status, code,
    message, Retry-After) as a per-number refusal: nobody learns who opted out."""
    clock = ManualClock()
    async with running_sandbox(SCHEDULE_ENV, clock=clock) as sb:
        for hours in (1, 2):
            await ask_later(sb, VISITOR, NOON_DC + timedelta(hours=hours))
        busy = await ask_later(sb, VISITOR, NOON_DC + timedelta(hours=3))
        await sb.container.admission.add_do_not_call("+12025550150")
        opted_out = await ask_later(sb, "+12025550150", NOON_DC + timedelta(hours=3))
        assert opted_out.status_code == busy.status_code == 429
        assert opted_out.json() == busy.json()
        assert opted_out.headers["retry-after"] == busy.headers["retry-after"]
