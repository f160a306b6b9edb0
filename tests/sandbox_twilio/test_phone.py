"""The sandbox phone hub: a browser phone page rings, answers, talks and hangs up."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import websockets

from tests.sandbox_twilio.conftest import CALLEE, CALLER, Sandbox, ulaw_b64
from tests.sandbox_twilio.test_media import StreamServer, connect_twiml


async def _next(ws: websockets.ClientConnection, kind: str, within: float = 5) -> dict[str, Any]:
    async with asyncio.timeout(within):
        while True:
            message: dict[str, Any] = json.loads(await ws.recv())
            if message["type"] == kind:
                return message


async def test_phone_page_rings_answers_talks_and_hangs_up(sandbox: Sandbox) -> None:
    """A connected phone gets ring, answers, hears say and media, sends mic audio, hangs up."""

    async def script(server: StreamServer) -> None:
        await server.send({"event": "media", "media": {"payload": ulaw_b64(b"\x44" * 320)}})

    server = StreamServer(script)
    sandbox.receiver.media_handler = server
    async with websockets.connect(f"{sandbox.ws_base}/sandbox/twilio/phone/ws") as phone:
        await asyncio.sleep(0.05)
        assert sandbox.emulator.phone_hub.connected
        sid = (
            await sandbox.create(
                Twiml=connect_twiml(sandbox, "").replace("<Connect", "<Say>Hello</Say><Connect")
            )
        )["sid"]
        ring = await _next(phone, "ring")
        assert ring == {"type": "ring", "call_sid": sid, "from": CALLER, "to": CALLEE}
        await phone.send(json.dumps({"type": "answer"}))
        assert (await _next(phone, "say"))["text"] == "Hello"
        heard = await _next(phone, "media")
        assert base64.b64decode(heard["payload"]) == b"\x44" * 160
        await phone.send(json.dumps({"type": "media", "payload": ulaw_b64(b"\x55" * 160)}))
        await server.wait_for(
            lambda m: (
                m["event"] == "media" and base64.b64decode(m["media"]["payload"]) == b"\x55" * 160
            )
        )
        await phone.send(json.dumps({"type": "dtmf", "digit": "9"}))
        await server.wait_for(lambda m: m["event"] == "dtmf")
        await phone.send(json.dumps({"type": "hangup"}))
        ended = await _next(phone, "ended")
        assert ended["status"] == "completed" and isinstance(ended["duration"], int)
    call = await sandbox.end(sid)
    assert call.callee_kind == "phone" and call.end_reason == "callee"
    assert server.events("stop")


async def test_phone_decline_is_busy_and_gather_waits_for_phone(sandbox: Sandbox) -> None:
    """Declining on the phone ends the call busy; a Gather takes the phone's DTMF."""
    async with websockets.connect(f"{sandbox.ws_base}/sandbox/twilio/phone/ws") as phone:
        await asyncio.sleep(0.05)
        first = (await sandbox.create(Twiml="<Response/>"))["sid"]
        await _next(phone, "ring")
        await phone.send(json.dumps({"type": "decline"}))
        assert (await sandbox.end(first)).status == "busy"
        sandbox.receiver.twiml["/g"] = "<Response><Say>ok</Say></Response>"
        second = (
            await sandbox.create(
                Twiml=f"<Response><Gather numDigits='1' timeout='5' "
                f"action='{sandbox.base_url}/g'/></Response>"
            )
        )["sid"]
        await _next(phone, "ring")
        await phone.send(json.dumps({"type": "answer"}))
        await _next(phone, "status")
        await asyncio.sleep(0.2)
        await phone.send(json.dumps({"type": "dtmf", "digit": "3"}))
        await _next(phone, "ended")
    assert sandbox.receiver.posted("/g")[0].params["Digits"] == "3"
    assert sandbox.emulator.calls[second].said == ["ok"]
