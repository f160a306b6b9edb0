"""Issue 16, the operator view, in a real Chromium: the policy in force, the outcomes of
opt-out and no-consent calls, do-not-call changes, local times and the live list."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Page, expect

from callbridge.domain.price import format_price
from callbridge.sandbox.elevenlabs.agent import STAND_IN_TRANSCRIPT
from tests.browser.conftest import ConsoleLog
from tests.operator.conftest import (
    PASSWORD,
    TOKEN,
    admin_sandbox,
    csrf_of,
    finished_call,
    info_logs,
    signed_in,
)
from tests.support.app import Sandbox

pytestmark = pytest.mark.browser

OPTS_OUT = "+12025550161"
SAYS_NO = "+12025550162"
LISTED = "+12025550163"


async def _signed_in_page(browser: Any, sb: Sandbox, **context: Any) -> Page:
    ctx = await browser.new_context(viewport={"width": 1280, "height": 860}, **context)
    page = await ctx.new_page()
    await page.goto(f"{sb.base_url}/admin/login")
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_test_id("login-submit").click()
    await expect(page).to_have_url(f"{sb.base_url}/admin")
    return page


def _row(page: Page, env_name: str) -> Any:
    return page.get_by_test_id("settings-table").locator("tr", has_text=env_name)


async def test_the_settings_page_shows_the_limits_and_quiet_hours_in_force(
    browser: Any, console: ConsoleLog, tmp_path: Path
) -> None:
    """In the sandbox the page shows the relaxed per-number and per-IP limits admission
    enforces (with the setting beside them) and quiet hours as off, not "not set"."""
    async with admin_sandbox(tmp_path) as sb:
        limits = sb.container.admission.limits
        page = await _signed_in_page(browser, sb)
        console.watch(page)
        await page.goto(f"{sb.base_url}/admin/settings")
        hourly = _row(page, "CALLBRIDGE_PER_NUMBER_HOURLY")
        await expect(hourly).to_contain_text(f"{limits.per_number_hourly} (sandbox")
        await expect(hourly).to_contain_text("the setting says 3")
        await expect(_row(page, "CALLBRIDGE_PER_IP_HOURLY")).to_contain_text(
            str(limits.per_ip_hourly)
        )
        await expect(_row(page, "CALLBRIDGE_QUIET_HOURS")).to_contain_text("off (sandbox)")
        await expect(_row(page, "CALLBRIDGE_MAX_CONCURRENT_CALLS")).to_contain_text("10")
        await page.context.close()
    async with admin_sandbox(tmp_path, {"CALLBRIDGE_QUIET_HOURS": "09:00-20:00"}) as sb:
        page = await _signed_in_page(browser, sb)
        await page.goto(f"{sb.base_url}/admin/settings")
        await expect(_row(page, "CALLBRIDGE_QUIET_HOURS")).to_contain_text(
            "09:00–20:00 callee's time"
        )
        await page.context.close()
    assert console.errors == []


async def test_opt_out_and_no_consent_calls_have_their_own_outcomes(
    browser: Any, console: ConsoleLog, tmp_path: Path
) -> None:
    """A callee who pressed 9 and one who pressed another key end as "opted out" and
    "no consent" in the list, the status filter, the call page (whose timeline ends with
    the outcome) and the overview's chart; a talked-through call stays "completed" and
    its price reads as in the API."""
    async with admin_sandbox(tmp_path) as sb:
        sb.twilio.set_callee(OPTS_OUT, "answer=0.2,digits=9")
        sb.twilio.set_callee(SAYS_NO, "answer=0.2,digits=5")
        ids = {}
        for number in (OPTS_OUT, SAYS_NO):
            answer = (await sb.request_call(number)).json()
            await sb.twilio.wait_for_end(answer["call_sid"], 25)
            ids[number] = answer["call_id"]
        talked = await finished_call(sb)
        price_text = None
        deadline = time.monotonic() + 15
        while price_text is None:  # Twilio reports the price a moment after the end
            assert time.monotonic() < deadline, "the call's price never arrived"
            await asyncio.sleep(0.1)
            view = (
                await sb.http.get(
                    f"/api/admin/calls/{talked['call_id']}",
                    headers={"Authorization": f"Bearer {TOKEN}"},
                )
            ).json()
            price_text = view["price_text"]
        assert price_text == format_price(view["price"], view["price_unit"])
        assert not price_text.startswith("-")

        page = await _signed_in_page(browser, sb)
        console.watch(page)
        rows = page.locator("#call-rows tr[data-call-id]")
        await expect(page.locator(f"tr[data-call-id='{ids[OPTS_OUT]}']")).to_contain_text(
            "opted out"
        )
        await expect(page.locator(f"tr[data-call-id='{ids[SAYS_NO]}']")).to_contain_text(
            "no consent"
        )
        await expect(page.locator(f"tr[data-call-id='{talked['call_id']}']")).to_contain_text(
            "completed"
        )
        await page.get_by_label("Status").select_option("opted_out")
        await page.get_by_role("button", name="Filter").click()
        await expect(rows).to_have_count(1)
        await expect(rows.first).to_have_attribute("data-call-id", ids[OPTS_OUT])

        await page.goto(f"{sb.base_url}/admin/calls/{ids[OPTS_OUT]}")
        await expect(page.get_by_test_id("call-status")).to_have_text("opted out")
        last = page.get_by_test_id("timeline").locator("li").last
        await expect(last).to_contain_text("opted out")
        await expect(last).to_contain_text("do-not-call")
        await page.goto(f"{sb.base_url}/admin/calls/{ids[SAYS_NO]}")
        await expect(page.get_by_test_id("call-status")).to_have_text("no consent")
        await expect(page.get_by_test_id("timeline").locator("li").last).to_contain_text(
            "did not press 1"
        )
        await page.goto(f"{sb.base_url}/admin/calls/{talked['call_id']}")
        await expect(page.get_by_test_id("facts")).to_contain_text(price_text)
        await page.goto(f"{sb.base_url}/admin/overview")
        ended = page.get_by_test_id("chart-status")
        await expect(ended).to_contain_text("opted out")
        await expect(ended).to_contain_text("no consent")
        await page.context.close()
    assert console.errors == []


async def test_the_do_not_call_page_adds_and_removes_with_csrf_and_an_audit_line(
    browser: Any, console: ConsoleLog, tmp_path: Path
) -> None:
    """The operator adds a number on the page (then a call to it is refused) and removes
    it again; each change is listed with who made it and logged with the number masked;
    a form without its CSRF token changes nothing."""
    async with admin_sandbox(tmp_path) as sb:
        page = await _signed_in_page(browser, sb)
        console.watch(page)
        with info_logs() as logs:
            await page.get_by_role("link", name="Do not call").click()
            await page.get_by_role("textbox", name="Number").fill("+1 202 555 0163")
            await page.get_by_test_id("dnc-add").click()
            await expect(page.get_by_test_id("dnc-done")).to_contain_text("is on the list")
            table = page.get_by_test_id("dnc-table")
            await expect(table).to_contain_text("0163")
            await expect(table).to_contain_text("operator")
            await expect(page.get_by_test_id("dnc-audit")).to_contain_text("added by admin:")

            refused = await sb.request_call(LISTED)
            assert refused.status_code == 429, refused.text

            await page.get_by_test_id("dnc-remove").first.click()
            await expect(page.get_by_test_id("dnc-done")).to_contain_text("is off the list")
            await expect(table).not_to_contain_text("0163")
            await expect(page.get_by_test_id("dnc-audit").locator("li").first).to_contain_text(
                "removed by admin:"
            )
        changes = [e for e in logs if e["event"] == "do_not_call_changed"]
        assert [e["action"] for e in changes] == ["added", "removed"], changes
        assert all(e["number"].endswith("0163") and LISTED not in str(e) for e in changes)

        async with signed_in(sb) as client:
            page_html = (await client.get("/admin/dnc")).text
            assert csrf_of(page_html)
            forged = await client.post("/admin/dnc", data={"action": "add", "number": LISTED})
            assert forged.status_code == 403, forged.text
            after = (await client.get("/admin/dnc")).text
            assert after.count("0163") == 2, "only the two audit lines name it, no entry"
        await page.context.close()
    assert console.errors_except("429") == []


async def test_times_show_in_the_operators_time_zone_with_utc_on_hover(
    browser: Any, console: ConsoleLog, tmp_path: Path
) -> None:
    """For an operator in India (UTC+05:30) the list and the call page show local times
    with their offset, and UTC in the title shown on hover."""
    async with admin_sandbox(tmp_path) as sb:
        call = await finished_call(sb)
        stored = await sb.container.store.get_call(call["call_id"])
        assert stored is not None
        page = await _signed_in_page(browser, sb, timezone_id="Asia/Kolkata")
        console.watch(page)
        when = page.locator(f"tr[data-call-id='{call['call_id']}'] time")
        await expect(when).to_contain_text("(UTC+05:30)")
        await page.goto(f"{sb.base_url}/admin/calls/{call['call_id']}")
        placed = page.get_by_test_id("facts").locator("time").first
        from datetime import timedelta, timezone

        local = stored.created_at.astimezone(timezone(timedelta(hours=5, minutes=30)))
        await expect(placed).to_have_text(local.strftime("%Y-%m-%d %H:%M:%S") + " (UTC+05:30)")
        utc = stored.created_at.strftime("%Y-%m-%d %H:%M:%S") + " UTC"
        await expect(placed).to_have_attribute("title", utc)
        await page.context.close()
    assert console.errors == []


async def test_the_call_list_follows_live_events_instead_of_polling(
    browser: Any, console: ConsoleLog, tmp_path: Path
) -> None:
    """The list opens the operator's event stream; a new call appears through it (the
    slow poll, the fallback, never ran); the stream is refused without a session."""
    async with admin_sandbox(tmp_path) as sb:
        anonymous = await sb.http.get("/admin/calls/stream")
        assert anonymous.status_code == 401
        page = await _signed_in_page(browser, sb)
        console.watch(page)
        streams: list[str] = []
        page.on("request", lambda r: streams.append(r.url) if "/calls/stream" in r.url else None)
        await page.reload()
        rows = page.locator("#call-rows")
        await expect(rows).to_have_attribute("data-live", "events")
        assert streams, "the list did not open the event stream"
        placed = (await sb.request_call("+12025550164")).json()
        await expect(page.locator(f"tr[data-call-id='{placed['call_id']}']")).to_be_visible()
        live = page.get_by_test_id("live")
        await expect(live).to_contain_text("updated")
        await expect(live).not_to_contain_text("polling")
        await sb.twilio.wait_for_end(placed["call_sid"], 25)
        await page.context.close()
    assert console.errors == []


async def test_the_operator_event_stream_carries_changes_and_no_words(tmp_path: Path) -> None:
    """Over HTTP: a signed-in operator's stream gets a ``change`` for a new call, with its
    id and status only."""
    async with admin_sandbox(tmp_path) as sb, signed_in(sb) as client:
        async with client.stream("GET", "/admin/calls/stream", timeout=30) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            placed = (await sb.request_call("+12025550165")).json()
            async for line in stream.aiter_lines():
                if line.startswith("data: ") and placed["call_id"] in line:
                    assert set(httpx.Response(200, content=line[6:]).json()) == {
                        "call_id",
                        "status",
                    }
                    break
        await sb.twilio.wait_for_end(placed["call_sid"], 25)


async def test_the_live_turns_need_the_operator_token_and_never_reach_the_visitor(
    tmp_path: Path,
) -> None:
    """With CALLBRIDGE_ADMIN_TOKEN set, a call's live stream is refused without it (401)
    and with it carries the statuses and the turns; the visitor's stream of the same call
    carries statuses only, never a word of the conversation."""
    async with admin_sandbox(
        tmp_path, {"CALLBRIDGE_SANDBOX_CALLEE": "answer=0.2,digits=1,speak,hangup=5"}
    ) as sb:
        placed = (await sb.request_call("+12025550166")).json()
        live_url = f"/api/admin/calls/{placed['call_id']}/live"
        assert (await sb.http.get(live_url)).status_code == 401
        wrong = await sb.http.get(live_url, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401

        async def read(url: str, headers: dict[str, str]) -> str:
            async with sb.http.stream("GET", url, headers=headers, timeout=60) as stream:
                assert stream.status_code == 200
                return "\n".join([line async for line in stream.aiter_lines()])

        operator, visitor = await asyncio.gather(
            read(live_url, {"Authorization": f"Bearer {TOKEN}"}),
            read(f"/api/call/{placed['call_id']}/events", {}),
        )
    assert "event: turn" in operator and '"role":"agent"' in operator, operator
    assert STAND_IN_TRANSCRIPT in operator
    assert '"status":"initiated"' in operator
    assert "turn" not in visitor and "stand-in" not in visitor and "agent" not in visitor
    assert '"status":"completed"' in visitor


@pytest.mark.redis
async def test_with_redis_the_list_stream_and_the_turns_cross_processes(
    tmp_path: Path,
    redis_url: str,  # noqa: F811
) -> None:
    """With REDIS_URL, two servers (one database) share the live channels: the operator
    signed in on B gets the change of a call placed on A, and B's live stream of that
    call carries the turns A's bridge speaks."""
    env = {
        "REDIS_URL": redis_url,
        "CALLBRIDGE_SECRET_KEY": "s" * 32,
        "CALLBRIDGE_SANDBOX_CALLEE": "answer=0.2,digits=1,speak,hangup=5",
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/shared.db",
    }
    async with admin_sandbox(tmp_path, env) as a, admin_sandbox(tmp_path, env) as b:
        async with (
            signed_in(b) as client,
            client.stream("GET", "/admin/calls/stream", timeout=30) as changes,
        ):
            placed = (await a.request_call("+12025550167")).json()
            async for line in changes.aiter_lines():
                if line.startswith("data: ") and placed["call_id"] in line:
                    break
        live = f"/api/admin/calls/{placed['call_id']}/live"
        async with b.http.stream(
            "GET", live, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60
        ) as stream:
            text = "\n".join([line async for line in stream.aiter_lines()])
    assert "event: turn" in text and STAND_IN_TRANSCRIPT in text, text
