"""The sandbox's demo agent: one conversation's behaviour, server side.

It plays the part of an ElevenLabs agent on the conversation WebSocket
(https://elevenlabs.io/docs/agents-platform/customization/events/client-events;
protocols.md §4.2–4.8): ``conversation_initiation_metadata`` first, a greeting
built from the dynamic variables (``agent_response`` then ``audio`` chunks that
share one ``event_id``, streamed faster than real time), ``ping`` on a timer,
energy-based speech detection on ``user_audio_chunk`` (a minimum speech
duration, a hang-over, steady tones ignored: :class:`~callbridge.media.energy.SpeechDetector`)
that sends ``interruption`` when the caller talks over a response still playing
(by the agent's own clock) and, when they stop, a ``user_transcript`` (a fixed
stand-in text: the demo recognises no words) and an answer naming the visitor and
how long they spoke,
and ``client_tool_call`` for keypad keys reported as contextual updates.

The socket itself belongs to :mod:`.emulator`; this module only
gets a ``send`` coroutine, a ``spawn`` function for background work, and an
``end`` coroutine to close the conversation.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from callbridge.media.energy import SpeechDetector, SpeechEnded, SpeechStarted
from callbridge.media.transcode import AudioFormat
from callbridge.sandbox.elevenlabs.voice import Voice

__all__ = [
    "STAND_IN_TRANSCRIPT",
    "STILL_THERE",
    "ConversationRecord",
    "DemoAgent",
    "TranscriptTurn",
]

#: What the agent says when the user stays silent past the turn timeout.
STILL_THERE = "Are you still there?"
#: The caller's words as the demo "hears" them: it has no speech recogniser.
STAND_IN_TRANSCRIPT = "[sandbox stand-in transcript: the demo agent cannot hear words]"
#: The demo's answers to an utterance, in turn: canned, naming the visitor.
_REPLIES = (
    "Thanks, {name}. You spoke for {seconds} seconds. This demo cannot understand words, "
    "but a person can call you back. Press 0 to talk to one.",
    "I heard {seconds} seconds from you, {name}. I'm only the sandbox agent, so I can't "
    "tell what you said. Press star to hang up.",
    "Got it, {name}: that was {seconds} seconds. Keep talking if you like; I answer "
    "whenever you pause.",
)
_KEYPAD = re.compile(r"keypad key:\s*([0-9*#])", re.IGNORECASE)
_VARIABLE = re.compile(r"\{\{\s*([A-Za-z0-9_]+)\s*\}\}")

Send = Callable[[dict[str, Any]], Awaitable[None]]
#: Told of each turn as it is sent: the conversation's ``call_id`` dynamic variable ("" if
#: none), ``"agent"`` or ``"user"``, the text and its ``event_id`` (an interrupted agent
#: response is told again, cut to what was heard). The sandbox phone shows them as captions.
TurnListener = Callable[[str, str, str, int], None]
Spawn = Callable[[Coroutine[Any, Any, None]], "asyncio.Task[None]"]
End = Callable[[int, str], Awaitable[None]]


@dataclass
class TranscriptTurn:
    """One turn of the post-call transcript."""

    role: str
    message: str | None
    time_in_call_secs: int
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    tool_results: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class ConversationRecord:
    """Everything the emulator saw of one conversation, for tests and the webhook."""

    conversation_id: str
    agent_id: str
    started_at: float
    authorization_method: str = "public"
    init_data: dict[str, Any] | None = None
    dynamic_variables: dict[str, Any] = field(default_factory=dict)
    overrides: dict[str, Any] = field(default_factory=dict)
    user_audio_bytes: int = 0
    user_audio_chunks: int = 0
    pings: list[int] = field(default_factory=list)
    pongs: list[int] = field(default_factory=list)
    responses: list[str] = field(default_factory=list)
    interruptions: list[int] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    tool_results: list[dict[str, Any]] = field(default_factory=list)
    contextual_updates: list[str] = field(default_factory=list)
    user_messages: list[str] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    transcript: list[TranscriptTurn] = field(default_factory=list)
    turn_timeouts: int = 0
    close_code: int | None = None
    close_reason: str = ""
    closed_by: str | None = None
    ended_at: float | None = None
    webhook_status: int | None = None


@dataclass
class _Response:
    event_id: int
    text: str
    total_bytes: int
    started: float | None = None
    bytes_sent: int = 0
    interrupted: bool = False


class DemoAgent:
    """The demo agent's side of one conversation.

    Args:
        record: where everything is written down.
        send: sends one server message (a JSON object).
        spawn: runs a coroutine in the conversation's task group.
        end: closes the conversation with a close code and reason.
        output_format: what ``audio`` carries.
        input_format: what ``user_audio_chunk`` carries.
        voice: text to audio.
        chunk_ms: audio per ``audio`` message.
        stream_speed: how many times faster than real time audio is sent.
        tool_timeout: seconds to wait for a ``client_tool_result``.
        turn_timeout: see :meth:`turn_timer` (``None``: no turn timeout).
        clock: monotonic seconds.
        tools: names of the client tools the agent has (``None``: any); asked for
            another, it says it cannot.
        on_turn: told of each agent response and user transcript as it is sent.
    """

    def __init__(
        self,
        record: ConversationRecord,
        *,
        send: Send,
        spawn: Spawn,
        end: End,
        output_format: AudioFormat,
        input_format: AudioFormat,
        voice: Voice,
        chunk_ms: int = 200,
        stream_speed: float = 4.0,
        tool_timeout: float = 20.0,
        turn_timeout: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        tools: frozenset[str] | None = None,
        on_turn: TurnListener | None = None,
    ) -> None:
        self._tools = tools
        self._on_turn = on_turn
        self._turn_timeout = turn_timeout
        self._user_active_at = clock()
        self._prompted_after: int | None = None
        self.record = record
        self._send = send
        self._spawn = spawn
        self._end = end
        self._out = output_format
        self._in = input_format
        self._voice = voice
        self._chunk_bytes = max(2, output_format.bytes_per_second * chunk_ms // 1000 // 2 * 2)
        self._chunk_s = self._chunk_bytes / output_format.bytes_per_second
        self._speed = stream_speed
        self._tool_timeout = tool_timeout
        self._clock = clock
        self._started = clock()
        self._event_id = 0
        self._current: _Response | None = None
        self._speaking: asyncio.Task[None] | None = None
        self._pending_tools: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._ping_sent: dict[int, float] = {}
        self._last_rtt_ms: int | None = None
        self.init_received = asyncio.Event()
        self._detector = SpeechDetector(input_format.rate)
        self._replies = 0

    # --- timeline ---------------------------------------------------------------------

    def _next_id(self) -> int:
        self._event_id += 1
        return self._event_id

    def _call_secs(self) -> int:
        return int(self._clock() - self._started)

    def metadata(self) -> dict[str, Any]:
        """The first server message."""
        return {
            "type": "conversation_initiation_metadata",
            "conversation_initiation_metadata_event": {
                "conversation_id": self.record.conversation_id,
                "agent_output_audio_format": str(self._out),
                "user_input_audio_format": str(self._in),
            },
        }

    def greeting(self) -> str:
        """The first message: the override if allowed and given, else the demo greeting."""
        variables = self.record.dynamic_variables
        agent = self.record.overrides.get("agent")
        override = agent.get("first_message") if isinstance(agent, dict) else None
        if isinstance(override, str) and override.strip():
            return _VARIABLE.sub(lambda m: str(variables.get(m.group(1), m.group(0))), override)
        name = variables.get("visitor_name") or "there"
        reason = variables.get("reason") or "a call back"
        return (
            f"Hi {name}! This is the callbridge demo agent. You asked about {reason}. "
            "Press 0 to talk to a person, or star to hang up."
        )

    async def pinger(self, interval: float) -> None:
        """Send ``ping`` every ``interval`` seconds (the first without ``ping_ms``)."""
        while True:
            await asyncio.sleep(interval)
            event_id = self._next_id()
            self._ping_sent[event_id] = self._clock()
            self.record.pings.append(event_id)
            await self._send(
                {"type": "ping", "ping_event": {"event_id": event_id, "ping_ms": self._last_rtt_ms}}
            )

    async def turn_timer(self) -> None:
        """Ask "Are you still there?" once after the user stayed silent for the turn timeout.

        The timer runs from the end of the agent's last words by its own clock (when
        the audio it sent would have finished playing), or from the user's last sign
        of life (speech, ``user_activity``, a typed message), whichever is later.
        """
        assert self._turn_timeout is not None
        while True:
            await asyncio.sleep(0.05)
            response = self._current
            if response is None or response.started is None or response.interrupted:
                continue
            if response.text == STILL_THERE or self._prompted_after == response.event_id:
                continue
            if self._playing() is not None:
                continue
            words_ended = response.started + response.total_bytes / self._out.bytes_per_second
            if self._clock() - max(words_ended, self._user_active_at) >= self._turn_timeout:
                self._prompted_after = response.event_id
                self.record.turn_timeouts += 1
                self.say(STILL_THERE)

    # --- speaking ---------------------------------------------------------------------

    def say(self, text: str) -> None:
        """Start a new response, cutting off the one playing (if any)."""
        if self._speaking is not None and not self._speaking.done():
            self._speaking.cancel()
        self._speaking = self._spawn(self._speak(text))

    def _playing(self) -> _Response | None:
        response = self._current
        if response is None or response.interrupted or response.started is None:
            return None
        played_until = response.started + response.bytes_sent / self._out.bytes_per_second
        unsent = response.bytes_sent < response.total_bytes
        return response if unsent or self._clock() < played_until else None

    async def _speak(self, text: str) -> None:
        audio = await self._voice.synthesize(text, self._out)
        response = _Response(self._next_id(), text, len(audio))
        self._current = response
        self.record.responses.append(text)
        self.record.transcript.append(TranscriptTurn("agent", text, self._call_secs()))
        self._tell("agent", text, response.event_id)
        await self._send(
            {
                "type": "agent_response",
                "agent_response_event": {"agent_response": text, "event_id": response.event_id},
            }
        )
        response.started = self._clock()
        for offset in range(0, len(audio), self._chunk_bytes):
            if response.interrupted:
                return
            chunk = audio[offset : offset + self._chunk_bytes]
            await self._send(
                {
                    "type": "audio",
                    "audio_event": {
                        "audio_base_64": base64.b64encode(chunk).decode("ascii"),
                        "event_id": response.event_id,
                    },
                }
            )
            response.bytes_sent += len(chunk)
            await asyncio.sleep(self._chunk_s / self._speed)

    def _tell(self, role: str, text: str, event_id: int) -> None:
        if self._on_turn is not None:
            call_id = str(self.record.dynamic_variables.get("call_id") or "")
            self._on_turn(call_id, role, text, event_id)

    async def _interrupt(self, response: _Response) -> None:
        response.interrupted = True  # the streaming loop stops before its next chunk
        self.record.interruptions.append(response.event_id)
        await self._send(
            {"type": "interruption", "interruption_event": {"event_id": response.event_id}}
        )
        assert response.started is not None
        heard = (self._clock() - response.started) * self._out.bytes_per_second
        fraction = min(1.0, heard / max(1, response.total_bytes))
        corrected = response.text[: int(len(response.text) * fraction)].rstrip() + "..."
        self._tell("agent", corrected, response.event_id)
        await self._send(
            {
                "type": "agent_response_correction",
                "agent_response_correction_event": {
                    "original_agent_response": response.text,
                    "corrected_agent_response": corrected,
                    "event_id": response.event_id,
                },
            }
        )

    # --- client messages --------------------------------------------------------------

    async def on_message(self, data: dict[str, Any]) -> None:
        """Handle one client message (already parsed)."""
        audio = data.get("user_audio_chunk")
        if isinstance(audio, str):
            await self._on_audio(audio)
            return
        self.record.messages.append(data)
        kind = data.get("type")
        if kind in ("user_activity", "user_message"):
            self._user_active_at = self._clock()
        if kind == "pong":
            self._on_pong(data.get("event_id"))
        elif kind == "conversation_initiation_client_data":
            self._on_init(data)
        elif kind == "contextual_update":
            self._on_contextual_update(str(data.get("text", "")))
        elif kind == "user_message":
            text = str(data.get("text", ""))
            self.record.user_messages.append(text)
            self.record.transcript.append(TranscriptTurn("user", text, self._call_secs()))
            self.say(f"You wrote: {text}. Thank you, I will pass it on.")
        elif kind == "client_tool_result":
            self._on_tool_result(data)

    def _on_init(self, data: dict[str, Any]) -> None:
        self.record.init_data = data
        variables = data.get("dynamic_variables")
        if isinstance(variables, dict):
            # Names starting with system__ are the platform's own; ignore them.
            self.record.dynamic_variables.update(
                {k: v for k, v in variables.items() if not str(k).startswith("system__")}
            )
        overrides = data.get("conversation_config_override")
        if isinstance(overrides, dict):
            self.record.overrides = overrides
        self.init_received.set()

    def _on_pong(self, event_id: Any) -> None:
        if not isinstance(event_id, int) or isinstance(event_id, bool):
            return
        self.record.pongs.append(event_id)
        sent = self._ping_sent.pop(event_id, None)
        if sent is not None:
            self._last_rtt_ms = int((self._clock() - sent) * 1000)

    async def _on_audio(self, payload: str) -> None:
        try:
            raw = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            return
        self.record.user_audio_bytes += len(raw)
        self.record.user_audio_chunks += 1
        if self._in.encoding == "ulaw":
            changes = self._detector.feed_ulaw(raw)
        else:
            changes = self._detector.feed_pcm16(raw)
        if changes or self._detector.speaking:
            self._user_active_at = self._clock()  # no turn timeout while the user talks
        # Replies go out from their own tasks: the receive loop never waits on a send,
        # so a client slow to read our audio cannot also stop us reading its audio.
        for change in changes:
            if isinstance(change, SpeechStarted):
                playing = self._playing()
                if playing is not None:
                    playing.interrupted = True  # no further chunk of it, from now
                    self._spawn(self._interrupt(playing))
            elif isinstance(change, SpeechEnded):
                self._spawn(self._on_speech_end(change.duration_ms))

    async def _on_speech_end(self, duration_ms: int) -> None:
        seconds = f"{duration_ms / 1000:.1f}"
        # The demo has no speech recogniser: the transcript is a fixed stand-in that says
        # so, sent in ElevenLabs' own message shape (protocols.md §4.5).
        text = f"{STAND_IN_TRANSCRIPT} ({seconds} s of speech)"
        self.record.transcript.append(TranscriptTurn("user", text, self._call_secs()))
        event_id = self._next_id()
        self._tell("user", text, event_id)
        await self._send(
            {
                "type": "user_transcript",
                "user_transcription_event": {"user_transcript": text, "event_id": event_id},
            }
        )
        name = str(self.record.dynamic_variables.get("visitor_name") or "").strip() or "there"
        reply = _REPLIES[self._replies % len(_REPLIES)]
        self._replies += 1
        self.say(reply.format(name=name, seconds=seconds))

    def _on_contextual_update(self, text: str) -> None:
        self.record.contextual_updates.append(text)
        match = _KEYPAD.search(text)
        if match is None:
            return
        key = match.group(1)
        if key == "*":
            self._spawn(self._call_tool("end_call", {}))
        elif key == "0":
            self._spawn(self._call_tool("transfer_to_human", {"reason": "caller asked"}))

    def _on_tool_result(self, data: dict[str, Any]) -> None:
        self.record.tool_results.append(data)
        future = self._pending_tools.pop(str(data.get("tool_call_id")), None)
        if future is not None and not future.done():
            future.set_result(data)
        if self.record.transcript:
            self.record.transcript[-1].tool_results.append(data)

    async def _call_tool(self, name: str, parameters: dict[str, Any]) -> None:
        if self._tools is not None and name not in self._tools:
            self.say("Sorry, I can't do that on this call.")
            return
        call_id = "toolu_" + secrets.token_hex(12)
        call = {
            "tool_name": name,
            "tool_call_id": call_id,
            "parameters": parameters,
            "event_id": self._next_id(),
        }
        self.record.tool_calls.append(call)
        self.record.transcript.append(
            TranscriptTurn("agent", None, self._call_secs(), tool_calls=[call])
        )
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending_tools[call_id] = future
        await self._send({"type": "client_tool_call", "client_tool_call": call})
        try:
            result = await asyncio.wait_for(future, self._tool_timeout)
        except TimeoutError:
            self._pending_tools.pop(call_id, None)
            return
        if name == "end_call":
            await self._end(1000, "end_call tool: agent ended the call")
        elif name == "transfer_to_human" and not result.get("is_error"):
            self.say("Connecting you to a person now.")
