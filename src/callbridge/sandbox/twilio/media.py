"""Twilio Media Streams, Twilio's side: the client the emulator runs for ``<Connect><Stream>``.

Implements https://www.twilio.com/docs/voice/media-streams/websocket-messages as
protocols.md 3.2-3.5 records it: the emulator opens a WebSocket to the
``<Stream url>``, sends ``connected`` and ``start``, then one ``media`` frame of
160 μ-law bytes every 20 ms (paced against ``time.monotonic()``), ``dtmf`` when
the callee presses keys and ``stop`` on hangup. What the server sends
(``media``, ``mark``, ``clear``) goes through a :class:`Playout` queue played at
8 bytes per millisecond: marks are echoed when playout passes them, and a
``clear`` drops the queue and echoes pending marks at once.

The wire format lives in the sans-I/O :class:`StreamCodec`; :class:`MediaStreamClient`
owns the socket, the timer and nothing else.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import math
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import websockets
from twilio.request_validator import RequestValidator
from websockets.asyncio.client import ClientConnection

from callbridge.errors import ProtocolError
from callbridge.sandbox.callee import FRAME_BYTES, InboundAudio

#: Seconds of audio in one media frame.
FRAME_SECONDS = 0.02
_BYTES_PER_MS = 8

#: Twilio error codes for what a server may get wrong on a stream. 31950, 31951 and
#: 31931 are warnings "sent once per stream" (Twilio's error dictionary); the
#: offending message is dropped and the stream goes on.
INVALID_MESSAGE = 31951
MALFORMED_MESSAGE = 31950
MEDIA_DISCARDED = 31931
HANDSHAKE_FAILED = 31920

#: 31931: "More than 10 minutes of audio is buffered by the Streamer. No more data is
#: accepted." 10 minutes of 8 kHz μ-law, in bytes.
MAX_BUFFERED_BYTES = 10 * 60 * 8000

#: The keys each server message may carry: Twilio lists "Missing or extra field in
#: message" among 31951's causes (https://www.twilio.com/docs/api/errors/31951).
_SERVER_KEYS: dict[str, frozenset[str]] = {
    "media": frozenset({"event", "streamSid", "media"}),
    "mark": frozenset({"event", "streamSid", "mark"}),
    "clear": frozenset({"event", "streamSid"}),
}
_BODY_KEYS = {"media": frozenset({"payload"}), "mark": frozenset({"name"})}


def new_stream_sid() -> str:
    """A fresh Stream SID, ``MZ`` and 32 hex digits."""
    return "MZ" + secrets.token_hex(16)


class StreamFault(ProtocolError):
    """The server sent something Twilio rejects (31951 invalid, 31950 malformed)."""

    def __init__(self, twilio_code: int, message: str) -> None:
        super().__init__(message)
        self.twilio_code = twilio_code


@dataclass(frozen=True)
class ServerMedia:
    """Audio the server wants played to the callee (raw μ-law)."""

    payload: bytes


@dataclass(frozen=True)
class ServerMark:
    """A label to echo once the audio queued before it has played."""

    name: str


@dataclass(frozen=True)
class ServerClear:
    """Drop all queued audio now."""


ServerMessage = ServerMedia | ServerMark | ServerClear


class StreamCodec:
    """Encodes Twilio's messages and decodes the server's, with no I/O.

    Args:
        account_sid: ``AC…`` of the call.
        call_sid: ``CA…`` of the call.
        stream_sid: ``MZ…`` of this stream.
        custom_parameters: the ``<Parameter>`` names and values.
    """

    def __init__(
        self, *, account_sid: str, call_sid: str, stream_sid: str, custom_parameters: dict[str, str]
    ) -> None:
        self.account_sid = account_sid
        self.call_sid = call_sid
        self.stream_sid = stream_sid
        self.custom_parameters = dict(custom_parameters)
        self._sequence = 0
        self._chunk = 0

    def _next_sequence(self) -> str:
        self._sequence += 1
        return str(self._sequence)

    def connected(self) -> str:
        """The first message: no ``streamSid`` and no ``sequenceNumber``."""
        return json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})

    def start(self) -> str:
        """The ``start`` message, ``sequenceNumber`` ``"1"``."""
        return json.dumps(
            {
                "event": "start",
                "sequenceNumber": self._next_sequence(),
                "start": {
                    "accountSid": self.account_sid,
                    "streamSid": self.stream_sid,
                    "callSid": self.call_sid,
                    "tracks": ["inbound"],
                    "customParameters": self.custom_parameters,
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                },
                "streamSid": self.stream_sid,
            }
        )

    def media(self, ulaw: bytes) -> str:
        """One inbound ``media`` frame; ``chunk`` from 1, ``timestamp`` in ms of audio."""
        self._chunk += 1
        return json.dumps(
            {
                "event": "media",
                "sequenceNumber": self._next_sequence(),
                "media": {
                    "track": "inbound",
                    "chunk": str(self._chunk),
                    "timestamp": str((self._chunk - 1) * 20),
                    "payload": base64.b64encode(ulaw).decode("ascii"),
                },
                "streamSid": self.stream_sid,
            }
        )

    def dtmf(self, digit: str) -> str:
        """A key press of the callee."""
        return json.dumps(
            {
                "event": "dtmf",
                "streamSid": self.stream_sid,
                "sequenceNumber": self._next_sequence(),
                "dtmf": {"track": "inbound_track", "digit": digit},
            }
        )

    def mark(self, name: str) -> str:
        """The echo of a server's ``mark``."""
        return json.dumps(
            {
                "event": "mark",
                "sequenceNumber": self._next_sequence(),
                "streamSid": self.stream_sid,
                "mark": {"name": name},
            }
        )

    def stop(self) -> str:
        """The last message of the stream."""
        return json.dumps(
            {
                "event": "stop",
                "sequenceNumber": self._next_sequence(),
                "stop": {"accountSid": self.account_sid, "callSid": self.call_sid},
                "streamSid": self.stream_sid,
            }
        )

    def receive(self, data: str | bytes) -> ServerMessage:
        """Decode one frame from the server.

        Raises:
            StreamFault: 31950 for a binary frame, 31951 for anything else invalid.
        """
        if isinstance(data, bytes):
            raise StreamFault(MALFORMED_MESSAGE, "Stream - Protocol - Malformed Message")
        try:
            message = json.loads(data)
        except ValueError:
            raise StreamFault(INVALID_MESSAGE, "message is not JSON") from None
        if not isinstance(message, dict):
            raise StreamFault(INVALID_MESSAGE, "message is not a JSON object")
        event = message.get("event")
        if event not in _SERVER_KEYS:
            raise StreamFault(INVALID_MESSAGE, f"unknown event {event!r}")
        if message.get("streamSid") != self.stream_sid:
            raise StreamFault(INVALID_MESSAGE, "streamSid does not match the stream")
        extra = set(message) - _SERVER_KEYS[event]
        if extra:
            raise StreamFault(INVALID_MESSAGE, f"{event} has extra fields {sorted(extra)}")
        if event == "clear":
            return ServerClear()
        body = message.get(event)
        if isinstance(body, dict) and set(body) - _BODY_KEYS[event]:
            extra = set(body) - _BODY_KEYS[event]
            raise StreamFault(INVALID_MESSAGE, f"{event} has extra fields {sorted(extra)}")
        if event == "mark":
            name = body.get("name") if isinstance(body, dict) else None
            if not isinstance(name, str):
                raise StreamFault(INVALID_MESSAGE, "mark.name is missing")
            return ServerMark(name)
        payload = body.get("payload") if isinstance(body, dict) else None
        if not isinstance(payload, str):
            raise StreamFault(INVALID_MESSAGE, "media.payload is missing")
        try:
            return ServerMedia(base64.b64decode(payload, validate=True))
        except binascii.Error:
            raise StreamFault(INVALID_MESSAGE, "media.payload is not base64") from None


