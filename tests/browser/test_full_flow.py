"""End to end in a browser against the whole app in the sandbox (both emulators mounted).

Runs against ``tests.support.app.running_sandbox``: a real uvicorn on loopback. The sandbox
callee is scripted with ``CALLBRIDGE_SANDBOX_CALLEE`` unless a sandbox phone page is open,
which then takes precedence.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from playwright.async_api import Browser, BrowserContext, Page, expect

from tests.browser.conftest import ConsoleLog
from tests.support.server import free_port, serve

pytestmark = pytest.mark.browser

_APP = Path(__file__).resolve().parents[1] / "support" / "app.py"
if not _APP.exists():
    pytest.skip("tests/support/app.py (running_sandbox) is not there yet", allow_module_level=True)

running_sandbox: Callable[..., AbstractAsyncContextManager[Any]] = importlib.import_module(
    "tests.support.app"
).running_sandbox

NUMBER = "+1 201 555 0123"  # libphonenumber's example US number: valid by definition
BASE_ENV = {"CALLBRIDGE_ALLOWED_COUNTRIES": "US,CA,GB"}
STATUS = "[data-callbridge-status-text]"


def env(**extra: str) -> dict[str, str]:
    return {**BASE_ENV, **extra}


async def new_page(browser: Browser, console: ConsoleLog, **options: Any) -> Page:
    ctx: BrowserContext = await browser.new_context(**options)  # type: ignore[attr-defined]
    page = await ctx.new_page()
    console.watch(page)
    return page


async def ask_widget_for_call(page: Page, number: str = NUMBER, name: str = "Grace") -> None:
    await page.get_by_role("button", name="Chat with us").click()
    box = page.get_by_label("Message")
    for text in ("I'd like to talk about an order", number, name):
        await box.fill(text)
        await box.press("Enter")


@pytest.fixture
async def scripted() -> AsyncIterator[str]:
    """The sandbox with a callee who answers after 1 s, presses 1 and hangs up after 4 s."""
    callee = "answer=1,digits=1,hangup=4"
    async with running_sandbox(env(CALLBRIDGE_SANDBOX_CALLEE=callee)) as sandbox:
        yield sandbox.base_url


async def test_client_tool_places_a_call_and_the_panel_follows_it(
    browser: Browser, scripted: str, console: ConsoleLog, tmp_path: Path
) -> None:
    """The widget's tool places a real sandbox call; the panel goes calling → ended."""
    page = await new_page(browser, console)
    await page.goto(scripted + "/")
    await ask_widget_for_call(page)
    await expect(page.get_by_text("Calling you now on")).to_be_visible(timeout=10000)
    assert console.lines("[Widget] Initiating phone call to:")
    assert console.lines("[Widget] Call initiated successfully:")
    status = page.locator(STATUS)
    await expect(status).to_have_text("Connected", timeout=15000)
    await page.screenshot(path=tmp_path / "flow-connected.png")
    await expect(status).to_contain_text("Call ended (", timeout=20000)
    await page.screenshot(path=tmp_path / "flow-ended.png")
    assert console.errors == []


async def test_form_places_a_call_and_survives_navigation(
    browser: Browser, scripted: str, console: ConsoleLog
) -> None:
    """The form places a call; after moving to another page the panel still follows it."""
    page = await new_page(browser, console)
    await page.goto(scripted + "/")
    await page.get_by_label("Phone number").fill(NUMBER)
    await page.get_by_label("Your name").fill("Grace")
    await page.get_by_role("button", name="Call me now").click()
    await expect(page.locator("[data-callbridge-success]")).to_contain_text("Calling you now")
    await page.goto(scripted + "/")
    await expect(page.locator(STATUS)).to_contain_text("Call ended (", timeout=25000)
    assert console.errors == []


@pytest.mark.parametrize(
    ("callee", "text"), [("busy", "They didn't pick up"), ("no-answer", "They didn't pick up")]
)
async def test_panel_reports_busy_and_no_answer(
    browser: Browser, console: ConsoleLog, callee: str, text: str
) -> None:
    """A busy or unanswered callee ends the panel on "They didn't pick up"."""
    async with running_sandbox(env(CALLBRIDGE_SANDBOX_CALLEE=callee)) as sandbox:
        url = sandbox.base_url
        page = await new_page(browser, console)
        await page.goto(url + "/")
        await page.get_by_label("Phone number").fill(NUMBER)
        await page.get_by_role("button", name="Call me now").click()
        await expect(page.locator(STATUS)).to_have_text(text, timeout=60000)
    assert console.errors == []


