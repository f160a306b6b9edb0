"""``/widget.js`` on another site: the client tool and status panel talk to callbridge
cross-origin, with absolute URLs and no credentials (fake call API, fake_api.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from playwright.async_api import Browser, Page, expect

from tests.browser.conftest import ConsoleLog
from tests.browser.fake_api import FakeState, build_fake_app
from tests.support.server import free_port, serve

pytestmark = pytest.mark.browser


def host_site(callbridge: str) -> FastAPI:
    """Another website that embeds the widget stand-in and callbridge's /widget.js."""
    app = FastAPI()

    @app.get("/")
    async def home() -> HTMLResponse:
        return HTMLResponse(
            "<!doctype html><html lang=en><head><title>Acme Plumbing</title>"
            '<link rel=icon href="data:,"></head><body>'
            "<h1>Acme Plumbing</h1><p>We fix leaks.</p>"
            '<elevenlabs-convai agent-id="agent_acme"></elevenlabs-convai>'
            f'<script src="{callbridge}/static/sandbox-widget.js"></script>'
            f'<script src="{callbridge}/widget.js" async></script>'
            "</body></html>"
        )

    return app


@pytest.fixture
async def sites(state: FakeState) -> AsyncIterator[tuple[str, str, str]]:
    """(callbridge, allowed host site, refused host site) base URLs."""
    cb_port, ok_port, bad_port = free_port(), free_port(), free_port()
    callbridge = f"http://127.0.0.1:{cb_port}"
    allowed = f"http://127.0.0.1:{ok_port}"
    refused = f"http://127.0.0.1:{bad_port}"
    app = build_fake_app(state, public_base_url=callbridge, cors_origins=(allowed,))
    async with (
        serve(app, cb_port),
        serve(host_site(callbridge), ok_port),
        serve(host_site(callbridge), bad_port),
    ):
        yield callbridge, allowed, refused


async def chat_for_call(page: Page) -> None:
    await page.get_by_role("button", name="Chat with us").click()
    box = page.get_by_label("Message")
    for text in ("+1 234 567 8900", "Grace"):
        await box.fill(text)
        await box.press("Enter")


async def test_widget_js_bakes_in_the_public_base_url(
    sites: tuple[str, str, str], browser: Browser
) -> None:
    """/widget.js is JavaScript with the configured public origin baked in."""
    callbridge, _, _ = sites
    ctx = await browser.new_context()  # type: ignore[attr-defined]
    response = await ctx.request.get(callbridge + "/widget.js")
    assert response.headers["content-type"].startswith("application/javascript")
    body = await response.text()
    assert f'"baseUrl": "{callbridge}"' in body
    assert "/*CALLBRIDGE_CONFIG*/" not in body


async def test_widget_js_on_an_allowed_site_places_a_call(
    sites: tuple[str, str, str],
    browser: Browser,
    state: FakeState,
    console: ConsoleLog,
    tmp_path: Path,
) -> None:
    """On another origin the tool calls callbridge absolutely, without cookies, and the
    status panel follows the call there."""
    callbridge, allowed, _ = sites
    ctx = await browser.new_context()  # type: ignore[attr-defined]
    page: Page = await ctx.new_page()
    console.watch(page)
    await page.goto(allowed + "/")
    assert await page.evaluate("window.callbridge.baseUrl") == callbridge
    await chat_for_call(page)
    await expect(page.get_by_text("Calling you now on +1•••••••8900.")).to_be_visible()
    assert state.outbound[0]["origin"] == allowed
    assert state.outbound[0]["cookie"] is None
    await expect(page.locator("[data-callbridge-status-text]")).to_have_text(
        "Call ended (3:45)", timeout=8000
    )
    await page.screenshot(path=tmp_path / "embed-allowed.png")
    assert console.errors == []


async def test_widget_js_on_a_refused_site_tells_the_agent(
    sites: tuple[str, str, str], browser: Browser, state: FakeState, console: ConsoleLog
) -> None:
    """From an origin callbridge doesn't allow, the browser blocks the call request and the
    agent hears that the service could not be reached."""
    _, _, refused = sites
    ctx = await browser.new_context()  # type: ignore[attr-defined]
    page: Page = await ctx.new_page()
    console.watch(page)
    await page.goto(refused + "/")
    await chat_for_call(page)
    await expect(page.get_by_text("I couldn't reach the call service.")).to_be_visible()
    assert state.outbound == []
    assert all("CORS" in e or "Failed to load resource" in e for e in console.errors)