@dataclass(frozen=True)
class _Mark:
    name: str


class Playout:
    """The queue of server audio and marks, played at 8 bytes per ms."""

    def __init__(self) -> None:
        self._items: deque[bytes | _Mark] = deque()
        self._queued = 0

    def push_media(self, ulaw: bytes) -> None:
        """Queue audio after everything queued."""
        if ulaw:
            self._items.append(ulaw)
            self._queued += len(ulaw)

    def push_mark(self, name: str) -> None:
        """Queue a mark after everything queued."""
        self._items.append(_Mark(name))

    def clear(self) -> list[str]:
        """Drop the queue; return the names of the marks that were pending."""
        pending = [item.name for item in self._items if isinstance(item, _Mark)]
        self._items.clear()
        self._queued = 0
        return pending

    @property
    def queued_bytes(self) -> int:
        """Bytes of audio not yet played."""
        return self._queued

    def advance(self, budget: int) -> tuple[bytes, list[str]]:
        """Play up to ``budget`` bytes; return them and the marks passed."""
        played = bytearray()
        marks: list[str] = []
        while self._items:
            head = self._items[0]
            if isinstance(head, _Mark):
                marks.append(self._items.popleft().name)  # type: ignore[union-attr]
                continue
            if budget <= 0:
                break
            taken = head[:budget]
            played += taken
            budget -= len(taken)
            self._queued -= len(taken)
            if len(taken) == len(head):
                self._items.popleft()
            else:
                self._items[0] = head[len(taken) :]
        return bytes(played), marks


