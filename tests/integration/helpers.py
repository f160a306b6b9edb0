"""Helpers shared by the integration tests: signed Twilio requests, waiting, counting rows."""

from __future__ import annotations

import asyncio
import time
import wave
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import httpx
import numpy as np

from tests.support.app import Sandbox, twilio_signature
from tests.support.wait import wait_until

#: Fictional numbers (NANP 555-01xx) and the documented example number.
DOCUMENTED = "+1 234 567 8900"
DOCUMENTED_E164 = "+12345678900"
VISITOR = "+12025550142"
OWNER = "+12025550187"


async def signed_post(
    sb: Sandbox,
    path: str,
    params: Mapping[str, str],
    *,
    sign: bool = True,
    forged: str | None = None,
) -> httpx.Response:
    """POST a form to ``path`` the way Twilio does, signed over the public URL."""
    url = f"{sb.container.public_base_url}{path}"
    headers = {}
    if forged is not None:
        headers["X-Twilio-Signature"] = forged
    elif sign:
        headers["X-Twilio-Signature"] = twilio_signature(sb, url, params)
    return await sb.http.post(path, data=dict(params), headers=headers)


async def wait_for_status(
    sb: Sandbox,
    call_id: str,
    statuses: set[str],
    timeout: float = 15.0,  # noqa: ASYNC109 - a plain deadline reads best in tests
) -> Any:
    """Wait until our stored call reaches one of ``statuses``; return it."""
    deadline = time.monotonic() + timeout
    while True:
        call = await sb.container.store.get_call(call_id)
        if call is not None and call.status.value in statuses:
            return call
        if time.monotonic() > deadline:
            raise TimeoutError(f"call is {call.status.value if call else None}, not {statuses}")
        await asyncio.sleep(0.05)


async def place(sb: Sandbox, number: str = VISITOR, **fields: Any) -> dict[str, Any]:
    """Request a call through the API; assert it was accepted; return the answer."""
    response = await sb.request_call(number, **fields)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def ringing_call(sb: Sandbox, number: str = VISITOR) -> dict[str, Any]:
    """Place a call whose callee lets it ring; return once both early callbacks were answered."""
    body = await place(sb, number)
    sim = sb.twilio.calls[body["call_sid"]]
    await wait_until(lambda: len(sim.webhooks) >= 2)
    return body


async def finished(
    sb: Sandbox,
    body: Mapping[str, Any],
    timeout: float = 20.0,  # noqa: ASYNC109 - a plain deadline reads best in tests
) -> Any:
    """Wait until the emulated call ended and our record is terminal; return the SimCall."""
    sim = await sb.twilio.wait_for_end(body["call_sid"], timeout)
    await wait_for_status(
        sb,
        body["call_id"],
        {"completed", "busy", "no-answer", "canceled", "failed", "agent_failed"},
    )
    return sim


def twiml(document: str) -> ElementTree.Element:
    """Parse a TwiML document."""
    return ElementTree.fromstring(document)  # noqa: S314 - our own server's output


def speech_wav(folder: Path, seconds: float = 0.8) -> Path:
    """A short, loud WAV the scripted callee "says" (independent of espeak-ng being installed)."""
    rate = 8000
    t = np.arange(int(seconds * rate)) / rate
    tone = (np.sin(2 * np.pi * 440.0 * t) * 9000).astype("<i2")
    path = folder / "callee-speech.wav"
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(tone.tobytes())
    return path
