"""The media-stream door: signed handshake, per-call token, size limit, a recorded session."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from tests.integration.helpers import (
    ringing_call,
    signed_post,
    twiml,
    wait_until,
)
from tests.support.app import Sandbox, running_sandbox, twilio_signature

_FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "twilio_media_stream.jsonl"
_RINGING = {"CALLBRIDGE_SANDBOX_CALLEE": "no-answer"}


def _stream_url(sb: Sandbox) -> str:
    return sb.base_url.replace("http://", "ws://") + "/api/call/media-stream"


def _connect(sb: Sandbox, sig: str | None = "sign") -> Any:
    url = _stream_url(sb)
    headers = {}
    if sig == "sign":
        headers["X-Twilio-Signature"] = twilio_signature(sb, url)
    elif sig is not None:
        headers["X-Twilio-Signature"] = sig
    return websockets.connect(url, additional_headers=headers, open_timeout=5)


def _start(call_sid: str, call_id: str, token: str, stream_sid: str = "MZ" + "1" * 32) -> str:
    return json.dumps(
        {
            "event": "start",
            "sequenceNumber": "1",
            "streamSid": stream_sid,
            "start": {
                "accountSid": "AC" + "0" * 32,
                "streamSid": stream_sid,
                "callSid": call_sid,
                "tracks": ["inbound"],
                "customParameters": {"call_id": call_id, "token": token},
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
        }
    )


async def _closed_code(ws: ClientConnection) -> int | None:
    try:
        async with asyncio.timeout(5):
            async for _ in ws:
                pass
    except websockets.ConnectionClosed:
        pass
    return ws.close_code


async def _stream_token(sb: Sandbox, body: dict[str, Any]) -> str:
    """The token the TwiML gives Twilio after the callee pressed 1 (a signed webhook)."""
    params = {
        "CallSid": body["call_sid"],
        "AccountSid": sb.container.account_sid,
        "CallStatus": "in-progress",
        "Digits": "1",
    }
    response = await signed_post(sb, "/api/call/twiml?step=consent", params)
    assert response.status_code == 200, response.text
    stream = twiml(response.text).find("./Connect/Stream")
    assert stream is not None
    values = {p.get("name"): p.get("value") for p in stream.findall("./Parameter")}
    return str(values["token"])


@pytest.mark.parametrize("sig", [None, "bm90IGEgc2lnbmF0dXJl", "signed-for-another-url"])
async def test_unsigned_handshakes_are_refused_before_accept(sig: str | None) -> None:
    """Without a valid X-Twilio-Signature the upgrade is refused (403) and no agent is opened."""
    async with running_sandbox() as sb:
        if sig == "signed-for-another-url":
            sig = twilio_signature(sb, "wss://evil.example/api/call/media-stream")
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with _connect(sb, sig):
                pass
        assert refused.value.response.status_code == 403
        assert sb.elevenlabs.connection_attempts == 0


@pytest.mark.parametrize("case", ["wrong_token", "unknown_call_sid", "no_token", "wrong_call_id"])
async def test_a_start_that_names_no_call_of_ours_is_closed(case: str) -> None:
    """A start with a wrong token, a stranger CallSid or no token is closed 1008; no agent."""
    async with running_sandbox({**_RINGING, "CALLBRIDGE_PREWARM": "false"}) as sb:
        body = await ringing_call(sb)
        sid, call_id, token = body["call_sid"], body["call_id"], "x" * 43
        if case == "unknown_call_sid":
            sid = "CA" + "f" * 32
            token = sb.container.stream_tokens.token_for(call_id)
        elif case == "no_token":
            token = ""
        elif case == "wrong_call_id":
            call_id = "call_" + "0" * 20
        async with _connect(sb) as ws:
            await ws.send(
                json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})
            )
            await ws.send(_start(sid, call_id, token))
            assert await _closed_code(ws) == 1008
        assert sb.elevenlabs.connection_attempts == 0
        events = [e.status for e in await sb.container.store.events(body["call_id"])]
        assert "stream_started" not in events


async def test_a_used_token_is_refused() -> None:
    """The per-call token works once: a second stream with it is closed, with no new agent."""
    async with running_sandbox({**_RINGING, "CALLBRIDGE_PREWARM": "false"}) as sb:
        body = await ringing_call(sb)
        token = await _stream_token(sb, body)
        async with _connect(sb) as first:
            await first.send(_start(body["call_sid"], body["call_id"], token))
            await wait_until(lambda: sb.elevenlabs.connection_attempts == 1)
            attempts = sb.elevenlabs.connection_attempts
            async with _connect(sb) as second:
                await second.send(
                    _start(body["call_sid"], body["call_id"], token, stream_sid="MZ" + "2" * 32)
                )
                assert await _closed_code(second) == 1008
            assert sb.elevenlabs.connection_attempts == attempts


async def test_an_oversized_message_closes_the_stream() -> None:
    """A message over 64 KiB closes the stream (and its agent session)."""
    async with running_sandbox({**_RINGING, "CALLBRIDGE_PREWARM": "false"}) as sb:
        body = await ringing_call(sb)
        token = await _stream_token(sb, body)
        async with _connect(sb) as ws:
            await ws.send(_start(body["call_sid"], body["call_id"], token))
            await wait_until(lambda: sb.elevenlabs.conversations)
            await ws.send(json.dumps({"event": "media", "media": {"payload": "A" * 70_000}}))
            assert await _closed_code(ws) in (1008, 1009)
        conversation = next(iter(sb.elevenlabs.conversations.values()))
        await wait_until(lambda: conversation.ended_at is not None, 5)
        assert conversation.closed_by == "client"


async def test_an_oversized_first_message_is_refused() -> None:
    """A message over 64 KiB before ``start`` closes the socket; no agent is opened."""
    async with running_sandbox() as sb:
        async with _connect(sb) as ws:
            await ws.send("{" + " " * 70_000 + "}")
            assert await _closed_code(ws) in (1008, 1009)
        assert sb.elevenlabs.connection_attempts == 0


async def test_a_recorded_twilio_session_is_bridged() -> None:
    """Twilio's documented message sequence (real μ-law) replayed into the door is bridged."""
    async with running_sandbox(_RINGING) as sb:
        body = await ringing_call(sb)
        token = await _stream_token(sb, body)
        recorded = [json.loads(line) for line in _FIXTURE.read_text().splitlines() if line]
        stream_sid = recorded[1]["start"]["streamSid"]
        recorded[1]["start"]["callSid"] = body["call_sid"]
        recorded[1]["start"]["accountSid"] = sb.container.account_sid
        recorded[1]["start"]["customParameters"] = {"call_id": body["call_id"], "token": token}
        received: list[dict[str, Any]] = []
        async with _connect(sb) as ws:

            async def read() -> None:
                async for message in ws:
                    received.append(json.loads(message))

            reader = asyncio.create_task(read())
            for message in recorded[:-1]:
                await ws.send(json.dumps(message))
                await asyncio.sleep(0.02)
            await wait_until(lambda: any(m["event"] == "media" for m in received), 5)
            await ws.send(json.dumps(recorded[-1]))  # stop
            await wait_until(
                lambda: (
                    sb.elevenlabs.conversations
                    and all(c.ended_at is not None for c in sb.elevenlabs.conversations.values())
                ),
                5,
            )
            await ws.close()
            await reader
        assert {m["event"] for m in received} <= {"media", "mark", "clear"}
        assert all(m["streamSid"] == stream_sid for m in received)
        conversation = next(iter(sb.elevenlabs.conversations.values()))
        assert conversation.user_audio_chunks == 3
        assert conversation.dynamic_variables["call_id"] == body["call_id"]
        assert "Caller pressed keypad key: 1" in conversation.contextual_updates
        assert conversation.closed_by == "client"

        # The bridge's timeline events go through the background writer, which the
        # bridge flushes after it has closed the agent's socket: wait for the last one.
        async def timeline() -> list[tuple[str, Any]] | None:
            events = await sb.container.store.events(body["call_id"])
            pairs = [(e.status, e.detail) for e in events]
            return pairs if any(status == "stream_stopped" for status, _ in pairs) else None

        events = await wait_until(timeline, 5)
        assert ("stream_started", {"stream_sid": stream_sid}) in events
        assert ("stream_stopped", {"reason": "callee_hung_up"}) in events
