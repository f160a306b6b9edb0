"""Typed events of the two media wire protocols, as frozen dataclasses.

The codecs in :mod:`callbridge.media.twilio_stream` and
:mod:`callbridge.media.agent_protocol` turn wire messages into these, so the
bridge never handles dicts. Control events that must overtake queued audio
(an agent ``interruption``, a Twilio ``stop``) derive from :class:`Urgent`, so
a queue can let them jump ahead::

    MediaEvent
    ├── StreamConnected, StreamStarted, CallerAudio, CallerDtmf, MarkPlayed   (Twilio)
    ├── AgentReady, AgentAudio, AgentPing, AgentResponse, AgentResponseCorrected,
    │   UserTranscript, ToolCall, AgentErrorEvent, AgentOther                  (agent)
    └── Urgent
        ├── StreamStopped                                                      (Twilio)
        └── AgentInterrupted                                                   (agent)

Base64 audio is kept as the string received so that pass-through (μ-law on both
sides) forwards it without decoding or re-encoding.

See https://www.twilio.com/docs/voice/media-streams/websocket-messages and
https://elevenlabs.io/docs/agents-platform/customization/events/client-events.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

__all__ = [
    "AgentAudio",
    "AgentErrorEvent",
    "AgentEvent",
    "AgentInterrupted",
    "AgentOther",
    "AgentPing",
    "AgentReady",
    "AgentResponse",
    "AgentResponseCorrected",
    "CallerAudio",
    "CallerDtmf",
    "MarkPlayed",
    "MediaEvent",
    "StreamConnected",
    "StreamStarted",
    "StreamStopped",
    "ToolCall",
    "TwilioEvent",
    "Urgent",
    "UserTranscript",
]


class MediaEvent:
    """Base of every decoded media event."""

    __slots__ = ()


class Urgent(MediaEvent):
    """A control event that should be handled before any queued audio."""

    __slots__ = ()


# --- Twilio Media Streams (protocols.md §3.2) -------------------------------------------


@dataclass(frozen=True, slots=True)
class StreamConnected(MediaEvent):
    """Twilio's first message: the socket is up (``{"event": "connected"}``)."""

    protocol: str = "Call"
    version: str = "1.0.0"


@dataclass(frozen=True, slots=True)
class StreamStarted(MediaEvent):
    """The stream's metadata (``{"event": "start"}``); sent once, right after ``connected``."""

    stream_sid: str
    call_sid: str
    account_sid: str
    custom_parameters: Mapping[str, str] = field(hash=False)
    encoding: str = "audio/x-mulaw"
    sample_rate: int = 8000
    channels: int = 1
    tracks: tuple[str, ...] = ("inbound",)


@dataclass(frozen=True, slots=True)
class CallerAudio(MediaEvent):
    """20 ms of the caller's audio (``{"event": "media"}``).

    Attributes:
        payload: base64 of raw μ-law/8000 bytes, the exact string Twilio sent.
        chunk: Twilio's chunk counter (starts at 1).
        timestamp_ms: milliseconds since the stream started.
    """

    payload: str
    chunk: int
    timestamp_ms: int


@dataclass(frozen=True, slots=True)
class CallerDtmf(MediaEvent):
    """The caller pressed a key (``{"event": "dtmf"}``)."""

    digit: str


@dataclass(frozen=True, slots=True)
class MarkPlayed(MediaEvent):
    """Twilio echoes a mark we sent: the audio before it was played or cleared."""

    name: str


@dataclass(frozen=True, slots=True)
class StreamStopped(Urgent):
    """The stream ended (``{"event": "stop"}``), normally because the call ended."""

    call_sid: str | None = None


TwilioEvent: TypeAlias = (
    StreamConnected | StreamStarted | CallerAudio | CallerDtmf | MarkPlayed | StreamStopped
)


# --- ElevenLabs agent WebSocket (protocols.md §4.4) -------------------------------------


@dataclass(frozen=True, slots=True)
class AgentReady(MediaEvent):
    """``conversation_initiation_metadata``: the conversation id and both audio formats."""

    conversation_id: str
    output_format: str
    input_format: str


@dataclass(frozen=True, slots=True)
class AgentAudio(MediaEvent):
    """A chunk of agent speech (``audio``), base64 in the agent's output format, as received."""

    audio: str
    event_id: int


@dataclass(frozen=True, slots=True)
class AgentInterrupted(Urgent):
    """The caller talked over the agent (``interruption``); drop audio up to ``event_id``.

    ``event_id`` is ``None`` for the legacy ``{"reason": …}`` shape.
    """

    event_id: int | None


@dataclass(frozen=True, slots=True)
class AgentPing(MediaEvent):
    """A keep-alive to answer with ``pong`` carrying the same ``event_id``."""

    event_id: int
    ping_ms: int | None


@dataclass(frozen=True, slots=True)
class AgentResponse(MediaEvent):
    """The text of an agent turn (``agent_response``), sent with its first audio chunk."""

    text: str
    event_id: int | None


@dataclass(frozen=True, slots=True)
class AgentResponseCorrected(MediaEvent):
    """The agent's text truncated to what was heard before an interruption."""

    original: str
    corrected: str
    event_id: int | None


@dataclass(frozen=True, slots=True)
class UserTranscript(MediaEvent):
    """What the agent understood the caller said (``user_transcript``)."""

    text: str
    event_id: int | None


@dataclass(frozen=True, slots=True)
class ToolCall(MediaEvent):
    """The agent asks the client to run a tool (``client_tool_call``)."""

    tool_name: str
    tool_call_id: str
    parameters: Mapping[str, Any] = field(hash=False)
    event_id: int | None = None


@dataclass(frozen=True, slots=True)
class AgentErrorEvent(MediaEvent):
    """An ``error`` message, usually sent right before the server closes the socket."""

    code: int | None
    message: str
    error_type: str | None


@dataclass(frozen=True, slots=True)
class AgentOther(MediaEvent):
    """Any other (unknown or ignored) server message, e.g. ``vad_score``."""

    type: str


AgentEvent: TypeAlias = (
    AgentReady
    | AgentAudio
    | AgentInterrupted
    | AgentPing
    | AgentResponse
    | AgentResponseCorrected
    | UserTranscript
    | ToolCall
    | AgentErrorEvent
    | AgentOther
)
