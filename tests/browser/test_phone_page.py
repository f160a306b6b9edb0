"""The sandbox phone page against a fake phone hub (fake_api.py) in a real browser."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, expect

from tests.browser.conftest import ConsoleLog
from tests.browser.fake_api import FakeState

pytestmark = pytest.mark.browser


async def new_page(browser: Browser, console: ConsoleLog) -> Page:
    ctx = await browser.new_context(viewport={"width": 1100, "height": 1000})  # type: ignore[attr-defined]
    page: Page = await ctx.new_page()
    console.watch(page)
    return page


async def test_phone_rings_answers_streams_audio_dtmf_and_hangs_up(
    browser: Browser, base_url: str, state: FakeState, console: ConsoleLog, tmp_path: Path
) -> None:
    """Ring → Answer → caller audio is heard, the mic goes out as 160-byte μ-law frames,
    keypad digits go out as DTMF, captions show, and Hang up ends the call."""
    page = await new_page(browser, console)
    await page.goto(base_url + "/sandbox/phone")
    answer = page.get_by_role("button", name="Answer")
    await expect(answer).to_be_visible(timeout=5000)
    await expect(page.locator("[data-phone-from]")).to_have_text("+15550001111")
    await expect(page.locator("[data-phone-to]")).to_have_text("+15550002222")
    await expect(page.get_by_role("button", name="Decline")).to_be_visible()
    await expect(answer).to_be_focused()
    await page.screenshot(path=tmp_path / "phone-ringing.png")
    await answer.click()
    await expect(page.locator("[data-phone-state]")).to_have_text("Connected")
    await page.wait_for_function("() => window.__phone.receivedFrames >= 100", timeout=5000)
    await page.wait_for_function("() => window.__phone.sentFrames >= 20", timeout=5000)
    phone = await page.evaluate("window.__phone")
    assert phone["state"] == "in-call"
    assert phone["nonSilentSamples"] > 1000
    await expect(page.get_by_text("Hello from the fake line.")).to_be_visible()
    await page.get_by_role("button", name="1", exact=True).click()
    await page.keyboard.press("#")
    await expect(page.get_by_text("You pressed 1.")).to_be_visible()
    await expect(page.get_by_text("You pressed #.")).to_be_visible()
    await page.screenshot(path=tmp_path / "phone-in-call.png")
    await page.get_by_role("button", name="Hang up").click()
    await expect(page.locator("[data-phone-state]")).to_contain_text("Call ended")
    await page.screenshot(path=tmp_path / "phone-ended.png")

    kinds = [m["type"] for m in state.phone_messages]
    assert kinds[0] == "answer"
    assert kinds[-1] == "hangup"
    assert [m["digit"] for m in state.phone_messages if m["type"] == "dtmf"] == ["1", "#"]
    frames = [base64.b64decode(m["payload"]) for m in state.phone_messages if m["type"] == "media"]
    assert len(frames) >= 20
    assert {len(f) for f in frames} == {160}
    assert console.errors == []


async def test_phone_decline(
    browser: Browser, base_url: str, state: FakeState, console: ConsoleLog
) -> None:
    """Decline sends a decline and returns the phone to its idle look."""
    page = await new_page(browser, console)
    await page.goto(base_url + "/sandbox/phone")
    await page.get_by_role("button", name="Decline").click()
    await expect(page.locator("[data-phone-state]")).to_have_text("Declined")
    await expect(page.get_by_role("button", name="Answer")).to_be_hidden()
    assert [m["type"] for m in state.phone_messages] == ["decline"]
    assert console.errors == []


async def test_worklet_mu_law_encoder_matches_the_server_codec(browser: Browser) -> None:
    """The worklet's μ-law encoder gives the same byte as callbridge.media.ulaw for every
    16-bit sample (sampled every 7)."""
    from callbridge.media.ulaw import pcm16_to_ulaw
    from callbridge.web.pages import STATIC_DIR

    source = (STATIC_DIR / "phone-worklet.js").read_text(encoding="utf-8")
    body = source[source.index("const BIAS") : source.index("class CaptureProcessor")]
    ctx = await browser.new_context()  # type: ignore[attr-defined]
    page: Page = await ctx.new_page()  # about:blank: no CSP, so new Function is allowed
    encoded = await page.evaluate(
        """(body) => {
          const encode = new Function(body + '; return encodeMuLaw;')();
          const out = [];
          for (let v = -32768; v < 32768; v += 7) out.push(encode(v / 32767));
          return out;
        }""",
        body,
    )
    samples = range(-32768, 32768, 7)
    pcm = b"".join(
        int(max(-1.0, min(1.0, v / 32767)) * 32767).to_bytes(2, "little", signed=True)
        for v in samples
    )
    assert bytes(encoded) == pcm16_to_ulaw(pcm)