def frames_due(started: float, now: float, sent: int, frame_seconds: float = FRAME_SECONDS) -> int:
    """How many frames a real-time sender that began at ``started`` owes at ``now``."""
    if now < started:
        return 0
    # The epsilon keeps float error (0.1 / 0.02 == 4.999…) from owing a frame late.
    return max(0, math.floor((now - started) / frame_seconds + 1e-9) + 1 - sent)


@dataclass
class StreamLog:
    """What happened on one media stream, for tests and the operator.

    Attributes:
        url: the ``<Stream url>``.
        stream_sid: ``MZ…``.
        custom_parameters: from ``<Parameter>``.
        received: every frame the server sent, raw, in order.
        played: the server's μ-law the callee actually heard, in order.
        marks_echoed: names of marks echoed, in order.
        clears: monotonic times of each ``clear``.
        first_media_at: monotonic time of the first server ``media``.
        frames_sent: inbound ``media`` frames sent.
        dtmf_sent: digits sent as ``dtmf``.
        errors: ``(code, message)`` of each stream error Twilio reports: 31950,
            31951 and 31931 once per stream each, as Twilio sends them.
        rejected: ``(code, message)`` of every server message dropped (all of them,
            reported or not).
        discarded_bytes: server audio dropped because 10 minutes were buffered (31931).
        ended_by: ``"server"`` (it closed the socket), ``"hangup"`` or ``"error"``.
    """

    url: str
    stream_sid: str
    custom_parameters: dict[str, str]
    received: list[str | bytes] = field(default_factory=list)
    played: bytearray = field(default_factory=bytearray)
    marks_echoed: list[str] = field(default_factory=list)
    clears: list[float] = field(default_factory=list)
    first_media_at: float | None = None
    started_at: float | None = None
    frames_sent: int = 0
    dtmf_sent: list[str] = field(default_factory=list)
    errors: list[tuple[int, str]] = field(default_factory=list)
    rejected: list[tuple[int, str]] = field(default_factory=list)
    discarded_bytes: int = 0
    ended_by: str | None = None


