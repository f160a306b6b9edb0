"""ElevenLabs agent WebSocket codec: documented messages in, exact events and bytes out."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from callbridge.errors import ProtocolError
from callbridge.media.agent_protocol import AgentCodec
from callbridge.media.frames import (
    AgentAudio,
    AgentErrorEvent,
    AgentInterrupted,
    AgentOther,
    AgentPing,
    AgentReady,
    AgentResponse,
    AgentResponseCorrected,
    ToolCall,
    Urgent,
    UserTranscript,
)

FIXTURE = Path(__file__).parent.parent / "fixtures" / "elevenlabs_agent_messages.jsonl"


class TestServerMessages:
    def test_documented_messages_decode_to_exact_events(self) -> None:
        """Every documented server message decodes; unknown types become AgentOther."""
        codec = AgentCodec()
        events = [e for line in FIXTURE.read_text().splitlines() for e in codec.decode(line)]
        assert events == [
            AgentReady("conv_01jz8m3k4e5f6g7h8j9k0m1n2p", "ulaw_8000", "ulaw_8000"),
            AgentPing(1, None),
            AgentResponse("Hello! How can I help you today?", 2),
            AgentAudio("/////39/f3//fn5+fn5+fn5+", 2),
            UserTranscript("Hi", 3),
            AgentOther("vad_score"),
            AgentOther("internal_tentative_agent_response"),
            ToolCall("logMessage", "call_123", {"message": "hi"}, 4),
            AgentInterrupted(2),
            AgentResponseCorrected(
                "Let me tell you about the complete history of the French Revolution",
                "Let me tell you about",
                5,
            ),
            AgentPing(6, 50),
            AgentOther("agent_tool_response"),
            AgentErrorEvent(1008, "Missing required dynamic variables", "missing_dynamic_variable"),
        ]
        assert codec.ready == events[0]
        assert isinstance(events[8], Urgent)

    def test_legacy_audio_and_interruption_shapes(self) -> None:
        """The legacy ``audio.chunk`` and ``interruption_event.reason`` shapes are tolerated."""
        codec = AgentCodec()
        codec.decode('{"type":"audio","audio_event":{"audio_base_64":"AAAA","event_id":7}}')
        (legacy,) = codec.decode('{"type":"audio","audio":{"chunk":"BBBB"}}')
        assert legacy == AgentAudio("BBBB", 7)
        (interrupted,) = codec.decode('{"type":"interruption","interruption_event":{"reason":"x"}}')
        assert interrupted == AgentInterrupted(None)
        assert codec.last_interrupted_event_id == 7

    def test_stale_audio_after_interruption(self) -> None:
        """Audio with event_id <= the interrupted id is stale; later ids are not."""
        codec = AgentCodec()
        assert not codec.is_stale(AgentAudio("x", 0))
        codec.decode('{"type":"interruption","interruption_event":{"event_id":5}}')
        assert codec.is_stale(AgentAudio("x", 5))
        assert codec.is_stale(AgentAudio("x", 4))
        assert not codec.is_stale(AgentAudio("x", 6))
        codec.decode('{"type":"interruption","interruption_event":{"event_id":3}}')
        assert codec.last_interrupted_event_id == 5

    def test_metadata_without_formats_defaults_to_pcm_16000(self) -> None:
        """Missing formats fall back to the agent default, pcm_16000."""
        (ready,) = AgentCodec().decode(
            '{"type":"conversation_initiation_metadata",'
            '"conversation_initiation_metadata_event":{"conversation_id":"conv_1"}}'
        )
        assert ready == AgentReady("conv_1", "pcm_16000", "pcm_16000")

    @pytest.mark.parametrize(
        "frame",
        [
            "nope",
            b"\x80\x81",
            '{"no_type":1}',
            '{"type":7}',
            '{"type":"audio"}',
            '{"type":"audio","audio_event":{"audio_base_64":"x"}}',
            '{"type":"ping","ping_event":{"event_id":"x1"}}',
            '{"type":"client_tool_call","client_tool_call":{"tool_name":"t"}}',
            '{"type":"agent_response","agent_response_event":{"agent_response":5}}',
        ],
    )
    def test_malformed_known_messages_raise(self, frame: str | bytes) -> None:
        """Malformed frames or known types without their fields raise ProtocolError."""
        with pytest.raises(ProtocolError):
            AgentCodec().decode(frame)


class TestClientMessages:
    def test_exact_bytes(self) -> None:
        """Client messages match the documented shapes byte for byte."""
        codec = AgentCodec()
        assert codec.user_audio("//8=") == '{"user_audio_chunk":"//8="}'
        assert codec.pong(12345) == '{"type":"pong","event_id":12345}'
        assert codec.user_activity() == '{"type":"user_activity"}'
        assert codec.contextual_update("Caller pressed keypad key: 0") == (
            '{"type":"contextual_update","text":"Caller pressed keypad key: 0"}'
        )
        assert codec.tool_result("call_1", "done", False) == (
            '{"type":"client_tool_result","tool_call_id":"call_1","result":"done","is_error":false}'
        )
        assert codec.user_message("hi") == '{"type":"user_message","text":"hi"}'

    def test_initiation(self) -> None:
        """Initiation data carries dynamic variables and only the overrides given."""
        codec = AgentCodec()
        assert orjson.loads(codec.initiation({"visitor_name": "Ann", "n": 2, "vip": True})) == {
            "type": "conversation_initiation_client_data",
            "dynamic_variables": {"visitor_name": "Ann", "n": 2, "vip": True},
        }
        assert orjson.loads(codec.initiation({}, first_message="Hi", language="fr")) == {
            "type": "conversation_initiation_client_data",
            "dynamic_variables": {},
            "conversation_config_override": {"agent": {"first_message": "Hi", "language": "fr"}},
        }

    def test_initiation_refuses_system_variables(self) -> None:
        """``system__`` names are reserved by the platform."""
        with pytest.raises(ProtocolError):
            AgentCodec().initiation({"system__call_sid": "CA1"})


_types = st.sampled_from(
    [
        "audio",
        "ping",
        "interruption",
        "agent_response",
        "agent_response_correction",
        "user_transcript",
        "client_tool_call",
        "conversation_initiation_metadata",
        "error",
        "vad_score",
    ]
)
_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.dictionaries(
        st.sampled_from(
            [
                "event_id",
                "audio_base_64",
                "chunk",
                "ping_ms",
                "tool_name",
                "tool_call_id",
                "parameters",
                "conversation_id",
                "message",
                "code",
                "agent_response",
                "user_transcript",
                "reason",
            ]
        ),
        inner,
        max_size=5,
    ),
    max_leaves=10,
)
_near_valid = st.builds(
    lambda t, body: json.dumps({"type": t, **body}),
    _types,
    st.dictionaries(
        st.sampled_from(
            [
                "audio_event",
                "audio",
                "ping_event",
                "interruption_event",
                "agent_response_event",
                "client_tool_call",
                "error_event",
                "conversation_initiation_metadata_event",
                "user_transcription_event",
                "agent_response_correction_event",
            ]
        ),
        _values,
        max_size=3,
    ),
)


class TestFuzz:
    @given(st.one_of(st.text(), st.binary(), _near_valid))
    def test_any_input_decodes_or_raises_protocol_error(self, frame: str | bytes) -> None:
        """Any str or bytes either decodes or raises ProtocolError."""
        try:
            AgentCodec().decode(frame)
        except ProtocolError:
            pass
