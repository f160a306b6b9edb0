"""Browser fixtures: Debian's chromium driven by Playwright's async API, and a console log."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from tests.browser.fake_api import FakeState, build_fake_app
from tests.support.need import missing
from tests.support.server import free_port, serve

CHROMIUM = os.environ.get("CALLBRIDGE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
]


@dataclass
class ConsoleLog:
    """Everything a page printed, and every uncaught error it raised."""

    messages: list[tuple[str, str]] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)

    @property
    def errors(self) -> list[str]:
        """Console errors and uncaught exceptions, CSP violations included."""
        return [text for kind, text in self.messages if kind == "error"] + self.page_errors

    def errors_except(self, *expected: str) -> list[str]:
        """Errors other than those containing one of ``expected`` (e.g. an HTTP status the
        test provoked: chromium logs every 4xx/5xx fetch as "Failed to load resource")."""
        return [e for e in self.errors if not any(x in e for x in expected)]

    def lines(self, prefix: str) -> list[str]:
        """Console lines (any level) that start with ``prefix``."""
        return [text for _, text in self.messages if text.startswith(prefix)]

    def watch(self, page: object) -> None:
        """Start collecting from a Playwright page."""
        page.on("console", lambda msg: self.messages.append((msg.type, msg.text)))  # type: ignore[attr-defined]
        page.on("pageerror", lambda exc: self.page_errors.append(str(exc)))  # type: ignore[attr-defined]


@pytest.fixture
def chromium() -> str:
    """Path of Debian's chromium; missing, the test fails in CI and is skipped elsewhere."""
    if not os.path.exists(CHROMIUM):
        missing(f"{CHROMIUM} is not installed (apt-get install -y chromium)")
    return CHROMIUM


def _microphone_wav(path: str) -> str:
    """A fake microphone: a quiet room with a short spoken-level tone every 6 s.

    Chromium's own fake device beeps constantly, which the demo agent (rightly)
    takes for a caller talking over it; a person mostly listens.
    """
    import math
    import struct
    import wave

    rate = 48000
    frames = bytearray()
    for i in range(rate * 6):
        t = i / rate
        loud = 4.0 <= t < 4.8
        sample = int(9000 * math.sin(2 * math.pi * 300 * t)) if loud else 0
        frames += struct.pack("<h", sample)
    with wave.open(path, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(bytes(frames))
    return path


@pytest.fixture
async def browser(chromium: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[object]:
    """A headless chromium driven by Playwright's async API, with a mostly quiet microphone."""
    from playwright.async_api import async_playwright

    wav = _microphone_wav(str(tmp_path_factory.mktemp("mic") / "microphone.wav"))
    async with async_playwright() as pw:
        instance = await pw.chromium.launch(
            executable_path=chromium,
            args=[*CHROMIUM_ARGS, f"--use-file-for-fake-audio-capture={wav}"],
            headless=True,
        )
        try:
            yield instance
        finally:
            await instance.close()


@pytest.fixture
def console() -> ConsoleLog:
    """A fresh console log; call ``console.watch(page)`` on each page."""
    return ConsoleLog()


@pytest.fixture
def state() -> FakeState:
    """The fake API's state, for a test to script and inspect."""
    return FakeState()


@pytest.fixture
async def base_url(state: FakeState) -> AsyncIterator[str]:
    """The fake API (pages and JSON endpoints) on real uvicorn, over ``state``."""
    port = free_port()
    async with serve(
        build_fake_app(state, public_base_url=f"http://127.0.0.1:{port}"), port
    ) as url:
        yield url
