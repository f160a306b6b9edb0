"""The contact page's logic in a real browser, against the fake call API (fake_api.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, expect

from tests.browser.conftest import ConsoleLog
from tests.browser.fake_api import FakeState, Step

pytestmark = pytest.mark.browser


async def open_page(browser: Browser, url: str, console: ConsoleLog, **context: Any) -> Page:
    ctx = await browser.new_context(**context)  # type: ignore[attr-defined]
    page: Page = await ctx.new_page()
    console.watch(page)
    await page.goto(url)
    return page


async def chat(page: Page, *texts: str) -> None:
    """Open the sandbox widget and type ``texts`` as the visitor."""
    launcher = page.get_by_role("button", name="Chat with us")
    if await launcher.get_attribute("aria-expanded") != "true":
        await launcher.click()
    box = page.get_by_label("Message")
    for text in texts:
        await box.fill(text)
        await box.press("Enter")


async def test_contact_page_renders_widget_form_and_sandbox_notice(
    browser: Browser, base_url: str, console: ConsoleLog, tmp_path: Path
) -> None:
    """The page shows the heading, the form, the stand-in widget and a visible sandbox notice."""
    page = await open_page(
        browser, base_url + "/", console, viewport={"width": 1280, "height": 860}
    )
    await expect(page.get_by_role("heading", level=1)).to_contain_text("Talk to Ada")
    await expect(page.get_by_test_id("sandbox-notice")).to_be_visible()
    await expect(page.get_by_label("Phone number")).to_be_visible()
    await expect(page.get_by_role("button", name="Chat with us")).to_be_visible()
    await page.screenshot(path=tmp_path / "contact-desktop.png", full_page=True)
    await chat(page)
    await expect(page.get_by_text("Sandbox stand-in")).to_be_visible()
    await page.screenshot(path=tmp_path / "contact-chat-open.png")
    assert console.errors == []


async def test_client_tool_places_call_and_returns_sentence(
    browser: Browser, base_url: str, state: FakeState, console: ConsoleLog, tmp_path: Path
) -> None:
    """The agent's initiatePhoneCall gets a token, POSTs the call and replies with one sentence."""
    page = await open_page(browser, base_url + "/", console)
    await chat(page, "I'd like to talk about pricing", "+1 234 567 8900", "Grace")
    await expect(page.get_by_text("Calling you now on +1•••••••8900.")).to_be_visible()
    assert len(state.outbound) == 1
    sent = state.outbound[0]
    assert sent["token"] == "tok-1"
    assert sent["cookie"] is None
    assert sent["body"]["to_number"] == "+1 234 567 8900"
    assert sent["body"]["name"] == "Grace"
    assert sent["body"]["reason"] == "pricing"
    assert sent["body"]["conversation_id"].startswith("conv_sandbox_")
    assert set(sent["body"]) <= {"to_number", "name", "reason", "summary", "conversation_id"}
    assert console.lines("[Widget] Initiating phone call to:") == [
        "[Widget] Initiating phone call to: +1••••••8900"
    ]
    assert console.lines("[Widget] Call initiated successfully:") == [
        "[Widget] Call initiated successfully: CA" + "0" * 32
    ]
    status = page.locator("[data-callbridge-status-text]")
    await expect(status).to_have_text("Ringing", timeout=5000)
    await expect(status).to_have_text("Connected", timeout=5000)
    await page.screenshot(path=tmp_path / "panel-connected.png")
    await expect(status).to_have_text("Call ended (3:45)", timeout=5000)
    await page.screenshot(path=tmp_path / "panel-ended.png")
    assert console.errors == []


