"""The callee script parser, callee audio and the sans-I/O stream pieces."""

from __future__ import annotations

import base64
import json
import wave
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from callbridge.errors import ValidationFailed
from callbridge.sandbox.callee import (
    DEFAULT_CALLEE_SCRIPT,
    CalleeScript,
    InboundAudio,
    Pickup,
    builtin_sample,
    load_wav_ulaw,
    parse_callee_script,
)
from callbridge.sandbox.twilio.media import (
    Playout,
    ServerClear,
    ServerMark,
    ServerMedia,
    StreamCodec,
    StreamFault,
    frames_due,
)


def test_default_script_parses() -> None:
    """The default script answers after 2 s, presses 1, speaks the sample, hangs up at 60 s."""
    assert parse_callee_script(DEFAULT_CALLEE_SCRIPT) == CalleeScript(
        Pickup.ANSWER, 2.0, "1", "builtin", 60.0
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("busy", CalleeScript(pickup=Pickup.BUSY)),
        ("no-answer", CalleeScript(pickup=Pickup.NO_ANSWER)),
        (" reject ", CalleeScript(pickup=Pickup.REJECT)),
        ("fail", CalleeScript(pickup=Pickup.FAIL)),
        (
            "answer=0.5, speak=/tmp/a.wav, digits=12#",
            CalleeScript(answer_after=0.5, digits="12#", speak="/tmp/a.wav"),
        ),
        ("hangup=3", CalleeScript(hangup_after=3.0)),
    ],
)
def test_valid_scripts(text: str, expected: CalleeScript) -> None:
    """Each documented step parses into the script it names."""
    assert parse_callee_script(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "answer=x",
        "answer=-1",
        "busy,no-answer",
        "digits=",
        "digits=12a",
        "speak=",
        "hangup",
        "jump",
        "busy=1",
        "answer=1,answer=2",
        "answer=nan",
    ],
)
def test_invalid_scripts_raise_validation_failed(text: str) -> None:
    """A bad step raises ValidationFailed with a message naming it."""
    with pytest.raises(ValidationFailed) as caught:
        parse_callee_script(text)
    assert str(caught.value)


@given(
    st.text(
        alphabet=st.sampled_from(list("answerbusydigitspkhanup=-,.0123456789#* x")), max_size=40
    )
    | st.text(max_size=40)
)
def test_any_string_parses_or_raises_validation_failed(text: str) -> None:
    """Any string either parses into a CalleeScript or raises ValidationFailed."""
    try:
        result = parse_callee_script(text)
    except ValidationFailed:
        return
    assert isinstance(result, CalleeScript)


def test_wav_is_resampled_to_8k_ulaw(tmp_path: Path) -> None:
    """A 16 kHz stereo WAV becomes 8 kHz mono μ-law of half the sample count."""
    path = tmp_path / "in.wav"
    samples = (np.sin(np.arange(16000) / 10) * 10000).astype("<i2")
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(16000)
        wav.writeframes(np.repeat(samples, 2).tobytes())
    ulaw = load_wav_ulaw(path)
    assert len(ulaw) == 8000 and len(set(ulaw)) > 10


def test_missing_wav_is_validation_failed(tmp_path: Path) -> None:
    """A WAV that cannot be read raises ValidationFailed."""
    with pytest.raises(ValidationFailed):
        load_wav_ulaw(tmp_path / "missing.wav")


def test_builtin_sample_is_audible_ulaw() -> None:
    """The built-in sample is non-silent 8 kHz μ-law of under ten seconds."""
    sample = builtin_sample()
    assert 1000 < len(sample) < 80_000 and len(set(sample)) > 10


def test_inbound_audio_pads_with_silence() -> None:
    """The microphone yields 160-byte frames: queued audio first, then 0xFF silence."""
    mic = InboundAudio()
    mic.enqueue(b"\x01" * 200)
    assert mic.next_frame() == b"\x01" * 160
    assert mic.next_frame() == b"\x01" * 40 + b"\xff" * 120
    assert mic.next_frame() == b"\xff" * 160 and not mic.speaking


class TestStreamCodec:
    """The Twilio side of the Media Streams wire format."""

    def codec(self) -> StreamCodec:
        return StreamCodec(
            account_sid="AC1", call_sid="CA1", stream_sid="MZ1", custom_parameters={"a": "b"}
        )

    def test_sequence_numbers_count_from_start(self) -> None:
        """connected has no sequenceNumber; start is 1 and each later message adds one."""
        codec = self.codec()
        assert "sequenceNumber" not in json.loads(codec.connected())
        numbers = [
            json.loads(m)["sequenceNumber"]
            for m in (
                codec.start(),
                codec.media(b"\xff" * 160),
                codec.dtmf("1"),
                codec.mark("x"),
                codec.stop(),
            )
        ]
        assert numbers == ["1", "2", "3", "4", "5"]

    def test_receive_decodes_media_mark_clear(self) -> None:
        """media, mark and clear with the right streamSid decode to typed messages."""
        codec = self.codec()
        payload = base64.b64encode(b"\x01\x02").decode()
        media = {"event": "media", "streamSid": "MZ1", "media": {"payload": payload}}
        assert codec.receive(json.dumps(media)) == ServerMedia(b"\x01\x02")
        assert codec.receive(
            json.dumps({"event": "mark", "streamSid": "MZ1", "mark": {"name": "n"}})
        ) == ServerMark("n")
        assert codec.receive(json.dumps({"event": "clear", "streamSid": "MZ1"})) == ServerClear()

    @pytest.mark.parametrize(
        ("data", "code"),
        [
            (b"\x00", 31950),
            ("{", 31951),
            ("[]", 31951),
            ('{"event":"media","streamSid":"MZ1"}', 31951),
            ('{"event":"media","streamSid":"MZ1","media":{"payload":"!!"}}', 31951),
            ('{"event":"mark","streamSid":"MZ1","mark":{}}', 31951),
            ('{"event":"clear","streamSid":"MZ2"}', 31951),
            ('{"event":"clear","streamSid":"MZ1","sequenceNumber":"1"}', 31951),
            (
                '{"event":"media","streamSid":"MZ1","media":{"payload":"AA==","track":"outbound"}}',
                31951,
            ),
            ('{"event":"mark","streamSid":"MZ1","mark":{"name":"n"},"track":"x"}', 31951),
        ],
    )
    def test_receive_rejects_invalid(self, data: str | bytes, code: int) -> None:
        """Invalid server frames (extra fields included) raise StreamFault with Twilio's
        error code."""
        with pytest.raises(StreamFault) as caught:
            self.codec().receive(data)
        assert caught.value.twilio_code == code


def test_playout_passes_marks_in_order() -> None:
    """Marks come out once the audio before them has played; clear returns pending marks."""
    playout = Playout()
    playout.push_mark("first")
    playout.push_media(b"a" * 200)
    playout.push_mark("second")
    playout.push_media(b"b" * 200)
    playout.push_mark("third")
    assert playout.advance(160) == (b"a" * 160, ["first"])
    assert playout.advance(160) == (b"a" * 40 + b"b" * 120, ["second"])
    assert playout.clear() == ["third"] and playout.queued_bytes == 0


def test_frames_due_follows_the_clock() -> None:
    """A real-time sender owes one frame at start and one more every 20 ms."""
    assert frames_due(10.0, 10.0, 0) == 1
    assert frames_due(10.0, 10.1, 1) == 5
    assert frames_due(10.0, 9.0, 0) == 0
    assert frames_due(10.0, 10.05, 5) == 0
