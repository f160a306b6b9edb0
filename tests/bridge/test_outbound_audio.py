"""Outbound audio toward Twilio: 20 ms frames, marks, clear, and the flush when the agent pauses."""

from __future__ import annotations

import asyncio
import base64
import json
from collections import deque

from prometheus_client import CollectorRegistry, Counter
from websockets.asyncio.server import ServerConnection, serve
from websockets.uri import parse_uri

from callbridge.adapters.elevenlabs.agent_socket import AgentLink, open_agent_socket
from callbridge.media.twilio_stream import TwilioStreamCodec
from callbridge.services.outbound_audio import OutboundAudio
from callbridge.services.turns import TurnTracker
from tests.integration.helpers import wait_until

_START = json.dumps(
    {
        "event": "start",
        "sequenceNumber": "1",
        "start": {"accountSid": "AC1", "streamSid": "MZ1", "callSid": "CA1"},
        "streamSid": "MZ1",
    }
)


async def open_link(port: int) -> AgentLink:
    """The bridge's agent socket, open to a loopback WebSocket server."""
    return await open_agent_socket(
        parse_uri(f"ws://127.0.0.1:{port}"), open_timeout=5.0, ssl_context=None
    )


class RecordingSocket:
    """The Twilio side: keeps what is sent, decoded to (event, μ-law or mark name)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | str | None]] = []

    async def recv(self) -> str | bytes | None:
        return None

    async def send(self, message: str) -> None:
        data = json.loads(message)
        if data["event"] == "media":
            self.sent.append(("media", base64.b64decode(data["media"]["payload"])))
        elif data["event"] == "mark":
            self.sent.append(("mark", data["mark"]["name"]))
        else:
            self.sent.append((data["event"], None))

    async def send_many(self, messages: list[str]) -> None:
        for message in messages:
            await self.send(message)

    async def close(self, code: int = 1000) -> None:
        return None


class Outbound:
    """An OutboundAudio on a recording socket, with its tracker and counter at hand."""

    def __init__(self) -> None:
        codec = TwilioStreamCodec()
        codec.decode(_START)
        self.socket = RecordingSocket()
        self.tracker = TurnTracker()
        self.registry = CollectorRegistry()
        self.counter = Counter("frames", "frames", registry=self.registry)
        self.firsts = 0
        self.audio = OutboundAudio(
            socket=self.socket,
            codec=codec,
            tracker=self.tracker,
            frames=self.counter,
            on_first_frame=self._first,
        )

    def _first(self) -> None:
        self.firsts += 1

    @property
    def counted(self) -> float:
        return self.registry.get_sample_value("frames_total") or 0.0

    def events(self) -> list[str]:
        return [event for event, _ in self.socket.sent]


async def test_whole_frames_then_the_mark_and_the_remainder_waits() -> None:
    """A 250-byte chunk sends one frame then its mark; the 90 bytes left open the next frame."""
    out = Outbound()
    await out.audio.play(b"\x01" * 250, 1)
    assert out.socket.sent == [("media", b"\x01" * 160), ("mark", "a1.1")]
    assert out.audio.pending
    await out.audio.play(b"\x02" * 100, 1)
    assert out.socket.sent[2:] == [("media", b"\x01" * 90 + b"\x02" * 70), ("mark", "a1.2")]
    assert out.tracker.turns[1].bytes_sent == 350  # the chunks' sizes, not the frames'


async def test_a_chunk_under_a_frame_sends_only_its_mark() -> None:
    """100 bytes make no frame yet: the mark goes out alone, the bytes wait."""
    out = Outbound()
    await out.audio.play(b"\x01" * 100, 3)
    assert out.socket.sent == [("mark", "a3.1")]
    assert out.firsts == 0 and out.counted == 0


async def test_flush_pads_the_remainder_with_silence_once() -> None:
    """flush sends the remainder as one frame padded with 0xFF; a second flush sends nothing."""
    out = Outbound()
    await out.audio.play(b"\x01" * 170, 1)
    await out.audio.flush()
    await out.audio.flush()
    assert out.socket.sent[-1] == ("media", b"\x01" * 10 + b"\xff" * 150)
    assert out.events() == ["media", "mark", "media"]
    assert not out.audio.pending


async def test_interruption_drops_the_remainder_before_clear() -> None:
    """After clear the next frame starts with the new response, not the old remainder."""
    out = Outbound()
    await out.audio.play(b"\x01" * 200, 1)
    await out.audio.interrupt(1)
    await out.audio.play(b"\x02" * 160, 2)
    assert out.socket.sent == [
        ("media", b"\x01" * 160),
        ("mark", "a1.1"),
        ("clear", None),
        ("media", b"\x02" * 160),
        ("mark", "a2.2"),
    ]
    assert out.tracker.turns[1].interrupted


async def test_frames_are_counted_and_the_first_one_is_reported_once() -> None:
    """The counter counts 20 ms frames, padding included; on_first_frame fires once."""
    out = Outbound()
    await out.audio.play(b"\x01" * 500, 1)
    await out.audio.flush()
    await out.audio.play(b"\x01" * 320, 1)
    assert out.counted == 3 + 1 + 2 == out.audio.frames_sent
    assert out.firsts == 1


async def test_receive_without_a_remainder_just_waits_for_the_message() -> None:
    """With nothing held, receive returns the message and sends nothing."""
    out = Outbound()

    async def recv() -> str:
        await asyncio.sleep(0)
        return "hello"

    assert await out.audio.receive(recv, 5.0) == "hello"
    assert out.socket.sent == []


async def test_receive_flushes_the_remainder_when_the_agent_pauses() -> None:
    """With a remainder held and no message, the padded frame goes out; then the message comes."""
    out = Outbound()
    await out.audio.play(b"\x01" * 170, 1)
    arrived: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def recv() -> str:
        return await asyncio.shield(arrived)

    waiting = asyncio.create_task(out.audio.receive(recv, 5.0))
    await wait_until(lambda: len(out.socket.sent) == 3)  # the flush, when the idle timer fires
    arrived.set_result("next")
    assert await waiting == "next"
    assert out.socket.sent[-1] == ("media", b"\x01" * 10 + b"\xff" * 150)


async def test_a_message_that_came_with_the_idle_timer_wins_over_the_flush() -> None:
    """If the message was received by the time the idle timer fired, no padding goes out."""
    out = Outbound()
    await out.audio.play(b"\x01" * 170, 1)
    queue: deque[str] = deque()
    never: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def recv() -> str:
        if queue:
            return queue.popleft()
        try:
            return await asyncio.shield(never)
        except asyncio.CancelledError:
            queue.append("arrived meanwhile")  # as websockets keeps it for the next recv
            raise

    assert await out.audio.receive(recv, 5.0) == "arrived meanwhile"
    assert out.events() == ["media", "mark"] and out.audio.pending


async def test_the_stall_deadline_still_applies_after_a_flush() -> None:
    """Nothing from the agent: the remainder is flushed, then TimeoutError at the deadline."""
    out = Outbound()
    await out.audio.play(b"\x01" * 170, 1)
    never: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def recv() -> str:
        return await asyncio.shield(never)

    try:
        await out.audio.receive(recv, 0.2)
    except TimeoutError:
        pass
    else:  # pragma: no cover - the assertion below names the failure
        raise AssertionError("receive returned without a message")
    assert out.events() == ["media", "mark", "media"]


async def test_cancelling_the_agent_links_recv_on_the_idle_timer_loses_nothing() -> None:
    """Over a real WebSocket, every message sent while receive() keeps timing out and
    flushing arrives once and in order: cancelling AgentLink.recv is safe."""
    out = Outbound()
    release = asyncio.Queue[None]()

    async def agent(ws: ServerConnection) -> None:
        for n in range(5):
            await release.get()
            await ws.send(f"message {n}")
        await release.get()
        await ws.close(1000)

    async with serve(agent, "127.0.0.1", 0, compression=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        link = await open_link(port)
        try:
            got: list[str | bytes | None] = []
            while True:
                await out.audio.play(b"\x01" * 100, 1)  # a remainder before every wait
                flushed = out.audio.frames_sent
                waiting = asyncio.create_task(out.audio.receive(link.recv, 5.0))
                # The idle timer cancels recv and flushes; only then does the agent send.
                await wait_until(lambda f=flushed, w=waiting: out.audio.frames_sent > f or w.done())
                release.put_nowait(None)
                message = await waiting
                if message is None:
                    break
                got.append(message)
        finally:
            await link.close()
    assert got == [f"message {n}" for n in range(5)]
    assert out.audio.frames_sent == 6  # every wait flushed: recv was cancelled each time


async def test_receive_passes_on_the_agents_normal_close() -> None:
    """receive() on a link the agent closes normally returns None, with a remainder held."""
    out = Outbound()

    async def agent(ws: ServerConnection) -> None:
        await ws.close(1000)

    async with serve(agent, "127.0.0.1", 0, compression=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        link = await open_link(port)
        await out.audio.play(b"\x01" * 100, 1)
        assert await out.audio.receive(link.recv, 5.0) is None
