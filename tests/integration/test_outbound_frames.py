"""security.md D34: the agent's audio reaches Twilio in fixed 20 ms μ-law frames.

The app runs in the sandbox on a real uvicorn; the agent is a scripted WebSocket
server on loopback (``ELEVENLABS_API_BASE_URL`` points at it) that sends each
burst of messages in one go, when the test says so, so where the quiet periods
fall is exact. Chunk sizes are never whole frames. What the emulated Twilio
received is compared message by message with the framing the bridge must do:
whole frames of each chunk, then the chunk's mark; the remainder carried into
the next chunk; one padded frame when the agent goes quiet; the remainder
dropped before ``clear``.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import orjson
import websockets
from websockets.asyncio.server import Server, ServerConnection, serve

from callbridge.media.transcode import parse_format
from tests.integration.helpers import finished, place, wait_until
from tests.support.app import running_sandbox

_FRAME = 160
#: A callee who answers, consents and then stays quiet (the test ends the call first).
_QUIET = "answer=0.2,digits=1,hangup=30"


def _audio_bytes(seed: int, size: int) -> bytes:
    """Distinct μ-law for each chunk, with no 0xFF (silence) byte in it."""
    return bytes((seed * 37 + i * 7) % 255 for i in range(size))


def _audio(event_id: int, data: bytes) -> str:
    payload = base64.b64encode(data).decode("ascii")
    return orjson.dumps(
        {"type": "audio", "audio_event": {"audio_base_64": payload, "event_id": event_id}}
    ).decode()


def _response(event_id: int) -> str:
    event = {"agent_response": f"Response {event_id}.", "event_id": event_id}
    return orjson.dumps({"type": "agent_response", "agent_response_event": event}).decode()


def _interruption(event_id: int) -> str:
    return orjson.dumps(
        {"type": "interruption", "interruption_event": {"event_id": event_id}}
    ).decode()


class ScriptedAgent:
    """An agent conversation socket that sends whole bursts when told; ``None`` closes (1000)."""

    def __init__(self) -> None:
        self.bursts: asyncio.Queue[list[str] | None] = asyncio.Queue()
        self.connected = asyncio.Event()
        self._server: Server | None = None
        self.port = 0

    async def start(self) -> None:
        self._server = await serve(
            self._serve, "127.0.0.1", 0, compression=None, ping_interval=None
        )
        self.port = int(next(iter(self._server.sockets)).getsockname()[1])

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, ws: ServerConnection) -> None:
        await ws.recv()  # conversation_initiation_client_data
        await ws.send(
            orjson.dumps(
                {
                    "type": "conversation_initiation_metadata",
                    "conversation_initiation_metadata_event": {
                        "conversation_id": "conv_scripted",
                        "agent_output_audio_format": "ulaw_8000",
                        "user_input_audio_format": "ulaw_8000",
                    },
                }
            ).decode()
        )
        self.connected.set()
        async with asyncio.TaskGroup() as group:
            group.create_task(self._listen(ws))
            while (burst := await self.bursts.get()) is not None:
                for message in burst:  # no send waits here: the burst leaves in one go
                    await ws.send(message)
            await ws.close(1000)

    @staticmethod
    async def _listen(ws: ServerConnection) -> None:
        try:
            async for _ in ws:  # the caller's audio: read and ignored
                pass
        except websockets.ConnectionClosed:
            return


def _framed(bursts: list[tuple[list[bytes], str]]) -> list[tuple[str, bytes | None]]:
    """What Twilio must receive for these bursts, each ending in ``"quiet"`` or ``"clear"``."""
    out: list[tuple[str, bytes | None]] = []
    for chunks, ending in bursts:
        carried = b""
        for chunk in chunks:
            data = carried + chunk
            whole = len(data) - len(data) % _FRAME
            out += [("media", data[i : i + _FRAME]) for i in range(0, whole, _FRAME)]
            carried = data[whole:]
            out.append(("mark", None))
        if ending == "clear":
            out.append(("clear", None))
        elif carried:
            out.append(("media", carried + b"\xff" * (_FRAME - len(carried))))
    return out


def _received(log: Any) -> list[tuple[str, bytes | None]]:
    out: list[tuple[str, bytes | None]] = []
    for raw in log.received:
        message = json.loads(raw)
        event = message["event"]
        payload = base64.b64decode(message["media"]["payload"]) if event == "media" else None
        out.append((event, payload))
    return out


def _media(log: Any) -> int:
    return sum(1 for event, _ in _received(log) if event == "media")


def _marks(log: Any) -> int:
    return sum(1 for event, _ in _received(log) if event == "mark")


async def test_agent_audio_goes_out_in_160_byte_frames_with_marks_after_each_chunk() -> None:
    """Chunks of 250, 333, 100 and 130 bytes reach Twilio as 160-byte frames only: each
    chunk's whole frames then its mark, the remainder carried into the next chunk with no
    padding inside a burst, one padded frame when the agent goes quiet or says goodbye,
    and after an interruption no stale remainder (nor stale chunk) before the next answer."""
    agent = ScriptedAgent()
    await agent.start()
    first = [_audio_bytes(k, 250) for k in range(7)]  # 1750: 10 frames + 150 left
    cut = [_audio_bytes(10 + k, 333) for k in range(5)]  # 1665: 10 frames + 65 dropped
    third = [_audio_bytes(20 + k, size) for k, size in enumerate((100, 100, 100, 130))]
    goodbye = [_audio_bytes(30, 100)]
    try:
        env = {
            "ELEVENLABS_API_BASE_URL": f"http://127.0.0.1:{agent.port}",
            "CALLBRIDGE_SANDBOX_CALLEE": _QUIET,
        }
        async with running_sandbox(env) as sb:
            body = await place(sb, name="Ada")
            sim = sb.twilio.calls[body["call_sid"]]
            await wait_until(lambda: sim.stream is not None and sim.stream.started_at, 10)
            await asyncio.wait_for(agent.connected.wait(), 10)
            log = sim.stream

            agent.bursts.put_nowait([_response(1), *(_audio(1, c) for c in first)])
            await wait_until(lambda: _media(log) >= 11)
            agent.bursts.put_nowait(
                [
                    _response(2),
                    *(_audio(2, c) for c in cut),
                    _interruption(2),
                    _audio(2, _audio_bytes(99, 333)),  # stale: of the interrupted response
                ]
            )
            await wait_until(lambda: log.clears)
            agent.bursts.put_nowait([_response(3), *(_audio(3, c) for c in third)])
            await wait_until(lambda: _media(log) >= 11 + 10 + 3)
            agent.bursts.put_nowait([_response(4), *(_audio(4, c) for c in goodbye)])
            agent.bursts.put_nowait(None)  # the agent ends the conversation right after
            await finished(sb, body)

            received = _received(log)
            assert received == _framed(
                [(first, "quiet"), (cut, "clear"), (third, "quiet"), (goodbye, "quiet")]
            )
            assert all(len(p) == _FRAME for e, p in received if e == "media" and p is not None)
            assert sim.end_reason == "rest"  # the goodbye played out, then the call was hung up
            registry = sb.container.metrics.registry
            frames = registry.get_sample_value(
                "callbridge_frames_total", {"direction": "to_callee"}
            )
            assert frames == _media(log) == 11 + 10 + 3 + 1
            assert registry.get_sample_value("callbridge_first_agent_audio_seconds_count") == 1
    finally:
        await agent.aclose()


async def test_transcoded_audio_of_the_emulated_agent_goes_out_in_160_byte_frames() -> None:
    """The sandbox agent speaking pcm_16000 in 65 ms chunks (about 520 μ-law bytes, never a
    whole number of frames) reaches Twilio in 160-byte frames only; end_call lets it all play."""
    env = {
        "CALLBRIDGE_SANDBOX_CALLEE": _QUIET,
        "CALLBRIDGE_FIRST_MESSAGE": "Hi {{visitor_name}}, how can I help?",
    }
    async with running_sandbox(env) as sb:
        sb.elevenlabs.output_format = parse_format("pcm_16000")
        sb.elevenlabs.chunk_ms = 65
        body = await place(sb, name="Ada")
        sim = sb.twilio.calls[body["call_sid"]]
        await wait_until(lambda: sim.stream is not None and sim.stream.first_media_at, 10)
        await wait_until(lambda: _marks(sim.stream) >= 4)
        sb.twilio.callee_press(body["call_sid"], "*")  # the agent's end_call tool
        await finished(sb, body)
        received = _received(sim.stream)
        media = [payload for event, payload in received if event == "media"]
        marks = [event for event, _ in received if event == "mark"]
        assert len(media) > 10 and len(marks) > 3
        assert {len(payload or b"") for payload in media} == {_FRAME}
        assert sim.stream.marks_echoed and len(sim.stream.marks_echoed) == len(marks)
        assert sim.end_reason == "rest"
