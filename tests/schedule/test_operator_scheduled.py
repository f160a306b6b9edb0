"""The operator sees the scheduled calls (a filter, a "next 24 hours" view, the API) and
cancels them: by a form with its CSRF token, or by the API with the bearer token."""

from __future__ import annotations

from datetime import timedelta

from callbridge.domain.call import CallStatus
from tests.operator.conftest import ADMIN_ENV, TOKEN, csrf_of, signed_in
from tests.schedule.conftest import NOON_DC, SCHEDULE_ENV, ManualClock, ask_later
from tests.support.app import running_sandbox


async def test_the_operator_sees_the_next_24_hours_and_cancels_with_csrf() -> None:
    """/admin/scheduled shows the call due in 1 h, not the one due in 30 h (until "all");
    cancel needs the CSRF token; afterwards the call is canceled by the operator."""
    clock = ManualClock()
    async with running_sandbox({**ADMIN_ENV, **SCHEDULE_ENV}, clock=clock) as sb:
        soon = (await ask_later(sb, "+12025550161", NOON_DC + timedelta(hours=1))).json()
        later = (await ask_later(sb, "+12025550162", NOON_DC + timedelta(hours=30))).json()
        async with signed_in(sb) as client:
            page = await client.get("/admin/scheduled")
            assert page.status_code == 200
            assert soon["call_id"] in page.text
            assert later["call_id"] not in page.text
            every = await client.get("/admin/scheduled?all=1")
            assert soon["call_id"] in every.text and later["call_id"] in every.text
            listed = await client.get("/admin?status=scheduled")
            assert soon["call_id"] in listed.text and later["call_id"] in listed.text

            action = f"/admin/calls/{soon['call_id']}/cancel"
            refused = await client.post(action, data={"csrf": "forged"})
            assert refused.status_code == 403
            still = await sb.container.store.get_call(soon["call_id"])
            assert still is not None and still.status is CallStatus.SCHEDULED

            done = await client.post(
                action, data={"csrf": csrf_of(page.text), "back": "/admin/scheduled"}
            )
            assert done.status_code == 303
            assert done.headers["location"] == "/admin/scheduled"
        call = await sb.container.store.get_call(soon["call_id"])
        assert call is not None and call.status is CallStatus.CANCELED
        events = await sb.container.store.events(soon["call_id"])
        assert any(
            e.status == "cancelled" and str(e.detail["by"]).startswith("admin:") for e in events
        )
        metrics = (await sb.http.get("/metrics")).text
        assert 'callbridge_scheduled_calls_total{event="scheduled"} 2.0' in metrics
        assert 'callbridge_scheduled_calls_total{event="cancelled"} 1.0' in metrics


async def test_the_admin_api_lists_scheduled_calls_and_cancels_one() -> None:
    """GET /api/admin/calls?status=scheduled gives scheduled_for; POST …/cancel cancels
    (bearer token); a second cancel is 409, no token is 401."""
    clock = ManualClock()
    async with running_sandbox({**ADMIN_ENV, **SCHEDULE_ENV}, clock=clock) as sb:
        asked = (await ask_later(sb, "+12025550163", NOON_DC + timedelta(hours=2))).json()
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        listed = await sb.http.get("/api/admin/calls?status=scheduled", headers=bearer)
        assert listed.status_code == 200
        [row] = listed.json()["calls"]
        assert row["scheduled_for"] == "2026-12-08T19:00:00+00:00"
        path = f"/api/admin/calls/{asked['call_id']}/cancel"
        assert (await sb.http.post(path)).status_code == 401
        ok = await sb.http.post(path, headers=bearer)
        assert ok.status_code == 200, ok.text
        assert ok.json()["cancelled"] == [asked["call_id"]]
        assert (await sb.http.post(path, headers=bearer)).status_code == 409
