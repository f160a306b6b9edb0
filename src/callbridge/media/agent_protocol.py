"""Sans-I/O codec for the ElevenLabs Agents (Conversational AI) WebSocket, client side.

Implements the server→client messages of
https://elevenlabs.io/docs/agents-platform/customization/events/client-events and the
client→server messages of
https://elevenlabs.io/docs/agents-platform/customization/events/client-to-server-events
(protocols.md §4.3–4.6). Unknown message types decode to
:class:`~callbridge.media.frames.AgentOther` (the platform keeps adding types);
a known type with a malformed body raises :class:`~callbridge.errors.ProtocolError`.

Tolerated variants: the legacy audio shape ``{"type":"audio","audio":{"chunk":…}}``
and ``interruption_event: {"reason": …}`` without an ``event_id``.

Interruption bookkeeping follows the official SDKs: after ``interruption`` with
``event_id`` *n*, audio with ``event_id <= n`` is stale and must not be played.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, ClassVar

import orjson

from callbridge.errors import ProtocolError
from callbridge.media import _wire
from callbridge.media.frames import (
    AgentAudio,
    AgentErrorEvent,
    AgentEvent,
    AgentInterrupted,
    AgentOther,
    AgentPing,
    AgentReady,
    AgentResponse,
    AgentResponseCorrected,
    ToolCall,
    UserTranscript,
)

__all__ = ["DEFAULT_AUDIO_FORMAT", "AgentCodec"]

#: The agent's default for both directions when the metadata does not say (protocols.md §4.5).
DEFAULT_AUDIO_FORMAT = "pcm_16000"

DynamicValue = str | int | float | bool


class AgentCodec:
    """One agent conversation, seen from the client (our bridge).

    Attributes:
        ready: the ``conversation_initiation_metadata`` event, once received.
        last_interrupted_event_id: the highest interrupted response id so far.
    """

    __slots__ = ("_last_audio_event_id", "last_interrupted_event_id", "ready")

    def __init__(self) -> None:
        self.ready: AgentReady | None = None
        self.last_interrupted_event_id: int | None = None
        self._last_audio_event_id = 0

    # --- decoding ---------------------------------------------------------------------

    def decode(self, message: str | bytes) -> list[AgentEvent]:
        """Decode one text frame from the agent server.

        Returns:
            The events it carries (one per message; unknown types give ``AgentOther``).

        Raises:
            ProtocolError: non-JSON or binary data, no string ``type``, or a
                known type whose body lacks a field the bridge needs.
        """
        data = _wire.load_object(message, "agent")
        kind = data.get("type")
        if not isinstance(kind, str):
            raise ProtocolError("agent: message has no string 'type'")
        decoder = self._DECODERS.get(kind)
        if decoder is None:
            return [AgentOther(kind)]
        return [decoder(self, data)]

    def is_stale(self, audio: AgentAudio) -> bool:
        """Whether ``audio`` belongs to a response the caller already interrupted."""
        last = self.last_interrupted_event_id
        return last is not None and audio.event_id <= last

    def _audio(self, data: dict[str, Any]) -> AgentEvent:
        event = data.get("audio_event")
        if isinstance(event, dict):
            event_id = _wire.integer(event, "event_id", "audio")
            self._last_audio_event_id = max(self._last_audio_event_id, event_id)
            return AgentAudio(_wire.text(event, "audio_base_64", "audio"), event_id)
        legacy = data.get("audio")
        if isinstance(legacy, dict):
            # The legacy shape has no event id: it belongs to the latest response seen.
            chunk = _wire.text(legacy, "chunk", "audio")
            legacy_id = _wire.opt_integer(legacy, "event_id", "audio")
            return AgentAudio(chunk, self._last_audio_event_id if legacy_id is None else legacy_id)
        raise ProtocolError("audio: neither 'audio_event' nor legacy 'audio' object")

    def _ping(self, data: dict[str, Any]) -> AgentEvent:
        event = _wire.obj(data, "ping_event", "ping")
        return AgentPing(
            _wire.integer(event, "event_id", "ping"), _wire.opt_integer(event, "ping_ms", "ping")
        )

    def _interruption(self, data: dict[str, Any]) -> AgentEvent:
        event = data.get("interruption_event")
        if event is not None and not isinstance(event, dict):
            raise ProtocolError("interruption: 'interruption_event' must be an object")
        event_id = _wire.opt_integer(event, "event_id", "interruption") if event else None
        # Without an id (legacy `reason` shape) everything received so far is stale.
        mark = self._last_audio_event_id if event_id is None else event_id
        if self.last_interrupted_event_id is None or mark > self.last_interrupted_event_id:
            self.last_interrupted_event_id = mark
        return AgentInterrupted(event_id)

    def _agent_response(self, data: dict[str, Any]) -> AgentEvent:
        event = _wire.obj(data, "agent_response_event", "agent_response")
        return AgentResponse(
            _wire.text(event, "agent_response", "agent_response"),
            _wire.opt_integer(event, "event_id", "agent_response"),
        )

    def _correction(self, data: dict[str, Any]) -> AgentEvent:
        where = "agent_response_correction"
        event = _wire.obj(data, "agent_response_correction_event", where)
        return AgentResponseCorrected(
            _wire.text(event, "original_agent_response", where),
            _wire.text(event, "corrected_agent_response", where),
            _wire.opt_integer(event, "event_id", where),
        )

    def _user_transcript(self, data: dict[str, Any]) -> AgentEvent:
        event = _wire.obj(data, "user_transcription_event", "user_transcript")
        return UserTranscript(
            _wire.text(event, "user_transcript", "user_transcript"),
            _wire.opt_integer(event, "event_id", "user_transcript"),
        )

    def _tool_call(self, data: dict[str, Any]) -> AgentEvent:
        event = _wire.obj(data, "client_tool_call", "client_tool_call")
        params = event.get("parameters") or {}
        if not isinstance(params, dict):
            raise ProtocolError("client_tool_call: 'parameters' must be an object")
        return ToolCall(
            _wire.text(event, "tool_name", "client_tool_call"),
            _wire.text(event, "tool_call_id", "client_tool_call"),
            MappingProxyType(params),
            _wire.opt_integer(event, "event_id", "client_tool_call"),
        )

    def _metadata(self, data: dict[str, Any]) -> AgentEvent:
        where = "conversation_initiation_metadata"
        event = _wire.obj(data, "conversation_initiation_metadata_event", where)
        ready = AgentReady(
            _wire.text(event, "conversation_id", where),
            _wire.opt_text(event, "agent_output_audio_format", where) or DEFAULT_AUDIO_FORMAT,
            _wire.opt_text(event, "user_input_audio_format", where) or DEFAULT_AUDIO_FORMAT,
        )
        self.ready = ready
        return ready

    def _error(self, data: dict[str, Any]) -> AgentEvent:
        event = data.get("error_event")
        if not isinstance(event, dict):
            event = {}
        message = _wire.opt_text(event, "message", "error") or _wire.opt_text(
            event, "reason", "error"
        )
        return AgentErrorEvent(
            _wire.opt_integer(event, "code", "error"),
            message or "",
            _wire.opt_text(event, "error_type", "error"),
        )

    #: The decoder of each known type, shared by every codec (a table of bound methods
    #: in each codec cost ~1.3 KB per call, issue 12's memory).
    _DECODERS: ClassVar[Mapping[str, Callable[[AgentCodec, dict[str, Any]], AgentEvent]]] = (
        MappingProxyType(
            {
                "audio": _audio,
                "ping": _ping,
                "interruption": _interruption,
                "agent_response": _agent_response,
                "agent_response_correction": _correction,
                "user_transcript": _user_transcript,
                "client_tool_call": _tool_call,
                "conversation_initiation_metadata": _metadata,
                "error": _error,
            }
        )
    )

    # --- encoding ---------------------------------------------------------------------

    @staticmethod
    def user_audio(payload_b64: str) -> str:
        """Encode caller audio: ``{"user_audio_chunk": "<base64>"}`` (no ``type``, by design).

        Args:
            payload_b64: base64 audio in the agent's input format, inserted as is.
        """
        return '{"user_audio_chunk":"' + payload_b64 + '"}'

    @staticmethod
    def pong(event_id: int) -> str:
        """Encode the answer to a ``ping``: ``{"type":"pong","event_id":n}``."""
        return '{"type":"pong","event_id":' + str(int(event_id)) + "}"

    @staticmethod
    def initiation(
        dynamic_variables: Mapping[str, DynamicValue],
        first_message: str | None = None,
        language: str | None = None,
    ) -> str:
        """Encode ``conversation_initiation_client_data``.

        Args:
            dynamic_variables: values for the agent's ``{{variables}}``; names
                must not start with ``system__`` (the platform's own).
            first_message: override of the agent's first message (must be
                allowed in the agent's security settings).
            language: override of the agent's language (same condition).

        Raises:
            ProtocolError: for a reserved ``system__`` name or a non-scalar value.
        """
        for name, value in dynamic_variables.items():
            if name.startswith("system__"):
                raise ProtocolError(f"dynamic variable {name!r} uses the reserved system__ prefix")
            if not isinstance(value, str | int | float | bool):
                raise ProtocolError(f"dynamic variable {name!r} must be a string, number or bool")
        message: dict[str, Any] = {
            "type": "conversation_initiation_client_data",
            "dynamic_variables": dict(dynamic_variables),
        }
        agent: dict[str, str] = {}
        if first_message is not None:
            agent["first_message"] = first_message
        if language is not None:
            agent["language"] = language
        if agent:
            message["conversation_config_override"] = {"agent": agent}
        return orjson.dumps(message).decode()

    @staticmethod
    def tool_result(tool_call_id: str, result: str, is_error: bool) -> str:
        """Encode ``client_tool_result`` (``result`` must be a string on the wire)."""
        return orjson.dumps(
            {
                "type": "client_tool_result",
                "tool_call_id": tool_call_id,
                "result": result,
                "is_error": is_error,
            }
        ).decode()

    @staticmethod
    def contextual_update(text: str) -> str:
        """Encode a non-interrupting ``contextual_update``."""
        return orjson.dumps({"type": "contextual_update", "text": text}).decode()

    @staticmethod
    def user_message(text: str) -> str:
        """Encode a typed ``user_message`` (the agent answers it like speech)."""
        return orjson.dumps({"type": "user_message", "text": text}).decode()

    @staticmethod
    def user_activity() -> str:
        """Encode ``user_activity``, which resets the agent's turn timeout."""
        return '{"type":"user_activity"}'