@pytest.mark.parametrize(
    ("first", "reason"),
    [
        ("Hi, I'd like to talk about my order refund", "my order refund"),
        ("Hello! I have a question about my invoice. It looks wrong.", "my invoice"),
        (
            "can you call me back about the broken heater in the flat that went off on Monday",
            "the broken heater in the flat that went…",
        ),
    ],
)
async def test_stand_in_chat_passes_on_a_short_reason(
    browser: Browser, base_url: str, state: FakeState, console: ConsoleLog, first: str, reason: str
) -> None:
    """The stand-in chat's reason is a short phrase from the first message (greeting and
    lead-in dropped, first sentence, at most eight words), not the whole message."""
    page = await open_page(browser, base_url + "/", console)
    await chat(page, first, "+1 234 567 8900", "Grace")
    await expect(page.get_by_text("Calling you now on")).to_be_visible()
    assert state.outbound[0]["body"]["reason"] == reason
    assert console.errors == []


async def test_client_tool_returns_server_error_message(
    browser: Browser, base_url: str, state: FakeState, console: ConsoleLog
) -> None:
    """A refused call request makes the tool return the server's error.message, not throw."""
    state.outbound_error = (
        429,
        {
            "success": False,
            "error": {"code": "rate_limited", "message": "We can't call this number right now."},
        },
        {"Retry-After": "600"},
    )
    page = await open_page(browser, base_url + "/", console)
    await chat(page, "+1 234 567 8900", "skip")
    await expect(page.get_by_text("We can't call this number right now.")).to_be_visible()
    assert await page.locator("callbridge-status").count() == 0
    assert console.errors_except("status of 429") == []


async def test_client_tool_rejects_non_numbers_without_a_request(
    browser: Browser, base_url: str, state: FakeState, console: ConsoleLog
) -> None:
    """Something that can't be a phone number is answered locally; nothing is sent."""
    page = await open_page(browser, base_url + "/", console)
    result = await page.evaluate(
        "window.callbridge.initiatePhoneCall({phoneNumber: 'call me maybe'})"
    )
    assert "whole phone number" in result
    assert state.sessions == 0 and state.outbound == []


async def test_listener_keeps_other_tools_and_wraps_on_connect(
    browser: Browser, base_url: str, console: ConsoleLog
) -> None:
    """Our listener adds initiatePhoneCall beside existing tools and chains onConnect."""
    page = await open_page(browser, base_url + "/", console)
    result = await page.evaluate(
        """() => {
          const el = document.createElement('div');
          document.body.append(el);
          let seen = null;
          el.addEventListener('elevenlabs-convai:call', (e) => {
            e.detail.config.clientTools = { redirectToExternalURL: () => 'ok' };
          });
          const config = { onConnect: ({conversationId}) => { seen = conversationId; } };
          el.dispatchEvent(new CustomEvent('elevenlabs-convai:call',
            {bubbles: true, composed: true, detail: {config}}));
          config.onConnect({conversationId: 'conv_abc'});
          return {
            tools: Object.keys(config.clientTools).sort(),
            seen,
            stored: sessionStorage.getItem('callbridge.conversation'),
          };
        }"""
    )
    assert result == {
        "tools": ["initiatePhoneCall", "redirectToExternalURL"],
        "seen": "conv_abc",
        "stored": "conv_abc",
    }


async def test_form_validates_and_announces_errors(
    browser: Browser, base_url: str, state: FakeState, console: ConsoleLog, tmp_path: Path
) -> None:
    """An empty or malformed number is refused in place: alert text, aria-invalid, focus."""
    page = await open_page(browser, base_url + "/", console)
    await page.get_by_role("button", name="Call me now").click()
    alert = page.get_by_role("alert")
    await expect(alert).to_have_text("Please enter your phone number.")
    phone = page.get_by_label("Phone number")
    await expect(phone).to_be_focused()
    await expect(phone).to_have_attribute("aria-invalid", "true")
    await phone.fill("12ab")
    await page.get_by_role("button", name="Call me now").click()
    await expect(alert).to_contain_text("whole phone number")
    await page.screenshot(path=tmp_path / "form-error.png")
    assert state.outbound == []
    assert console.errors == []


