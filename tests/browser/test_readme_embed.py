"""The README's embed snippets, as printed, on another site against the sandbox."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from playwright.async_api import Browser, Page, Route, expect

from tests.browser.conftest import ConsoleLog
from tests.support.app import running_sandbox
from tests.support.server import free_port, serve

pytestmark = pytest.mark.browser

README = Path(__file__).resolve().parents[2] / "README.md"
NUMBER = "+1 201 555 0123"  # libphonenumber's example US number: valid by definition


def readme_snippets() -> list[str]:
    """The html blocks of the README's "Embed on another site" section, in order."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Embed on another site") :]
    section = section[: section.index("\n## ", 5)]
    return re.findall(r"```html\n(.*?)```", section, flags=re.S)


def host_site(html: str) -> FastAPI:
    app = FastAPI()

    @app.get("/")
    async def home() -> HTMLResponse:
        return HTMLResponse(
            "<!doctype html><html lang=en><head><title>Acme</title>"
            f'<link rel=icon href="data:,"></head><body><h1>Acme</h1>{html}</body></html>'
        )

    return app


async def test_the_readme_snippets_work_as_printed_in_the_sandbox(
    browser: Browser, console: ConsoleLog, tmp_path: Path
) -> None:
    """With the sandbox's address in place of calls.example.com and the CDN unreachable,
    the README's widget snippet shows a chat that places a call, and its form snippet
    (``data-callbridge-form``) places one too."""
    widget, form = readme_snippets()
    port = free_port()
    site = f"http://127.0.0.1:{port}"
    env = {
        "CALLBRIDGE_ALLOWED_COUNTRIES": "US,CA",
        "CALLBRIDGE_ALLOWED_ORIGINS": site,
        "CALLBRIDGE_SANDBOX_CALLEE": "answer=1,digits=1,hangup=2",
    }
    async with running_sandbox(env) as sandbox:
        html = widget.replace("https://calls.example.com", sandbox.base_url) + form
        async with serve(host_site(html), port):
            context = await browser.new_context(viewport={"width": 1280, "height": 800})  # type: ignore[attr-defined]

            async def unreachable(route: Route) -> None:
                await route.abort("namenotresolved")

            await context.route("https://unpkg.com/**", unreachable)
            page: Page = await context.new_page()
            console.watch(page)
            await page.goto(site + "/")
            await page.get_by_role("button", name="Chat with us").click()
            box = page.get_by_label("Message")
            for text in ("I'd like to talk about an order", NUMBER, "Grace"):
                await box.fill(text)
                await box.press("Enter")
            await expect(page.get_by_text("Calling you now on")).to_be_visible(timeout=10000)
            await page.screenshot(path=tmp_path / "readme-embed.png")
            await expect(page.locator("[data-callbridge-status-text]")).to_contain_text(
                "Call ended (", timeout=25000
            )
            await page.get_by_role("button", name="Minimise chat").click()
            await page.get_by_label("Phone number").fill(NUMBER)
            await page.get_by_role("button", name="Call me now").click()
            await expect(page.locator("[data-callbridge-success]")).to_contain_text(
                "Calling you now"
            )
            await expect(page.locator("[data-callbridge-status-text]")).to_contain_text(
                "Call ended (", timeout=25000
            )
            await context.close()  # before the server stops under an open event stream
    assert console.errors_except("unpkg.com", "ERR_NAME_NOT_RESOLVED") == []
