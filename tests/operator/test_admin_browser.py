"""The operator's pages in a real Chromium: sign-in, live list, a call in full, charts, sign-out."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Page, expect

from tests.browser.conftest import ConsoleLog
from tests.operator.conftest import PASSWORD, VISITOR, admin_sandbox, finished_call

pytestmark = pytest.mark.browser


async def _sign_in(page: Page, base: str, password: str = PASSWORD) -> None:
    await page.goto(f"{base}/admin")
    await expect(page).to_have_url(re.compile(r"/admin/login\?next="))
    await page.get_by_label("Password").fill(password)
    await page.get_by_test_id("login-submit").click()


async def test_operator_pages_end_to_end(browser: Any, console: ConsoleLog, tmp_path: Path) -> None:
    """Sign in, watch a new call appear in the list, open a call with its timeline and
    transcript, reveal its number, see the charts, and sign out."""
    shots = tmp_path / "shots"
    shots.mkdir()
    async with admin_sandbox(tmp_path) as sb:
        first = await finished_call(sb, name="Ada Lovelace", reason="A question about my order")
        await sb.request_call("+44 20 7946 0958")  # refused: a refusal for the chart
        context = await browser.new_context(viewport={"width": 1280, "height": 860})
        page = await context.new_page()
        console.watch(page)

        await page.goto(f"{sb.base_url}/admin/login")
        await page.screenshot(path=shots / "login.png")
        await _sign_in(page, sb.base_url, "not it")
        await expect(page.get_by_test_id("login-error")).to_have_text("That password is not right.")
        await page.get_by_label("Password").fill(PASSWORD)
        await page.get_by_test_id("login-submit").click()
        await expect(page).to_have_url(f"{sb.base_url}/admin")

        rows = page.locator("#call-rows tr[data-call-id]")
        await expect(rows).to_have_count(1)
        await expect(rows.first).to_contain_text("completed")
        assert VISITOR not in await page.content()
        second = await sb.request_call(VISITOR, name="Grace")
        assert second.status_code == 200
        await expect(rows).to_have_count(2, timeout=15_000)  # the list refreshed by itself
        await expect(page.get_by_test_id("live")).to_contain_text("updated")
        await page.screenshot(path=shots / "calls.png")

        await page.locator(f"tr[data-call-id='{first['call_id']}'] a").click()
        await expect(page.get_by_test_id("call-status")).to_have_text("completed")
        timeline = page.get_by_test_id("timeline").locator("li")
        assert await timeline.count() >= 4
        await expect(page.get_by_test_id("timeline")).to_contain_text("in-progress")
        await expect(page.get_by_test_id("transcript").locator("li").first).to_be_visible()
        await expect(page.get_by_test_id("context")).to_contain_text("Ada Lovelace")
        number = page.get_by_test_id("call-number")
        await expect(number).not_to_have_text(VISITOR)
        await page.screenshot(path=shots / "call.png", full_page=True)
        await page.get_by_test_id("reveal").click()
        await expect(page.get_by_test_id("call-number")).to_have_text(VISITOR)

        await page.get_by_role("link", name="Overview").click()
        for chart in ("chart-days", "chart-rate", "chart-refusals", "chart-status"):
            await expect(page.get_by_test_id(chart)).to_be_visible()
        assert await page.locator("[data-testid=chart-days] rect").count() >= 14
        await expect(page.get_by_test_id("chart-refusals")).to_contain_text("country")
        await page.screenshot(path=shots / "overview.png", full_page=True)

        await page.get_by_role("link", name="Settings").click()
        await expect(page.get_by_test_id("settings-table")).to_contain_text(
            "CALLBRIDGE_ADMIN_PASSWORD"
        )
        assert PASSWORD not in await page.content()
        await page.screenshot(path=shots / "settings.png")
        await page.get_by_role("link", name="Do not call").click()
        await expect(page.get_by_test_id("dnc-table")).to_be_visible()

        phone = await browser.new_context(viewport={"width": 390, "height": 844})
        mobile = await phone.new_page()
        console.watch(mobile)
        await phone.add_cookies(await context.cookies())
        await mobile.goto(f"{sb.base_url}/admin/calls/{first['call_id']}")
        await expect(mobile.get_by_test_id("transcript")).to_be_visible()
        width = await mobile.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"the call page scrolls sideways on a phone ({width}px)"
        await mobile.screenshot(path=shots / "call-mobile.png", full_page=True)
        await mobile.goto(f"{sb.base_url}/admin")
        await mobile.screenshot(path=shots / "calls-mobile.png")
        await phone.close()

        await page.get_by_test_id("logout").click()
        await expect(page).to_have_url(re.compile(r"/admin/login$"))
        await page.goto(f"{sb.base_url}/admin")
        await expect(page).to_have_url(re.compile(r"/admin/login\?next="))
        await context.close()
    assert console.errors_except("401") == []


async def test_failed_logins_are_rate_limited_in_the_browser(
    browser: Any, console: ConsoleLog, tmp_path: Path
) -> None:
    """After five wrong passwords the form says to wait, even for the right password."""
    async with admin_sandbox(tmp_path) as sb:
        context = await browser.new_context()
        page = await context.new_page()
        console.watch(page)
        for _ in range(5):
            await _sign_in(page, sb.base_url, "wrong")
            await expect(page.get_by_test_id("login-error")).to_have_text(
                "That password is not right."
            )
        await _sign_in(page, sb.base_url, PASSWORD)
        await expect(page.get_by_test_id("login-error")).to_contain_text("Too many failed sign-ins")
        await page.screenshot(path=tmp_path / "rate-limited.png")
        await context.close()
    assert console.errors_except("401", "429") == []