async def test_form_shows_server_error_message(
    browser: Browser, base_url: str, state: FakeState, console: ConsoleLog
) -> None:
    """The server's error.message is shown in the form's alert region."""
    state.outbound_error = (
        422,
        {
            "success": False,
            "error": {
                "code": "country_not_allowed",
                "message": "We only call numbers in the US and Canada.",
            },
        },
        {},
    )
    page = await open_page(browser, base_url + "/", console)
    await page.get_by_label("Phone number").fill("+44 20 7946 0958")
    await page.get_by_role("button", name="Call me now").click()
    await expect(page.get_by_role("alert")).to_have_text(
        "We only call numbers in the US and Canada."
    )
    await expect(page.get_by_label("Phone number")).to_be_focused()
    assert console.errors_except("status of 422") == []


async def test_form_by_keyboard_on_a_phone_sized_screen(
    browser: Browser, base_url: str, state: FakeState, console: ConsoleLog, tmp_path: Path
) -> None:
    """On a 390 px screen the form is filled and sent with the keyboard alone."""
    page = await open_page(
        browser,
        base_url + "/",
        console,
        viewport={"width": 390, "height": 844},
        is_mobile=True,
        has_touch=True,
    )
    await page.screenshot(path=tmp_path / "contact-mobile.png", full_page=True)
    await page.get_by_label("Phone number").focus()
    await page.keyboard.type("+1 234 567 8900")
    await page.keyboard.press("Tab")
    await page.keyboard.type("Grace")
    await page.keyboard.press("Tab")
    await page.keyboard.type("Billing question")
    # Past "When should we call?" (left at Now) and "Try again if I miss it" to the button.
    for _ in range(3):
        await page.keyboard.press("Tab")
    await page.keyboard.press("Enter")
    await expect(page.locator("[data-callbridge-success]")).to_contain_text(
        "Calling you now on +1 234 567 8900"
    )
    assert state.outbound[0]["body"] == {
        "to_number": "+1 234 567 8900",
        "name": "Grace",
        "reason": "Billing question",
    }
    await expect(page.locator("[data-callbridge-status-text]")).to_have_text(
        "Connected", timeout=5000
    )
    await page.screenshot(path=tmp_path / "contact-mobile-call.png")
    scroll_width = await page.evaluate("document.documentElement.scrollWidth")
    assert scroll_width <= 390
    assert console.errors == []


async def test_panel_survives_moving_to_another_page(
    browser: Browser, base_url: str, state: FakeState, console: ConsoleLog
) -> None:
    """The status panel picks the call up again on another page of the same site."""
    state.script = [Step(0.3, "ringing"), Step(2.5, "in-progress"), Step(3.5, "completed", 62)]
    page = await open_page(browser, base_url + "/", console)
    await page.get_by_label("Phone number").fill("+1 234 567 8900")
    await page.get_by_role("button", name="Call me now").click()
    await expect(page.locator("[data-callbridge-status-text]")).to_have_text(
        "Ringing", timeout=5000
    )
    await page.goto(base_url + "/about")
    status = page.locator("[data-callbridge-status-text]")
    await expect(status).to_have_text("Ringing")
    await expect(status).to_have_text("Call ended (1:02)", timeout=8000)
    stored = json.loads(await page.evaluate("sessionStorage.getItem('callbridge.call')"))
    assert stored["status"] == "completed"
    await page.get_by_role("button", name="Hide call status").click()
    await expect(status).to_be_hidden()
    assert await page.evaluate("sessionStorage.getItem('callbridge.call')") is None
    assert console.errors == []


async def test_panel_polls_when_the_event_stream_fails(
    browser: Browser, base_url: str, state: FakeState, console: ConsoleLog
) -> None:
    """With the SSE stream refused, the panel still follows the call by polling."""
    state.sse_broken = True
    state.script = [Step(0.2, "ringing"), Step(0.5, "failed")]
    state.failure = {"code": "provider_error", "message": "The phone network refused the call."}
    page = await open_page(browser, base_url + "/", console)
    await page.get_by_label("Phone number").fill("+1 234 567 8900")
    await page.get_by_role("button", name="Call me now").click()
    status = page.locator("[data-callbridge-status-text]")
    await expect(status).to_have_text("The phone network refused the call.", timeout=10000)
    assert state.polls >= 1
    # The browser logs a failed EventSource connection as a console error; nothing else.
    assert console.errors_except("status of 503", "/events") == []
