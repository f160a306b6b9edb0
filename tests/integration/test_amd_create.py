"""What calls.create sends Twilio for answering machine detection, read off the wire."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

import httpx

from callbridge.adapters.twilio.calls import TwilioCalls
from callbridge.bootstrap import _amd
from callbridge.ports import CreateCallRequest, MachineDetection
from callbridge.sandbox.twilio.emulator import TwilioEmulator
from callbridge.settings import load_settings
from tests.support.server import serve

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
TOKEN = "amd-create-token"


def test_knobs_left_at_twilios_defaults_are_not_sent() -> None:
    """The AMD settings default to Twilio's values, and only a changed one is passed on;
    the mode follows CALLBRIDGE_VOICEMAIL."""
    default = _amd(load_settings(_env_file=None))
    assert default.mode == "DetectMessageEnd"
    assert (default.timeout_s, default.speech_threshold_ms) == (None, None)
    assert (default.speech_end_threshold_ms, default.silence_timeout_ms) == (None, None)
    changed = _amd(load_settings(_env_file=None, voicemail="hangup", amd_timeout=12))
    assert changed.mode == "Enable" and changed.timeout_s == 12


async def test_the_create_request_carries_async_amd() -> None:
    """twilio-python sends MachineDetection, AsyncAmd=true, the callback and its method,
    and the knobs that were set, as form fields of POST Calls.json."""
    emulator = TwilioEmulator(account_sid=ACCOUNT_SID, auth_token=TOKEN, callee_script="busy")
    forms: list[dict[str, list[str]]] = []

    async def capture(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].endswith("/Calls.json"):
            messages, body, more = [], b"", True
            while more:
                message = await receive()
                messages.append(message)
                body += message.get("body", b"")
                more = message.get("more_body", False)
            forms.append(parse_qs(body.decode()))
            replay = iter(messages)

            async def again() -> Any:
                return next(replay)

            await emulator.asgi_app(scope, again, send)
            return
        await emulator.asgi_app(scope, receive, send)

    async with serve(capture) as base_url, httpx.AsyncClient(timeout=10) as http:
        await emulator.start()
        try:
            calls = TwilioCalls(
                account_sid=ACCOUNT_SID, auth_token=TOKEN, api_base_url=base_url, http=http
            )
            placed = await calls.create_call(
                CreateCallRequest(
                    to="+12025550160",
                    from_="+12025550100",
                    url="https://calls.example.com/api/call/twiml?call_id=c1",
                    status_callback="https://calls.example.com/api/call/status?call_id=c1",
                    timeout=20,
                    time_limit=600,
                    machine_detection=MachineDetection(
                        mode="DetectMessageEnd",
                        status_callback="https://calls.example.com/api/call/amd?call_id=c1",
                        speech_threshold_ms=1800,
                    ),
                )
            )
            await emulator.wait_for_end(placed.sid, 10)
        finally:
            await emulator.aclose()
    [form] = forms
    assert form["MachineDetection"] == ["DetectMessageEnd"]
    assert form["AsyncAmd"] == ["true"]
    assert form["AsyncAmdStatusCallback"] == ["https://calls.example.com/api/call/amd?call_id=c1"]
    assert form["AsyncAmdStatusCallbackMethod"] == ["POST"]
    assert form["MachineDetectionSpeechThreshold"] == ["1800"]
    for unset in (
        "MachineDetectionTimeout",
        "MachineDetectionSpeechEndThreshold",
        "MachineDetectionSilenceTimeout",
    ):
        assert unset not in form
