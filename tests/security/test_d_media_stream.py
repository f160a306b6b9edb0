"""security.md D: the media-stream door and the consent gate, over a real WebSocket."""

from __future__ import annotations

import json
from typing import Any

import pytest
import websockets

from callbridge.domain.call import outcome_of
from tests.security.helpers import NUMBERS, ended, twilio_signature, wait_until
from tests.support.app import running_sandbox

#: The callee answers but never presses a key; the agent is not pre-warmed.
SILENT = {"CALLBRIDGE_SANDBOX_CALLEE": "answer=0.2,hangup=8", "CALLBRIDGE_PREWARM": "false"}


def _ws_url(sb: Any) -> str:
    return "ws://" + sb.base_url.removeprefix("http://") + "/api/call/media-stream"


def _start(call_sid: str, params: dict[str, str]) -> str:
    return json.dumps(
        {
            "event": "start",
            "sequenceNumber": "1",
            "streamSid": "MZ" + "0" * 32,
            "start": {
                "accountSid": "AC" + "0" * 32,
                "streamSid": "MZ" + "0" * 32,
                "callSid": call_sid,
                "tracks": ["inbound"],
                "customParameters": params,
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
        }
    )


async def _closed_after_start(sb: Any, call_sid: str, params: dict[str, str]) -> int | None:
    """Open a correctly signed stream, send connected+start; return the close code."""
    url = _ws_url(sb)
    signature = twilio_signature(
        sb, f"{sb.container.public_base_url}/api/call/media-stream".replace("http://", "ws://")
    )
    async with websockets.connect(url, additional_headers={"X-Twilio-Signature": signature}) as ws:
        await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        await ws.send(_start(call_sid, params))
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                await ws.recv()
        return ws.close_code


async def test_d29_an_unsigned_stream_upgrade_is_refused_before_any_agent_session() -> None:
    """Upgrading to the stream path without (or with a wrong) X-Twilio-Signature is refused
    with HTTP 403 and no connection reaches the agent. (An open socket would let anyone
    drive the agent on our keys.)"""
    async with running_sandbox() as sb:
        for headers in ({}, {"X-Twilio-Signature": "Zm9yZ2Vk"}):
            with pytest.raises(websockets.InvalidStatus) as refused:
                async with websockets.connect(_ws_url(sb), additional_headers=headers):
                    pass
            assert refused.value.response.status_code == 403
        assert sb.elevenlabs.connection_attempts == 0


async def test_d30_a_start_without_a_valid_unused_token_for_our_call_is_closed() -> None:
    """A signed stream whose ``start`` has no token, a wrong token, a token already spent, or
    a CallSid that is not the call's, is closed (1008) and no agent session is opened.
    (Trusting the signature alone would bridge each of them to the agent.)"""
    async with running_sandbox(SILENT) as sb:
        response = await sb.request_call(NUMBERS[0])
        call_id, sid = response.json()["call_id"], response.json()["call_sid"]
        token = sb.container.stream_tokens.token_for(call_id)
        cases = [
            (sid, {"call_id": call_id}),
            (sid, {"call_id": call_id, "token": "0" * 40}),
            ("CA" + "9" * 32, {"call_id": call_id, "token": token}),
            (sid, {"call_id": "call_nope", "token": token}),
        ]
        for call_sid, params in cases:
            assert await _closed_after_start(sb, call_sid, params) == 1008, params
        store = sb.container.store
        digest = sb.container.stream_tokens.digest(token)
        assert await store.claim_stream(call_id, sid, digest, "MZ" + "1" * 32) is not None
        assert await _closed_after_start(sb, sid, {"call_id": call_id, "token": token}) == 1008
        assert sb.elevenlabs.connection_attempts == 0


async def test_d31_without_a_key_press_the_call_ends_and_the_agent_is_never_contacted() -> None:
    """Consent on (default): the callee hears the disclosure and 'press 1'; with no key within
    CONSENT_TIMEOUT the call ends and no agent connection is ever attempted. (Connecting
    the agent on answer would open a session.)"""
    env = {**SILENT, "CALLBRIDGE_CONSENT_TIMEOUT": "3", "CALLBRIDGE_PREWARM": "true"}
    async with running_sandbox(env) as sb:
        response = await sb.request_call(NUMBERS[0])
        call = await ended(sb, response.json()["call_id"], timeout=20)
        assert call.status.value == "completed" and call.consent == "asked"  # never answered
        assert outcome_of(call.status, call.consent) == "no_consent"
        sim = sb.twilio.calls[response.json()["call_sid"]]
        assert any("press 1" in said for said in sim.said)
        assert sb.elevenlabs.connection_attempts == 0


async def test_d35_every_call_carries_the_time_limit() -> None:
    """The call is created with Twilio's TimeLimit (default 600 s) and a ring Timeout."""
    async with running_sandbox() as sb:
        response = await sb.request_call(NUMBERS[0])
        sim = await wait_until(lambda: sb.twilio.calls.get(response.json()["call_sid"]))
        assert sim.time_limit == 600 and sim.timeout == 30
