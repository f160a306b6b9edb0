"""The contact page as a newcomer meets it, in Chromium at 1280×800.

Most tests run against the fake call API (fake_api.py); those about what the real server
answers or logs run against the whole sandbox app.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Locator, Page, expect

from callbridge.domain.quotas import NUMBER_UNAVAILABLE_MESSAGE
from tests.browser.conftest import ConsoleLog
from tests.browser.fake_api import FakeState, Step
from tests.browser.test_pages_http import client
from tests.operator.conftest import info_logs
from tests.support.app import running_sandbox

pytestmark = pytest.mark.browser

DESKTOP = {"width": 1280, "height": 800}
TYPED = "+1 234 567 8900"
STATUS = "[data-callbridge-status-text]"
#: A call that rings, connects and stays connected.
LIVE = [Step(0.2, "initiated"), Step(0.4, "ringing"), Step(0.6, "in-progress")]


async def open_page(browser: Browser, url: str, console: ConsoleLog) -> Page:
    context = await browser.new_context(viewport=DESKTOP)  # type: ignore[attr-defined]
    page: Page = await context.new_page()
    console.watch(page)
    await page.goto(url)
    return page


async def box(locator: Locator) -> dict[str, float]:
    found = await locator.bounding_box()
    assert found is not None, locator
    return found


def overlaps(a: dict[str, float], b: dict[str, float]) -> bool:
    return not (
        a["x"] + a["width"] <= b["x"]
        or b["x"] + b["width"] <= a["x"]
        or a["y"] + a["height"] <= b["y"]
        or b["y"] + b["height"] <= a["y"]
    )


async def panel_card(page: Page) -> Locator:
    return page.locator("callbridge-status .panel")


async def test_at_1280x800_the_panel_covers_nothing_and_errors_sit_by_the_phone_field(
    browser: Browser, base_url: str, state: FakeState, console: ConsoleLog, tmp_path: Path
) -> None:
    """At 1280×800 an invalid number's error shows right under the phone field (above the
    next label); once a call is asked for, the status panel, in view, covers neither the
    success message, nor the recording notice, nor any label."""
    state.script = LIVE
    page = await open_page(browser, base_url + "/", console)
    phone = page.get_by_label("Phone number")
    await phone.fill("12")
    await page.get_by_role("button", name="Call me now").click()
    error = page.get_by_role("alert")
    await expect(error).to_be_visible()
    field, message = await box(phone), await box(error)
    name_label = await box(page.locator("label[for=cb-name]"))
    assert field["y"] + field["height"] <= message["y"] < name_label["y"]
    assert message["y"] - (field["y"] + field["height"]) < 60
    await page.screenshot(path=tmp_path / "contact-error.png")

    await phone.fill(TYPED)
    await page.get_by_role("button", name="Call me now").click()
    await expect(page.locator(STATUS)).to_have_text("Connected", timeout=5000)
    panel = await box(await panel_card(page))
    assert panel["y"] + panel["height"] <= DESKTOP["height"] and panel["y"] >= 0
    labels = page.locator("form[data-callbridge-form] label")
    covered = [
        page.locator("[data-callbridge-success]"),
        page.locator(".fineprint"),
        *[labels.nth(i) for i in range(await labels.count())],
    ]
    for element in covered:
        assert not overlaps(panel, await box(element)), await element.text_content()
    await page.screenshot(path=tmp_path / "contact-calling.png")
    assert console.errors == []


async def test_the_visitor_sees_the_number_they_typed_in_full(
    browser: Browser, base_url: str, state: FakeState, console: ConsoleLog
) -> None:
    """The success message and the panel show the number as typed, in full; the console
    line and the sentence returned to the agent keep it masked."""
    state.script = LIVE
    page = await open_page(browser, base_url + "/", console)
    await page.get_by_label("Phone number").fill(TYPED)
    await page.get_by_role("button", name="Call me now").click()
    await expect(page.locator("[data-callbridge-success]")).to_contain_text(
        f"Calling you now on {TYPED}."
    )
    await expect(page.locator("callbridge-status .title")).to_have_text(f"Call to {TYPED}")
    assert all("8900" not in line or "•" in line for _, line in console.messages)
    assert console.errors == []


async def test_the_hint_spells_out_the_default_region(
    browser: Browser, base_url: str, console: ConsoleLog
) -> None:
    """The phone hint says which numbers may skip their country code, from
    CALLBRIDGE_DEFAULT_REGION (US by default; GB says UK and +44)."""
    page = await open_page(browser, base_url + "/", console)
    await expect(page.locator("#cb-phone-hint")).to_have_text(
        "US numbers can skip +1; others start with + and the country code."
    )
    html = (await client(sandbox=True, default_region="GB").get("/")).text
    assert "UK numbers can skip +44; others start with + and the country code." in html


@pytest.mark.parametrize("ending", ["busy", "no-answer"])
async def test_busy_no_answer_and_a_decline_all_read_they_didnt_pick_up(
    browser: Browser, base_url: str, state: FakeState, console: ConsoleLog, ending: str
) -> None:
    """Busy and no-answer (Twilio's words for a declined call too) end the panel on
    "They didn't pick up"."""
    state.script = [Step(0.2, "initiated"), Step(0.4, "ringing"), Step(0.8, ending)]
    page = await open_page(browser, base_url + "/", console)
    await page.get_by_label("Phone number").fill(TYPED)
    await page.get_by_role("button", name="Call me now").click()
    await expect(page.locator(STATUS)).to_have_text("They didn't pick up", timeout=5000)
    assert console.errors == []


async def test_no_second_call_while_one_is_live(
    browser: Browser, base_url: str, state: FakeState, console: ConsoleLog, tmp_path: Path
) -> None:
    """While a call is live the form's button is disabled and the page says why; asking
    through the agent's tool is refused with the same sentence and nothing is sent; the
    panel keeps following the first call. Once it ends, the form works again."""
    state.script = LIVE
    page = await open_page(browser, base_url + "/", console)
    await page.get_by_label("Phone number").fill(TYPED)
    submit = page.get_by_role("button", name="Call me now")
    await submit.click()
    await expect(page.locator(STATUS)).to_have_text("Connected", timeout=5000)
    await expect(submit).to_be_disabled()
    note = page.locator("[data-callbridge-live-note]")
    await expect(note).to_have_text(
        "You already have a call in progress. You can ask for another once it ends."
    )
    await page.screenshot(path=tmp_path / "contact-live.png")
    reply: str = await page.evaluate(
        "window.callbridge.initiatePhoneCall({phoneNumber: '+1 234 567 8911'})"
    )
    assert reply == "You already have a call in progress. You can ask for another once it ends."
    assert len(state.outbound) == 1
    current: dict[str, Any] = await page.evaluate("window.callbridge.status()")
    assert current["callId"] == "call-1" and current["to"] == TYPED
    await page.evaluate("window.callbridge.dismiss()")
    await expect(submit).to_be_enabled()
    await expect(note).to_be_hidden()
    assert console.errors == []


async def test_an_opted_out_number_is_refused_without_an_invitation_to_retry(
    browser: Browser, console: ConsoleLog
) -> None:
    """A number on the do-not-call list gets the generic refusal, next to the phone field,
    with no "later" or "again" in it; the server's body is the one it gives for per-number
    limits."""
    async with running_sandbox({"CALLBRIDGE_ALLOWED_COUNTRIES": "US,CA"}) as sb:
        await sb.container.admission.add_do_not_call("+12015550123")
        page = await open_page(browser, sb.base_url + "/", console)
        await page.get_by_label("Phone number").fill("+1 201 555 0123")
        await page.get_by_role("button", name="Call me now").click()
        error = page.locator("#cb-phone ~ [data-callbridge-error]")
        await expect(error).to_have_text(NUMBER_UNAVAILABLE_MESSAGE)
    text = NUMBER_UNAVAILABLE_MESSAGE.lower()
    assert "later" not in text and "again" not in text and "right now" not in text
    assert console.errors_except("status of 429") == []


async def test_the_number_is_masked_for_everyone_else(
    browser: Browser, console: ConsoleLog
) -> None:
    """While the visitor's page shows their number in full, GET /api/call/{id} and every
    server log line carry it masked only."""
    env = {"CALLBRIDGE_ALLOWED_COUNTRIES": "US,CA", "CALLBRIDGE_SANDBOX_CALLEE": "busy"}
    async with running_sandbox(env) as sb:
        with info_logs() as logs:
            page = await open_page(browser, sb.base_url + "/", console)
            await page.get_by_label("Phone number").fill("+1 201 555 0123")
            await page.get_by_role("button", name="Call me now").click()
            await expect(page.locator("[data-callbridge-success]")).to_contain_text(
                "Calling you now on +1 201 555 0123."
            )
            await expect(page.locator(STATUS)).to_have_text("They didn't pick up", timeout=30000)
            call_id = (await page.evaluate("window.callbridge.status()"))["callId"]
            public = (await sb.http.get(f"/api/call/{call_id}")).json()
    assert "0123" in public["to"] and "2015550" not in public["to"].replace(" ", "")
    assert logs
    assert not [e for e in logs if "2015550123" in str(e).replace(" ", "")]
