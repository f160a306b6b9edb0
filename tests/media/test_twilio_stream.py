"""Twilio Media Streams codec: recorded vectors in, exact events and bytes out."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from callbridge.errors import ProtocolError
from callbridge.media.frames import (
    CallerAudio,
    CallerDtmf,
    MarkPlayed,
    StreamConnected,
    StreamStarted,
    StreamStopped,
    Urgent,
)
from callbridge.media.twilio_stream import TwilioStreamCodec

FIXTURE = Path(__file__).parent.parent / "fixtures" / "twilio_media_stream.jsonl"
SID = "MZ18ad3ab5a668481ce02b83e7395059f0"
CALL = "CA2b4c6d8e0f2a4c6e8a0c2e4a6c8e0a2b"


def recorded() -> list[str]:
    return FIXTURE.read_text().splitlines()


def started_codec() -> TwilioStreamCodec:
    codec = TwilioStreamCodec()
    for line in recorded()[:2]:
        codec.decode(line)
    return codec


class TestRecordedSession:
    def test_recorded_session_decodes_to_exact_events(self) -> None:
        """A recorded connected/start/media/dtmf/mark/stop session decodes in order."""
        lines = recorded()
        codec = TwilioStreamCodec()
        events = [event for line in lines for event in codec.decode(line)]
        payloads = [json.loads(line)["media"]["payload"] for line in lines if '"media"' in line]
        assert events == [
            StreamConnected("Call", "1.0.0"),
            StreamStarted(
                stream_sid=SID,
                call_sid=CALL,
                account_sid="AC0123456789abcdef0123456789abcdef",
                custom_parameters={"call_id": "c_42", "token": "tok_abc"},
                encoding="audio/x-mulaw",
                sample_rate=8000,
                channels=1,
                tracks=("inbound",),
            ),
            CallerAudio(payloads[0], 1, 5),
            CallerAudio(payloads[1], 2, 25),
            CallerDtmf("1"),
            CallerAudio(payloads[2], 3, 45),
            MarkPlayed("response-1"),
            StreamStopped(CALL),
        ]
        assert codec.stream_sid == SID

    def test_payload_is_the_same_string_object_content(self) -> None:
        """The media payload is kept exactly as sent (216 base64 chars per 20 ms)."""
        codec = started_codec()
        (event,) = codec.decode(recorded()[2])
        assert isinstance(event, CallerAudio)
        assert len(event.payload) == 216
        assert event.payload == json.loads(recorded()[2])["media"]["payload"]

    def test_stop_is_urgent_and_bytes_input_is_accepted(self) -> None:
        """``stop`` is an Urgent event; a UTF-8 bytes frame decodes like text."""
        codec = started_codec()
        (event,) = codec.decode(recorded()[-1].encode())
        assert isinstance(event, Urgent)


class TestOutbound:
    def test_media_bytes_exact(self) -> None:
        """Outbound media is Twilio's documented shape, byte for byte."""
        codec = started_codec()
        assert codec.media("//79") == (
            '{"event":"media","streamSid":"' + SID + '","media":{"payload":"//79"}}'
        )
        assert orjson.loads(codec.media("//79")) == {
            "event": "media",
            "streamSid": SID,
            "media": {"payload": "//79"},
        }

    def test_mark_and_clear_bytes_exact(self) -> None:
        """Mark names are JSON-escaped; clear carries only the stream sid."""
        codec = started_codec()
        assert codec.mark('r"1') == (
            '{"event":"mark","streamSid":"' + SID + '","mark":{"name":"r\\"1"}}'
        )
        assert codec.clear() == '{"event":"clear","streamSid":"' + SID + '"}'

    @pytest.mark.parametrize("encode", ["media", "mark", "clear"])
    def test_encoders_refuse_before_start(self, encode: str) -> None:
        """Nothing can be sent before ``start`` gave the stream sid."""
        codec = TwilioStreamCodec()
        with pytest.raises(ProtocolError):
            if encode == "clear":
                codec.clear()
            else:
                getattr(codec, encode)("x")


class TestInvalidMessages:
    @pytest.mark.parametrize(
        "frame",
        [
            "not json",
            b"\xff\xfe\x00binary",
            "[]",
            '{"event":"bogus"}',
            '{"event":"media","streamSid":"' + SID + '","media":{"chunk":"1","timestamp":"0"}}',
            '{"event":"media","streamSid":"' + SID + '","media":{"payload":"x","chunk":"one",'
            '"timestamp":"0"}}',
            '{"event":"media","streamSid":"MZother","media":{"payload":"x","chunk":"1",'
            '"timestamp":"0"}}',
            '{"event":"dtmf","streamSid":"' + SID + '","dtmf":{"digit":"12"}}',
            '{"event":"mark","streamSid":"' + SID + '","mark":{}}',
        ],
    )
    def test_malformed_frames_raise_protocol_error(self, frame: str | bytes) -> None:
        """Undecodable frames raise ProtocolError and nothing else."""
        with pytest.raises(ProtocolError):
            started_codec().decode(frame)

    def test_media_before_start_is_refused(self) -> None:
        """A media message before ``start`` is a protocol error."""
        with pytest.raises(ProtocolError):
            TwilioStreamCodec().decode(recorded()[2])

    def test_second_start_is_refused(self) -> None:
        """``start`` comes once per stream."""
        with pytest.raises(ProtocolError):
            started_codec().decode(recorded()[1])


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
_near_valid = st.fixed_dictionaries(
    {"event": st.sampled_from(["connected", "start", "media", "dtmf", "mark", "stop", "x"])},
    optional={
        "streamSid": st.sampled_from([SID, "MZx", 3]),
        "media": _json_values,
        "start": _json_values,
        "dtmf": _json_values,
        "mark": _json_values,
        "stop": _json_values,
    },
).map(json.dumps)


class TestFuzz:
    @given(st.one_of(st.text(), st.binary(), _near_valid))
    def test_any_input_decodes_or_raises_protocol_error(self, frame: str | bytes) -> None:
        """Any str or bytes either decodes or raises ProtocolError."""
        for codec in (TwilioStreamCodec(), started_codec()):
            try:
                codec.decode(frame)
            except ProtocolError:
                pass


class TestDecodeHot:
    def test_a_recorded_session_decodes_hot_as_it_decodes(self) -> None:
        """decode_hot gives a well-formed media message's bare payload and every other
        message's events exactly as decode does."""
        lines = recorded()
        plain, hot = TwilioStreamCodec(), TwilioStreamCodec()
        for line in lines:
            events = plain.decode(line)
            got = hot.decode_hot(line)
            if isinstance(got, str):
                (audio,) = events
                assert isinstance(audio, CallerAudio) and audio.payload == got
            else:
                assert got == events
        assert any(isinstance(hot.decode_hot(line), str) for line in lines if '"media"' in line)

    def test_media_that_the_fast_checks_refuse_takes_the_checked_path(self) -> None:
        """A media message with an integer chunk is still audio (an event, checked), and
        one for another stream is refused as decode refuses it."""
        codec = started_codec()
        odd = {"event": "media", "streamSid": SID, "media": {"payload": "AA==", "chunk": 3}}
        odd["media"]["timestamp"] = "60"
        assert codec.decode_hot(orjson.dumps(odd)) == [CallerAudio("AA==", 3, 60)]
        other = {"event": "media", "streamSid": "MZ" + "0" * 32, "media": odd["media"]}
        with pytest.raises(ProtocolError):
            codec.decode_hot(orjson.dumps(other))
        with pytest.raises(ProtocolError):
            codec.decode_hot("not json")
