"""A sandbox call on the sandbox phone, in Chromium, against the whole app (both emulators).

The phone page answers a call placed from the contact page; the demo agent talks on it.
One test uses Chromium's own fake microphone (it beeps, about 100 ms every 500 ms) and
Chromium's default autoplay policy; the other the quiet fake microphone of conftest.py,
which makes a 0.8 s tone (an "utterance") every 6 s.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, expect

from callbridge.media.transcode import parse_format
from callbridge.sandbox.elevenlabs.agent import STAND_IN_TRANSCRIPT
from callbridge.sandbox.elevenlabs.voice import Voice
from tests.browser.conftest import CHROMIUM_ARGS, ConsoleLog
from tests.support.app import Sandbox, running_sandbox

pytestmark = pytest.mark.browser

NUMBER = "+1 201 555 0123"  # libphonenumber's example US number: valid by definition
ENV = {"CALLBRIDGE_ALLOWED_COUNTRIES": "US,CA,GB"}


@pytest.fixture
async def beeping_browser(chromium: str) -> AsyncIterator[Browser]:
    """Chromium with its own beeping fake microphone and its default autoplay policy
    (a page makes no sound before the visitor clicks on it)."""
    from playwright.async_api import async_playwright

    args = [a for a in CHROMIUM_ARGS if not a.startswith("--autoplay-policy")]
    async with async_playwright() as pw:
        instance = await pw.chromium.launch(executable_path=chromium, args=args, headless=True)
        try:
            yield instance
        finally:
            await instance.close()


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    async with running_sandbox(ENV) as running:
        yield running


async def open_phone(browser: Browser, base: str, console: ConsoleLog) -> Page:
    context = await browser.new_context(viewport={"width": 1280, "height": 800})  # type: ignore[attr-defined]
    phone: Page = await context.new_page()
    console.watch(phone)
    await phone.goto(base + "/sandbox/phone")
    await expect(phone.locator("[data-phone-line-text]")).to_contain_text("On the line")
    return phone


async def call_from_the_contact_page(phone: Page, base: str, console: ConsoleLog) -> Page:
    visitor = await phone.context.new_page()
    console.watch(visitor)
    await visitor.goto(base + "/")
    await visitor.get_by_label("Phone number").fill(NUMBER)
    await visitor.get_by_label("Your name").fill("Grace")
    await visitor.get_by_role("button", name="Call me now").click()
    return visitor


async def answer_and_consent(phone: Page) -> None:
    answer = phone.get_by_role("button", name="Answer")
    await expect(answer).to_be_visible(timeout=15000)
    await answer.click()
    await expect(phone.locator("[data-phone-state]")).to_have_text("Connected")
    await phone.get_by_role("button", name="1", exact=True).click()  # the consent gate


async def turns(phone: Page) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = await phone.evaluate("window.__phone.turns")
    return result


async def test_one_click_allows_the_ring_and_beeps_do_not_silence_the_agent(
    beeping_browser: Browser, sandbox: Sandbox, console: ConsoleLog, tmp_path: Path
) -> None:
    """Before any click the phone page shows "Click to allow sound"; that one click lets
    the ring be heard. With Chromium's beeping fake microphone on the line, the agent's
    greeting is captioned as it is spoken and plays to its end: no beep interrupts it,
    and none is taken for the callee speaking."""
    phone = await open_phone(beeping_browser, sandbox.base_url, console)
    allow = phone.get_by_role("button", name="Click to allow sound")
    await expect(allow).to_be_visible()
    await phone.screenshot(path=tmp_path / "phone-allow-sound.png")
    await allow.click()
    await expect(allow).to_be_hidden()
    await call_from_the_contact_page(phone, sandbox.base_url, console)
    await phone.wait_for_function("() => window.__phone.ringBursts >= 1", timeout=15000)
    await answer_and_consent(phone)

    greeting = phone.locator('[data-phone-captions] li[data-role="agent"]').first
    await expect(greeting).to_contain_text("Agent: Hi Grace!", timeout=20000)
    text = (await turns(phone))[0]["text"]
    audio = await Voice().synthesize(text, parse_format("ulaw_8000"))
    frames = len(audio) // 160
    # Only the agent's audio reaches the page: all of the greeting arrives, or a beep cut it.
    await phone.wait_for_function(
        f"() => window.__phone.receivedFrames >= {frames - 5}", timeout=frames * 20 + 15000
    )
    record = next(iter(sandbox.elevenlabs.conversations.values()))
    assert record.interruptions == []
    assert [t for t in record.transcript if t.role == "user"] == []
    assert [t["role"] for t in await turns(phone)] == ["agent"]
    await phone.get_by_role("button", name="Hang up").click()
    assert console.errors_except("AudioContext") == []


async def test_captions_show_both_sides_and_the_meter_falls_to_zero(
    browser: Browser, sandbox: Sandbox, console: ConsoleLog, tmp_path: Path
) -> None:
    """The captions show the agent's words and, when the callee has spoken, the stand-in
    transcript and an answer naming the visitor and how long they spoke; between the
    agent's words the level meter falls back to zero."""
    phone = await open_phone(browser, sandbox.base_url, console)
    await expect(phone.get_by_role("button", name="Click to allow sound")).to_be_hidden()
    await call_from_the_contact_page(phone, sandbox.base_url, console)
    await answer_and_consent(phone)
    captions = phone.locator("[data-phone-captions]")
    await expect(captions.locator('li[data-role="agent"]').first).to_contain_text(
        "Agent: Hi Grace!", timeout=20000
    )
    await phone.wait_for_function("() => window.__phone.level > 0.05", timeout=20000)
    user = captions.locator('li[data-role="user"]').first
    await expect(user).to_contain_text(
        "You (stand-in transcript): " + STAND_IN_TRANSCRIPT, timeout=30000
    )
    reply = captions.locator('li[data-role="agent"]').nth(1)
    await expect(reply).to_contain_text("Grace", timeout=10000)
    await expect(reply).to_contain_text("seconds")
    await phone.screenshot(path=tmp_path / "phone-captions.png")
    # After the reply's audio, nothing arrives until the next utterance: the meter empties.
    await phone.wait_for_function(
        "() => window.__phone.level === 0 && window.__phone.receivedFrames > 100"
        " && window.__phone.state === 'in-call'",
        timeout=30000,
    )
    await expect(phone.locator("[data-phone-meter]")).to_have_attribute("aria-valuenow", "0")
    await phone.get_by_role("button", name="Hang up").click()
    assert console.errors == []