class MediaStreamClient:
    """Runs one bidirectional stream from ``connected`` to ``stop`` or server close.

    Args:
        log: where to record the session (its ``url`` is dialled).
        codec: the message codec for this stream.
        auth_token: signs the handshake (``X-Twilio-Signature`` over the URL).
        inbound: the callee's microphone.
        stop: set when the call ends or leaves the stream; the client then sends
            ``stop`` and closes.
        on_output: receives ``{"type": "media"|"clear", ...}`` as audio plays (phone page).
        on_error: receives ``(code, message)`` for each stream error.
    """

    def __init__(
        self,
        *,
        log: StreamLog,
        codec: StreamCodec,
        auth_token: str,
        inbound: InboundAudio,
        stop: asyncio.Event,
        on_output: Callable[[dict[str, Any]], None] | None = None,
        on_error: Callable[[int, str], None] | None = None,
    ) -> None:
        self.log = log
        self._codec = codec
        self._token = auth_token
        self._inbound = inbound
        self._stop = stop
        self._on_output = on_output or (lambda _msg: None)
        self._on_error = on_error or (lambda _code, _msg: None)
        self._playout = Playout()
        self._digits: deque[str] = deque()
        self._send_lock = asyncio.Lock()
        self._reported: set[int] = set()

    def press(self, digits: str) -> None:
        """Queue key presses to send as ``dtmf`` events."""
        self._digits.extend(d for d in digits if d != "w")

    def _error(self, code: int, message: str) -> None:
        self.log.errors.append((code, message))
        self._on_error(code, message)

    def _warn_once(self, code: int, message: str) -> None:
        """A per-stream warning (31950, 31951, 31931): reported the first time only."""
        self.log.rejected.append((code, message))
        if code not in self._reported:
            self._reported.add(code)
            self._error(code, message)

    async def _send(self, ws: ClientConnection, text: str) -> None:
        async with self._send_lock:
            await ws.send(text)

    async def run(self) -> str:
        """Run the stream; return how it ended (``server``, ``hangup`` or ``error``)."""
        signature = RequestValidator(self._token).compute_signature(self.log.url, {})
        try:
            async with websockets.connect(
                self.log.url,
                additional_headers={"X-Twilio-Signature": signature},
                user_agent_header="TwilioProxy/1.1",
                open_timeout=10,
                max_size=2**24,
            ) as ws:
                self.log.ended_by = await self._session(ws)
        except (OSError, TimeoutError, websockets.InvalidHandshake, websockets.InvalidURI) as exc:
            self._error(HANDSHAKE_FAILED, f"Stream - WebSocket - Handshake Error: {exc}")
            self.log.ended_by = "error"
        return self.log.ended_by

    async def _session(self, ws: ClientConnection) -> str:
        await self._send(ws, self._codec.connected())
        await self._send(ws, self._codec.start())
        self.log.started_at = time.monotonic()
        try:
            async with asyncio.TaskGroup() as group:
                reader = group.create_task(self._read(ws))
                hangup = group.create_task(self._stop.wait())
                ticker = group.create_task(self._tick(ws))
                await asyncio.wait({reader, hangup}, return_when=asyncio.FIRST_COMPLETED)
                ticker.cancel()
                hangup.cancel()
                if not reader.done():
                    await self._send(ws, self._codec.stop())
                    await ws.close()
        except* websockets.ConnectionClosed:
            pass
        return "hangup" if self._stop.is_set() else "server"

    async def _read(self, ws: ClientConnection) -> None:
        async for data in ws:
            self.log.received.append(data)
            try:
                message = self._codec.receive(data)
            except StreamFault as fault:
                self._warn_once(fault.twilio_code, fault.message)
                continue
            if isinstance(message, ServerMedia):
                if self.log.first_media_at is None:
                    self.log.first_media_at = time.monotonic()
                if self._playout.queued_bytes + len(message.payload) > MAX_BUFFERED_BYTES:
                    # Whole messages are dropped; whether Twilio keeps the part that
                    # still fits is [unconfirmed].
                    self.log.discarded_bytes += len(message.payload)
                    self._warn_once(MEDIA_DISCARDED, "Stream - Media - Media Discarded")
                    continue
                self._playout.push_media(message.payload)
            elif isinstance(message, ServerMark):
                self._playout.push_mark(message.name)
            else:
                self.log.clears.append(time.monotonic())
                self._on_output({"type": "clear"})
                for name in self._playout.clear():
                    await self._echo_mark(ws, name)

    async def _echo_mark(self, ws: ClientConnection, name: str) -> None:
        self.log.marks_echoed.append(name)
        await self._send(ws, self._codec.mark(name))

    async def _tick(self, ws: ClientConnection) -> None:
        started = time.monotonic()
        sent = 0
        while True:
            due = frames_due(started, time.monotonic(), sent)
            if due > 50:  # the loop stalled for over a second: resume, don't burst
                started = time.monotonic() - sent * FRAME_SECONDS
                due = 1
            for _ in range(due):
                await self._send(ws, self._codec.media(self._inbound.next_frame()))
                sent += 1
                self.log.frames_sent = sent
                played, marks = self._playout.advance(FRAME_BYTES)
                if played:
                    self.log.played += played
                    self._on_output(
                        {
                            "type": "media",
                            "payload": base64.b64encode(played).decode("ascii"),
                        }
                    )
                for name in marks:
                    await self._echo_mark(ws, name)
            while self._digits:
                digit = self._digits.popleft()
                self.log.dtmf_sent.append(digit)
                await self._send(ws, self._codec.dtmf(digit))
            await asyncio.sleep(max(0.0, started + sent * FRAME_SECONDS - time.monotonic()))
