"""Media Streams sessions the emulator runs against a small test WebSocket server."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from tests.sandbox_twilio.conftest import ACCOUNT_SID, CALLEE, Sandbox, ulaw_b64
from tests.support.wait import wait_until


class StreamServer:
    """Records what the emulator sends; runs ``script`` once ``start`` arrived."""

    def __init__(
        self,
        script: Callable[[StreamServer], Awaitable[None]] | None = None,
        close_after: float | None = None,
    ) -> None:
        self.messages: list[dict[str, Any]] = []
        self.times: list[float] = []
        self.ws: WebSocket | None = None
        self.stream_sid = ""
        self._script = script
        self._close_after = close_after
        self.started = asyncio.Event()
        self.arrived = asyncio.Event()

    def events(self, name: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["event"] == name]

    async def send(self, message: dict[str, Any]) -> None:
        assert self.ws is not None
        await self.ws.send_text(json.dumps({"streamSid": self.stream_sid} | message))

    async def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], within: float = 3.0
    ) -> float:
        async with asyncio.timeout(within):
            while not any(predicate(m) for m in self.messages):
                self.arrived.clear()
                await self.arrived.wait()
        index = next(i for i, m in enumerate(self.messages) if predicate(m))
        return self.times[index]

    async def __call__(self, websocket: WebSocket) -> None:
        self.ws = websocket
        async with asyncio.TaskGroup() as group:
            reader = group.create_task(self._read(websocket))
            if self._script is not None:
                await self.started.wait()
                await self._script(self)
            if self._close_after is not None:
                await asyncio.sleep(self._close_after)
                await websocket.close()
                reader.cancel()

    async def _read(self, websocket: WebSocket) -> None:
        try:
            while True:
                message = json.loads(await websocket.receive_text())
                self.messages.append(message)
                self.times.append(time.monotonic())
                self.arrived.set()
                if message["event"] == "start":
                    self.stream_sid = message["streamSid"]
                    self.started.set()
        except WebSocketDisconnect:
            return


def connect_twiml(sandbox: Sandbox, after: str = "", action: str = "") -> str:
    action_attr = f" action='{sandbox.base_url}{action}'" if action else ""
    return (
        f"<Response><Connect{action_attr}><Stream url='{sandbox.ws_base}/media'>"
        "<Parameter name='call_id' value='c-1'/><Parameter name='token' value='t &amp; u'/>"
        f"</Stream></Connect>{after}</Response>"
    )


async def test_session_order_cadence_and_continuation(sandbox: Sandbox) -> None:
    """connected, start, then 20 ms media frames; TwiML continues after the server closes."""
    server = StreamServer(close_after=1.0)
    sandbox.receiver.media_handler = server
    sid = (await sandbox.create(Twiml=connect_twiml(sandbox, "<Say>After stream</Say>")))["sid"]
    call = await sandbox.end(sid)
    assert [m["event"] for m in server.messages[:3]] == ["connected", "start", "media"]
    assert server.messages[0] == {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    start = server.messages[1]
    assert start["sequenceNumber"] == "1"
    assert start["start"]["accountSid"] == ACCOUNT_SID and start["start"]["callSid"] == sid
    assert start["start"]["streamSid"] == start["streamSid"].strip()
    assert start["streamSid"].startswith("MZ") and len(start["streamSid"]) == 34
    assert start["start"]["tracks"] == ["inbound"]
    assert start["start"]["customParameters"] == {"call_id": "c-1", "token": "t & u"}
    assert start["start"]["mediaFormat"] == {
        "encoding": "audio/x-mulaw",
        "sampleRate": 8000,
        "channels": 1,
    }
    media = server.events("media")
    assert 30 <= len(media) <= 70  # ~50 frames in a second, loosely
    assert [m["media"]["chunk"] for m in media[:3]] == ["1", "2", "3"]
    assert [m["media"]["timestamp"] for m in media[:3]] == ["0", "20", "40"]
    assert [int(m["sequenceNumber"]) for m in media[:3]] == [2, 3, 4]
    assert all(len(base64.b64decode(m["media"]["payload"])) == 160 for m in media)
    assert all(m["media"]["track"] == "inbound" for m in media)
    assert call.said == ["After stream"] and call.stream is not None
    assert call.stream.ended_by == "server"
    assert server.events("stop") == []


async def test_handshake_is_signed(sandbox: Sandbox) -> None:
    """The WebSocket handshake carries X-Twilio-Signature over the exact ws URL."""
    sandbox.receiver.media_handler = StreamServer(close_after=0.1)
    sid = (await sandbox.create(Twiml=connect_twiml(sandbox)))["sid"]
    await sandbox.end(sid)
    (handshake,) = sandbox.receiver.ws_handshakes
    assert handshake.url == f"{sandbox.ws_base}/media" and handshake.valid


async def test_mark_is_echoed_after_playout(sandbox: Sandbox) -> None:
    """A mark comes back once the audio queued before it has played (8 bytes per ms)."""
    audio = bytes(range(256)) * 8  # 2048 bytes = 256 ms

    async def script(server: StreamServer) -> None:
        server.sent_at = time.monotonic()  # type: ignore[attr-defined]
        await server.send({"event": "media", "media": {"payload": ulaw_b64(audio)}})
        await server.send({"event": "mark", "mark": {"name": "m1"}})

    server = StreamServer(script, close_after=0.6)
    sandbox.receiver.media_handler = server
    sid = (await sandbox.create(Twiml=connect_twiml(sandbox)))["sid"]
    echoed = await server.wait_for(lambda m: m["event"] == "mark")
    call = await sandbox.end(sid)
    assert echoed - server.sent_at >= 0.2  # type: ignore[attr-defined]
    assert server.events("mark")[0]["mark"] == {"name": "m1"}
    assert call.stream.played == audio and call.stream.marks_echoed == ["m1"]
    assert call.stream.first_media_at is not None


async def test_clear_drops_queue_and_echoes_pending_marks(sandbox: Sandbox) -> None:
    """clear empties the playout queue at once and echoes the marks still pending."""

    async def script(server: StreamServer) -> None:
        await server.send({"event": "media", "media": {"payload": ulaw_b64(b"\x10" * 16000)}})
        await server.send({"event": "mark", "mark": {"name": "long"}})
        await asyncio.sleep(0.2)
        server.cleared_at = time.monotonic()  # type: ignore[attr-defined]
        await server.send({"event": "clear"})

    server = StreamServer(script, close_after=0.3)
    sandbox.receiver.media_handler = server
    sid = (await sandbox.create(Twiml=connect_twiml(sandbox)))["sid"]
    echoed = await server.wait_for(lambda m: m["event"] == "mark")
    call = await sandbox.end(sid)
    assert echoed - server.cleared_at < 0.15  # type: ignore[attr-defined]
    assert 0 < len(call.stream.played) < 4000
    assert len(call.stream.clears) == 1 and call.stream.marks_echoed == ["long"]


async def test_callee_hangup_sends_stop_last(sandbox: Sandbox) -> None:
    """When the callee hangs up, stop is the last message and the socket closes."""
    sandbox.emulator.set_callee(CALLEE, "answer=0,hangup=0.4")
    server = StreamServer()
    sandbox.receiver.media_handler = server
    sid = (await sandbox.create(Twiml=connect_twiml(sandbox, "<Say>not reached</Say>")))["sid"]
    call = await sandbox.end(sid)
    await server.wait_for(lambda m: m["event"] == "stop")
    stop = server.messages[-1]
    assert stop["event"] == "stop"
    assert stop["stop"] == {"accountSid": ACCOUNT_SID, "callSid": sid}
    assert int(stop["sequenceNumber"]) == len(server.messages) - 1
    assert call.said == [] and call.stream.ended_by == "hangup"


async def test_invalid_server_messages_are_dropped_and_reported_once_per_stream(
    sandbox: Sandbox,
) -> None:
    """Non-JSON, unknown events, a wrong streamSid and extra fields are each dropped
    (31951), binary frames too (31950); Twilio reports each code once per stream, and
    the stream goes on playing the valid audio."""

    async def script(server: StreamServer) -> None:
        assert server.ws is not None
        await server.ws.send_text("not json")
        await server.send({"event": "dance"})
        await server.ws.send_text(json.dumps({"event": "clear", "streamSid": "MZnope"}))
        await server.ws.send_bytes(b"\x00\x01")
        await server.ws.send_bytes(b"\x02")
        await server.send(
            {"event": "media", "track": "outbound", "media": {"payload": ulaw_b64(b"\x11" * 160)}}
        )
        await server.send(
            {"event": "media", "media": {"payload": ulaw_b64(b"\x11" * 160), "chunk": "1"}}
        )
        await server.send({"event": "mark", "mark": {"name": "m", "extra": 1}})
        await server.send({"event": "media", "media": {"payload": ulaw_b64(b"\x22" * 160)}})

    server = StreamServer(script, close_after=0.3)
    sandbox.receiver.media_handler = server
    sid = (await sandbox.create(Twiml=connect_twiml(sandbox)))["sid"]
    call = await sandbox.end(sid)
    assert [code for code, _ in call.stream.errors] == [31951, 31950]
    assert [code for code, _ in call.errors] == [31951, 31950]
    assert [code for code, _ in call.stream.rejected] == [31951] * 3 + [31950] * 2 + [31951] * 3
    assert call.stream.played == b"\x22" * 160
    assert call.stream.marks_echoed == []
    assert len(call.stream.received) == 9


async def test_more_than_ten_minutes_buffered_is_discarded_with_31931_once(
    sandbox: Sandbox,
) -> None:
    """Audio beyond 10 minutes buffered (4,800,000 μ-law bytes) is not accepted: two
    more minutes are dropped and 31931 is reported once; a mark after them is still
    queued, and a clear empties the buffer so audio is accepted again."""
    minute = b"\x33" * (60 * 8000)

    async def script(server: StreamServer) -> None:
        for _ in range(10):
            await server.send({"event": "media", "media": {"payload": ulaw_b64(minute)}})
        # Playout has drained a few ms meanwhile: a whole minute more cannot fit.
        await server.send({"event": "media", "media": {"payload": ulaw_b64(b"\x44" * len(minute))}})
        await server.send({"event": "media", "media": {"payload": ulaw_b64(b"\x44" * len(minute))}})
        await server.send({"event": "mark", "mark": {"name": "after"}})
        (call,) = sandbox.emulator.calls.values()
        await wait_until(lambda: call.stream and call.stream.discarded_bytes == 2 * len(minute))
        # The mark is echoed only when a clear drops the 10 minutes queued before it.
        await server.send({"event": "clear"})
        await server.wait_for(lambda m: m["event"] == "mark")
        await server.send({"event": "media", "media": {"payload": ulaw_b64(b"\x55" * 160)}})

    server = StreamServer(script, close_after=0.5)
    sandbox.receiver.media_handler = server
    sid = (await sandbox.create(Twiml=connect_twiml(sandbox)))["sid"]
    call = await sandbox.end(sid, within=20)
    assert [code for code, _ in call.stream.errors] == [31931]
    assert [code for code, _ in call.errors] == [31931]
    assert call.stream.discarded_bytes == 2 * len(minute)
    assert [code for code, _ in call.stream.rejected] == [31931, 31931]
    assert call.stream.marks_echoed == ["after"]
    assert b"\x44" not in call.stream.played
    assert b"\x55" * 160 in call.stream.played


async def test_digits_and_speech_reach_the_stream(sandbox: Sandbox) -> None:
    """Scripted digits arrive as dtmf ~1 s after answer; speak sends non-silent audio."""
    sandbox.emulator.set_callee(CALLEE, "answer=0,digits=7,speak")
    server = StreamServer(close_after=1.3)
    sandbox.receiver.media_handler = server
    sid = (await sandbox.create(Twiml=connect_twiml(sandbox)))["sid"]
    await sandbox.end(sid)
    (dtmf,) = server.events("dtmf")
    assert dtmf["dtmf"] == {"track": "inbound_track", "digit": "7"}
    payloads = [base64.b64decode(m["media"]["payload"]) for m in server.events("media")]
    assert set(payloads[0]) == {0xFF}
    assert any(set(p) != {0xFF} for p in payloads)


async def test_live_press_and_speak_during_stream(sandbox: Sandbox) -> None:
    """callee_press sends dtmf and callee_speak sends the given audio up the stream."""
    server = StreamServer()
    sandbox.receiver.media_handler = server
    sid = (await sandbox.create(Twiml=connect_twiml(sandbox)))["sid"]
    await asyncio.wait_for(server.started.wait(), 5)
    sandbox.emulator.callee_press(sid, "5")
    sandbox.emulator.callee_speak(sid, b"\x33" * 320)
    await server.wait_for(lambda m: m["event"] == "dtmf")
    await server.wait_for(
        lambda m: m["event"] == "media" and base64.b64decode(m["media"]["payload"]) == b"\x33" * 160
    )
    assert server.ws is not None
    await server.ws.close()
    await sandbox.end(sid)


async def test_connect_action_runs_after_the_stream(sandbox: Sandbox) -> None:
    """With Connect action, the action URL is requested when the stream ends and its TwiML runs."""
    sandbox.receiver.media_handler = StreamServer(close_after=0.1)
    sandbox.receiver.twiml["/after"] = "<Response><Say>From action</Say></Response>"
    sid = (await sandbox.create(Twiml=connect_twiml(sandbox, "<Say>skipped</Say>", "/after")))[
        "sid"
    ]
    call = await sandbox.end(sid)
    (hook,) = sandbox.receiver.posted("/after")
    assert hook.valid and call.said == ["From action"]


async def test_every_webhook_and_handshake_validates(sandbox: Sandbox) -> None:
    """RequestValidator accepts every request of a call: TwiML, Gather, stream, callbacks."""
    sandbox.emulator.set_callee(CALLEE, "answer=0,digits=1")
    sandbox.receiver.media_handler = StreamServer(close_after=0.1)
    sandbox.receiver.twiml["/twiml"] = (
        "<Response><Gather numDigits='1' action='/gather'/></Response>"
    )
    sandbox.receiver.twiml["/gather"] = (
        "<Response><Redirect method='GET'>/redirected?x=1</Redirect></Response>"
    )
    sandbox.receiver.twiml["/redirected"] = connect_twiml(sandbox, action="/connected")
    sid = (
        await sandbox.create(
            Url=sandbox.base_url + "/twiml",
            StatusCallbackEvent=["initiated", "answered", "completed"],
        )
    )["sid"]
    await sandbox.end(sid)
    paths = [h.path for h in sandbox.receiver.hooks]
    assert paths == [
        "/status",
        "/status",
        "/twiml",
        "/gather",
        "/redirected",
        "/connected",
        "/status",
    ]
    assert all(h.valid and h.signature for h in sandbox.receiver.hooks)
    assert [h.valid for h in sandbox.receiver.ws_handshakes] == [True]
