"""Issue 14 in a browser: the sandbox phone lets a call go to voicemail, and the visitor's
panel says what happened (the whole app in the sandbox, on a real uvicorn on loopback)."""

from __future__ import annotations

import pytest
from playwright.async_api import Browser, expect

from tests.browser.conftest import ConsoleLog
from tests.integration.helpers import wait_for_status
from tests.support.app import running_sandbox

pytestmark = pytest.mark.browser

NUMBER = "+1 201 555 0123"  # libphonenumber's example US number: valid by definition
STATUS = "[data-callbridge-status-text]"
ENV = {
    "CALLBRIDGE_ALLOWED_COUNTRIES": "US,CA,GB",
    "CALLBRIDGE_AMD_SPEECH_THRESHOLD": "1000",
    "CALLBRIDGE_AMD_SPEECH_END_THRESHOLD": "500",
}


async def test_let_it_go_to_voicemail(browser: Browser, console: ConsoleLog) -> None:
    """ "Let it go to voicemail" plays the machine's recorded greeting and beep; AMD finds
    the machine, our message is said only after the beep (a caption on the phone), and the
    visitor's panel says the call went to voicemail and a message was left."""
    async with running_sandbox(ENV) as sb:
        ctx = await browser.new_context(viewport={"width": 1000, "height": 1000})  # type: ignore[attr-defined]
        phone = await ctx.new_page()
        console.watch(phone)
        await phone.goto(sb.base_url + "/sandbox/phone")
        await expect(phone.locator("[data-phone-line-text]")).to_contain_text("On the line")
        visitor = await ctx.new_page()
        console.watch(visitor)
        await visitor.goto(sb.base_url + "/")
        await visitor.get_by_label("Phone number").fill(NUMBER)
        await visitor.get_by_role("button", name="Call me now").click()

        button = phone.get_by_role("button", name="Let it go to voicemail")
        await expect(button).to_be_visible(timeout=15000)
        await button.click()
        await expect(phone.locator("[data-phone-state]")).to_contain_text("Voicemail")
        await phone.wait_for_function(
            "() => window.__phone.voicemail && window.__phone.voicemail.greetingPlayed",
            timeout=20000,
        )
        await expect(visitor.locator(STATUS)).to_have_text(
            "Went to voicemail · we left a message", timeout=30000
        )
        [sim] = sb.twilio.calls.values()
        [recent] = await sb.container.store.recent_calls(limit=1)
        call = await wait_for_status(sb, recent.id, {"voicemail"})
        assert sim.script.answerer == "machine"
        assert call.answered_by == "machine_end_beep" and call.message_left is True
        [message] = sim.said_after_beep
        captions = await phone.evaluate("window.__phone.captions")
        assert captions[-1] == message
        assert await phone.evaluate("window.__phone.voicemail.serverBeep")
        await expect(phone.locator("[data-phone-state]")).to_contain_text("Call ended")
    assert console.errors == []
