"""The callee's media stream: Twilio's side of ``<Connect><Stream>``, lean enough for hundreds.

It speaks Media Streams as Twilio does (protocols.md §3.2–3.5): ``connected``,
``start`` with the ``<Parameter>``s, then one 20 ms ``media`` frame (160 bytes of
μ-law) in real time for the whole call, and ``stop`` when the callee hangs up.
It keeps a playout clock for the audio it receives, echoes each ``mark`` when
playout reaches it, and on ``clear`` drops the queue and echoes pending marks at
once.

One :class:`FrameClock` task sends the frames of every call (each call keeps its
own 20 ms phase), instead of a timer per call; its lateness is recorded so that a
saturated load generator shows in the results instead of hiding in them.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from array import array
from collections import deque
from collections.abc import Mapping

import orjson
import websockets
from websockets.asyncio.client import ClientConnection, connect

from callbridge.bench.probe import CallProbe
from callbridge.bench.wire import FRAME_BYTES, StampedAudio, read_stamp
from callbridge.tasks import cancel_and_wait

__all__ = ["CalleeStream", "FrameClock"]

FRAME_NS = 20_000_000
_BYTES_PER_NS = 8 / 1e6  # μ-law 8 kHz: 8 bytes per millisecond
_TICK_S = 0.002


class CalleeStream:
    """One call's media stream, driven by a :class:`FrameClock`."""

    def __init__(
        self,
        probe: CallProbe,
        *,
        url: str,
        parameters: Mapping[str, str],
        call_sid: str,
        account_sid: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.probe = probe
        self._url = url
        self._parameters = dict(parameters)
        self._headers = dict(headers or {})
        self.call_sid = call_sid
        self.account_sid = account_sid
        self.stream_sid = "MZ" + secrets.token_hex(16)
        self.ws: ClientConnection | None = None
        self.next_ns = 0
        self.sequence = 1  # ``start`` is sequence number 1
        self.chunk = 0
        self._play_until = 0
        self._marks: deque[tuple[int, str]] = deque()
        self._prefix = '{"event":"media","sequenceNumber":"'
        self._suffix = '"},"streamSid":"' + self.stream_sid + '"}'

    @property
    def url(self) -> str:
        """The media stream's WebSocket URL (from the TwiML)."""
        return self._url

    @property
    def parameters(self) -> dict[str, str]:
        """The ``customParameters`` of the ``start`` message (a copy)."""
        return dict(self._parameters)

    @property
    def headers(self) -> dict[str, str]:
        """The handshake's extra headers (the signature; a copy)."""
        return dict(self._headers)

    async def open(self, open_timeout: float) -> None:
        """Connect, send ``connected`` and ``start``; frames begin at once."""
        self.ws = await connect(
            self._url,
            additional_headers=self._headers,
            open_timeout=open_timeout,
            compression=None,
            ping_interval=None,
            max_size=1 << 20,
        )
        await self.ws.send('{"event":"connected","protocol":"Call","version":"1.0.0"}')
        start = {
            "event": "start",
            "sequenceNumber": "1",
            "start": {
                "accountSid": self.account_sid,
                "streamSid": self.stream_sid,
                "callSid": self.call_sid,
                "tracks": ["inbound"],
                "customParameters": self._parameters,
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
            "streamSid": self.stream_sid,
        }
        now = time.monotonic_ns()
        self.probe.stream_start_ns = now
        await self.ws.send(orjson.dumps(start).decode())
        self.next_ns = now

    def media(self, audio: StampedAudio, now: int) -> str:
        """The next inbound ``media`` message, stamped with ``now``."""
        self.sequence += 1
        self.chunk += 1
        stamp_ms = self.chunk * 20
        return (
            self._prefix
            + str(self.sequence)
            + '","media":{"track":"inbound","chunk":"'
            + str(self.chunk)
            + '","timestamp":"'
            + str(stamp_ms)
            + '","payload":"'
            + audio.payload(self.probe.index, self.chunk, now)
            + self._suffix
        )

    def due_marks(self, now: int) -> list[str]:
        """Mark echoes whose audio has finished playing by ``now``."""
        out: list[str] = []
        marks = self._marks
        while marks and marks[0][0] <= now:
            out.append(self._mark_echo(marks.popleft()[1]))
        return out

    def _mark_echo(self, name: str) -> str:
        self.sequence += 1
        return orjson.dumps(
            {
                "event": "mark",
                "sequenceNumber": str(self.sequence),
                "streamSid": self.stream_sid,
                "mark": {"name": name},
            }
        ).decode()

    async def read(self) -> None:
        """Receive the bridge's ``media``, ``mark`` and ``clear`` until the socket closes."""
        assert self.ws is not None
        probe = self.probe
        way = probe.to_callee
        clock = time.monotonic_ns
        try:
            async for message in self.ws:
                now = clock()
                data = orjson.loads(message)
                event = data.get("event") if type(data) is dict else None
                if event == "media":
                    payload = data["media"]["payload"]
                    if probe.first_audio_ns is None:
                        probe.first_audio_ns = now
                    self._play_until = max(self._play_until, now) + int(
                        len(payload) * 3 // 4 / _BYTES_PER_NS
                    )
                    stamp = read_stamp(payload)
                    probe.arrived(way, stamp.sent_ns if stamp else None, now)
                elif event == "mark":
                    self._marks.append((self._play_until, str(data["mark"]["name"])))
                elif event == "clear":
                    if probe.interrupt_ns is not None:
                        probe.clear_ns.append(now - probe.interrupt_ns)
                        probe.interrupt_ns = None
                    self._play_until = now
                    pending, self._marks = self._marks, deque()
                    for _, name in pending:
                        await self.ws.send(self._mark_echo(name))
        except websockets.ConnectionClosed:
            return

    async def hang_up(self) -> None:
        """Send ``stop`` and close the socket."""
        ws = self.ws
        if ws is None:
            return
        self.sequence += 1
        stop = {
            "event": "stop",
            "sequenceNumber": str(self.sequence),
            "stop": {"accountSid": self.account_sid, "callSid": self.call_sid},
            "streamSid": self.stream_sid,
        }
        try:
            await ws.send(orjson.dumps(stop).decode())
            await asyncio.wait_for(ws.close(), 5)
        except (websockets.ConnectionClosed, TimeoutError):
            return


class FrameClock:
    """Sends every live stream's 20 ms frames from one task, each stream on its own phase."""

    def __init__(self) -> None:
        self._audio = StampedAudio(FRAME_BYTES)
        self._streams: set[CalleeStream] = set()
        self.lateness_ns: array[int] = array("q")
        self._task: asyncio.Task[None] | None = None

    def add(self, stream: CalleeStream) -> None:
        """Start sending ``stream``'s frames (from its ``next_ns``)."""
        self._streams.add(stream)

    def remove(self, stream: CalleeStream) -> None:
        """Stop sending ``stream``'s frames."""
        self._streams.discard(stream)

    def start(self) -> None:
        """Run the clock until :meth:`aclose`."""
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def aclose(self) -> None:
        """Stop the clock."""
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def _run(self) -> None:
        clock = time.monotonic_ns
        audio = self._audio
        lateness = self.lateness_ns
        while True:
            await asyncio.sleep(_TICK_S)
            for stream in list(self._streams):
                ws = stream.ws
                if ws is None:
                    continue
                now = clock()
                try:
                    for echo in stream.due_marks(now):
                        await ws.send(echo)
                    while stream.next_ns <= now and stream in self._streams:
                        lateness.append(now - stream.next_ns)
                        message = stream.media(audio, now)
                        await ws.send(message)
                        if stream.probe.counts(now):
                            stream.probe.to_agent.sent += 1
                        stream.next_ns += FRAME_NS
                        now = clock()
                except websockets.ConnectionClosed:
                    stream.probe.fail("the bridge closed the media stream")
                    self.remove(stream)