async def test_sandbox_phone_rings_answers_hears_sends_dtmf_and_hangs_up(
    browser: Browser, scripted: str, console: ConsoleLog, tmp_path: Path
) -> None:
    """With the sandbox phone open, a call rings there; answered, it carries audio both ways,
    takes a keypad digit, and Hang up ends it for the visitor's panel too."""
    phone = await new_page(browser, console, viewport={"width": 1000, "height": 1000})
    await phone.goto(scripted + "/sandbox/phone")
    await expect(phone.locator("[data-phone-line-text]")).to_contain_text("On the line")
    visitor = await phone.context.new_page()
    console.watch(visitor)
    await visitor.goto(scripted + "/")
    await visitor.get_by_label("Phone number").fill(NUMBER)
    await visitor.get_by_role("button", name="Call me now").click()

    answer = phone.get_by_role("button", name="Answer")
    await expect(answer).to_be_visible(timeout=15000)
    await expect(phone.locator("[data-phone-to]")).not_to_be_empty()
    await phone.screenshot(path=tmp_path / "sandbox-phone-ringing.png")
    await answer.click()
    await expect(phone.locator("[data-phone-state]")).to_have_text("Connected")
    await phone.get_by_role("button", name="1", exact=True).click()  # the consent gate
    await phone.wait_for_function("() => window.__phone.receivedFrames >= 50", timeout=20000)
    await phone.wait_for_function("() => window.__phone.nonSilentSamples > 800", timeout=20000)
    await phone.wait_for_function("() => window.__phone.sentFrames >= 50", timeout=10000)
    await expect(visitor.locator(STATUS)).to_have_text("Connected", timeout=10000)
    await phone.screenshot(path=tmp_path / "sandbox-phone-in-call.png")
    await phone.get_by_role("button", name="Hang up").click()
    await expect(phone.locator("[data-phone-state]")).to_contain_text("ended", timeout=10000)
    await expect(visitor.locator(STATUS)).to_contain_text("Call ended (", timeout=15000)
    captions = await phone.evaluate("window.__phone.captions")
    assert captions, "the greeting/disclosure <Say> should show as a caption"
    assert console.errors == []


def host_site(callbridge: str) -> FastAPI:
    """Another website embedding the stand-in widget and callbridge's /widget.js."""
    app = FastAPI()

    @app.get("/")
    async def home() -> HTMLResponse:
        return HTMLResponse(
            "<!doctype html><html lang=en><head><title>Acme</title>"
            '<link rel=icon href="data:,"></head><body><h1>Acme</h1>'
            '<elevenlabs-convai agent-id="agent_acme"></elevenlabs-convai>'
            f'<script src="{callbridge}/static/sandbox-widget.js"></script>'
            f'<script src="{callbridge}/widget.js"></script></body></html>'
        )

    return app


async def test_widget_js_works_from_an_allowed_origin_and_not_from_another(
    browser: Browser, console: ConsoleLog, tmp_path: Path
) -> None:
    """From an allowed origin on another port the embed places a call; from another origin
    the call request is refused and the agent is told so."""
    ok_port, bad_port = free_port(), free_port()
    allowed, refused = f"http://127.0.0.1:{ok_port}", f"http://127.0.0.1:{bad_port}"
    async with running_sandbox(
        env(
            CALLBRIDGE_ALLOWED_ORIGINS=allowed,
            CALLBRIDGE_SANDBOX_CALLEE="answer=1,digits=1,hangup=2",
        )
    ) as sandbox:
        url = sandbox.base_url
        async with serve(host_site(url), ok_port), serve(host_site(url), bad_port):
            page = await new_page(browser, console)
            await page.goto(allowed + "/")
            await ask_widget_for_call(page)
            await expect(page.get_by_text("Calling you now on")).to_be_visible(timeout=10000)
            await expect(page.locator(STATUS)).to_contain_text("Call ended (", timeout=25000)
            await page.screenshot(path=tmp_path / "embed-full-flow.png")
            assert console.errors == []

            other = ConsoleLog()
            page2 = await new_page(browser, other)
            await page2.goto(refused + "/")
            await ask_widget_for_call(page2)
            reply = page2.locator(".msg.agent").last
            await expect(reply).not_to_have_text("…", timeout=10000)
            assert "Calling you now" not in (await reply.text_content() or "")
            assert await page2.locator("callbridge-status").count() == 0


async def test_no_console_errors_on_any_page(
    browser: Browser, scripted: str, console: ConsoleLog
) -> None:
    """The contact page, the sandbox phone and /widget.js load with no console error."""
    page = await new_page(browser, console)
    for path in ("/", "/sandbox/phone", "/"):
        await page.goto(scripted + path)
        await page.wait_for_load_state("networkidle")
    await page.get_by_role("button", name="Chat with us").click()
    await expect(page.get_by_label("Message")).to_be_focused()
    assert console.errors == []
