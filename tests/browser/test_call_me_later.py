"""Call me later in Chromium, against the whole app in the sandbox: the quiet-hours offer,
one click to schedule, the status panel's promise, and Cancel.

The quiet-hours window is set two hours after the current hour in Washington, DC, so the
real "now" (the browser's and the server's) is always outside it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from playwright.async_api import Browser, Page, expect

from callbridge.domain.call import CallStatus
from tests.browser.conftest import ConsoleLog
from tests.support.app import Sandbox, running_sandbox

pytestmark = pytest.mark.browser

NUMBER = "+1 202 555 0143"
STATUS = "[data-callbridge-status-text]"


def closed_now() -> dict[str, str]:
    """Quiet hours that hold the current time in Washington, DC (a two-hour window later)."""
    hour = datetime.now(UTC).astimezone(ZoneInfo("America/New_York")).hour
    window = f"{(hour + 2) % 24:02d}:00-{(hour + 4) % 24:02d}:00"
    return {"CALLBRIDGE_QUIET_HOURS": window}


async def new_page(browser: Browser, console: ConsoleLog) -> Page:
    ctx = await browser.new_context(timezone_id="America/New_York", locale="en-US")  # type: ignore[attr-defined]
    page: Page = await ctx.new_page()
    console.watch(page)
    return page


async def only_call(sb: Sandbox) -> object:
    calls = await sb.container.jobs.scheduler.upcoming()
    assert len(calls) == 1, calls
    return calls[0]


async def test_the_form_offers_the_next_times_schedules_one_and_cancels_it(
    browser: Browser, console: ConsoleLog
) -> None:
    """In quiet hours the form shows the next allowed times; a click schedules the call,
    the panel says when, and its Cancel button cancels it."""
    async with running_sandbox(closed_now()) as sb:
        page = await new_page(browser, console)
        await page.goto(sb.base_url + "/")
        await page.get_by_label("Phone number").fill(NUMBER)
        await page.get_by_role("button", name="Call me now").click()
        await expect(page.locator("[data-callbridge-error]")).to_contain_text(
            "outside calling hours"
        )
        offers = page.locator("[data-callbridge-offer]")
        await expect(offers).to_have_count(3)
        first_utc = await offers.first.get_attribute("data-callbridge-offer")
        await offers.first.click()
        await expect(page.locator("[data-callbridge-success]")).to_contain_text("We'll call you")
        status = page.locator(STATUS)
        await expect(status).to_contain_text("We'll call you at ")
        await expect(status).to_contain_text("(your time)")
        call = await only_call(sb)
        assert call.scheduled_for is not None  # type: ignore[attr-defined]
        assert call.scheduled_for.isoformat().replace("+00:00", "Z") == first_utc  # type: ignore[attr-defined]

        await page.get_by_role("button", name="Cancel").click()
        await expect(status).to_contain_text("cancelled")
        stored = await sb.container.store.get_call(call.id)  # type: ignore[attr-defined]
        assert stored is not None and stored.status is CallStatus.CANCELED
        assert console.errors_except("409") == []
        await page.context.close()


async def test_the_widget_stand_in_offers_the_times_and_one_click_schedules(
    browser: Browser, console: ConsoleLog
) -> None:
    """The agent's tool is refused in quiet hours; the stand-in shows the offered times as
    buttons and one click asks again with ``at``: the call is scheduled."""
    async with running_sandbox(closed_now()) as sb:
        page = await new_page(browser, console)
        await page.goto(sb.base_url + "/")
        await page.get_by_role("button", name="Chat with us").click()
        box = page.get_by_label("Message")
        for text in ("About my order", NUMBER, "Grace"):
            await box.fill(text)
            await box.press("Enter")
        await expect(page.get_by_text("Times I can offer")).to_be_visible()
        offer = page.locator("[data-offer]").first
        await offer.click()
        await expect(page.get_by_text("Done: we'll call you on")).to_be_visible()
        await expect(page.locator(STATUS)).to_contain_text("We'll call you at ")
        call = await only_call(sb)
        assert call.context.visitor_name == "Grace"  # type: ignore[attr-defined]
        await page.context.close()


async def test_call_me_later_from_the_form_without_quiet_hours(
    browser: Browser, console: ConsoleLog
) -> None:
    """Choosing a later time in the form schedules the call (and its retry wish)."""
    async with running_sandbox() as sb:
        page = await new_page(browser, console)
        await page.goto(sb.base_url + "/")
        await page.get_by_label("Phone number").fill(NUMBER)
        await page.get_by_label("When should we call?").select_option(index=2)
        await page.get_by_label("Try again if I miss it").check()
        await page.get_by_role("button", name="Call me now").click()
        await expect(page.locator(STATUS)).to_contain_text("We'll call you at ")
        call = await only_call(sb)
        assert call.retry_on_no_answer is True  # type: ignore[attr-defined]
        assert console.errors == []
        await page.context.close()


async def test_a_missed_call_with_try_again_shows_the_retry_and_cancels_it(
    browser: Browser, console: ConsoleLog
) -> None:
    """Busy, "Try again if I miss it" ticked: the panel turns to "Missed you: we'll try
    again at …" once the scheduler records the retry, and Cancel cancels the retry."""
    env = {"CALLBRIDGE_SANDBOX_CALLEE": "busy", "CALLBRIDGE_SCHEDULE_POLL_SECONDS": "1"}
    async with running_sandbox(env) as sb:
        page = await new_page(browser, console)
        await page.goto(sb.base_url + "/")
        await page.get_by_label("Phone number").fill(NUMBER)
        await page.get_by_label("Try again if I miss it").check()
        await page.get_by_role("button", name="Call me now").click()
        status = page.locator(STATUS)
        await expect(status).to_contain_text("Missed you: we'll try again at ", timeout=20000)
        retry = await only_call(sb)
        assert retry.retry_of is not None  # type: ignore[attr-defined]
        await page.get_by_role("button", name="Cancel").click()
        await expect(status).to_contain_text("cancelled")
        stored = await sb.container.store.get_call(retry.id)  # type: ignore[attr-defined]
        assert stored is not None and stored.status is CallStatus.CANCELED
        await page.context.close()
