"""Transcoding quality, pacing with a fake clock, framing and the energy detector."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from callbridge.errors import ProtocolError
from callbridge.media.energy import SpeechDetector, SpeechEnded, SpeechStarted, ulaw_rms_dbfs
from callbridge.media.pacing import FrameSplitter, Pacer, split_frames
from callbridge.media.transcode import (
    SUPPORTED_FORMATS,
    TWILIO_FORMAT,
    AudioFormat,
    Transcoder,
    parse_format,
)
from callbridge.media.ulaw import pcm16_to_ulaw


def sine(rate: int, seconds: float = 1.0, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (np.sin(2 * np.pi * freq * t) * amp * 32767).astype("<i2")


def frames_at(levels_dbfs: list[float], rate: int = 8000) -> bytes:
    """20 ms frames of a 400 Hz tone, one per level (RMS in dBFS; -120 is silence)."""
    t = np.arange(rate // 50) / rate
    frames = [
        np.sin(2 * np.pi * 400 * t) * (np.sqrt(2) * 10 ** (db / 20) * 32767 if db > -100 else 0)
        for db in levels_dbfs
    ]
    return np.concatenate(frames).astype("<i2").tobytes()


def snr_db(reference: np.ndarray, output: np.ndarray, margin: int = 400) -> float:
    """Best SNR over small lags (resamplers delay the signal a little)."""
    n = min(len(reference), len(output))
    ref, out = reference[:n].astype(float), output[:n].astype(float)
    best = -np.inf
    for lag in range(-40, 41):
        a = ref[max(0, lag) : n + min(0, lag)][margin:-margin]
        b = out[max(0, -lag) : n - max(0, lag)][margin:-margin]
        best = max(best, 10 * np.log10(np.sum(a**2) / max(np.sum((a - b) ** 2), 1e-9)))
    return float(best)


def stream(transcoder: Transcoder, data: bytes, chunk: int) -> bytes:
    out = [transcoder.convert(data[i : i + chunk]) for i in range(0, len(data), chunk)]
    return b"".join(out) + transcoder.flush()


class TestFormats:
    def test_parse_every_supported_format(self) -> None:
        """Every agent format name parses to its encoding and rate."""
        assert parse_format("pcm_16000") == AudioFormat("pcm", 16000)
        assert parse_format("ulaw_8000") == TWILIO_FORMAT
        assert [str(parse_format(name)) for name in SUPPORTED_FORMATS] == list(SUPPORTED_FORMATS)

    @pytest.mark.parametrize("name", ["mp3_44100", "pcm_1", "ulaw_16000", "", "pcm"])
    def test_unknown_formats_are_refused(self, name: str) -> None:
        """Formats the agent does not offer raise ProtocolError."""
        with pytest.raises(ProtocolError):
            parse_format(name)


class TestTranscode:
    def test_identity_returns_the_same_string(self) -> None:
        """ulaw_8000 to ulaw_8000 forwards the base64 string untouched."""
        payload = "no+JhoaJjpzS"
        assert Transcoder(TWILIO_FORMAT, TWILIO_FORMAT).convert_b64(payload) is payload

    @pytest.mark.parametrize("rate", [16000, 22050, 24000, 44100, 48000])
    def test_upsampling_caller_audio_keeps_quality(self, rate: int) -> None:
        """μ-law/8k → pcm at the agent's rate, streamed in 20 ms chunks, stays near G.711 SNR."""
        ulaw = pcm16_to_ulaw(sine(8000).tobytes())
        out = stream(Transcoder(TWILIO_FORMAT, AudioFormat("pcm", rate)), ulaw, 160)
        assert abs(len(out) // 2 - rate) <= rate // 100
        assert snr_db(sine(rate), np.frombuffer(out, dtype="<i2")) > 30

    @pytest.mark.parametrize("rate", [8000, 16000, 24000, 48000])
    def test_agent_audio_to_twilio(self, rate: int) -> None:
        """pcm at the agent's rate → μ-law/8k, with odd chunk sizes carried across calls."""
        pcm = sine(rate).tobytes()
        out = stream(Transcoder(AudioFormat("pcm", rate), TWILIO_FORMAT), pcm, 641)
        back = np.frombuffer(
            stream(Transcoder(TWILIO_FORMAT, AudioFormat("pcm", 8000)), out, 160), dtype="<i2"
        )
        assert abs(len(out) - 8000) <= 80
        assert snr_db(sine(8000), back) > 30

    def test_round_trip_pcm16_resampling_is_high_quality(self) -> None:
        """pcm 8k → 16k → 8k through soxr keeps > 60 dB SNR."""
        pcm = sine(8000).tobytes()
        up = stream(Transcoder(AudioFormat("pcm", 8000), AudioFormat("pcm", 16000)), pcm, 320)
        down = stream(Transcoder(AudioFormat("pcm", 16000), AudioFormat("pcm", 8000)), up, 640)
        assert snr_db(sine(8000), np.frombuffer(down, dtype="<i2")) > 60

    def test_b64_round_trip_and_bad_base64(self) -> None:
        """convert_b64 decodes, converts and re-encodes; bad base64 is a ProtocolError."""
        transcoder = Transcoder(TWILIO_FORMAT, AudioFormat("pcm", 8000))
        out = base64.b64decode(transcoder.convert_b64(base64.b64encode(b"\xff" * 160).decode()))
        assert out == b"\x00\x00" * 160
        with pytest.raises(ProtocolError):
            transcoder.convert_b64("not base64!")

    def test_b64_to_bytes_for_the_identity_is_the_decoded_payload(self) -> None:
        """ulaw_8000 to itself: convert_b64_to_bytes returns the payload's bytes, unchanged."""
        raw = bytes(range(256)) * 2
        transcoder = Transcoder(TWILIO_FORMAT, TWILIO_FORMAT)
        assert transcoder.convert_b64_to_bytes(base64.b64encode(raw).decode()) == raw

    def test_b64_to_bytes_converts_like_convert_and_keeps_stream_state(self) -> None:
        """pcm_8000 → μ-law/8k in odd chunks: the same bytes as convert(), chunk after chunk
        (the odd trailing byte carries over). No resampler here: soxr's last bit may vary."""
        pcm = sine(8000, 0.2).tobytes()
        chunks = [pcm[i : i + 641] for i in range(0, len(pcm), 641)]
        by_bytes = Transcoder(AudioFormat("pcm", 8000), TWILIO_FORMAT)
        by_b64 = Transcoder(AudioFormat("pcm", 8000), TWILIO_FORMAT)
        out = []
        for chunk in chunks:
            expected = by_bytes.convert(chunk)
            out.append(by_b64.convert_b64_to_bytes(base64.b64encode(chunk).decode()))
            assert out[-1] == expected
        assert b"".join(out) == pcm16_to_ulaw(pcm)

    def test_b64_to_bytes_resamples_the_agents_pcm(self) -> None:
        """pcm_16000 → μ-law/8k through convert_b64_to_bytes: half the samples, one byte each."""
        pcm = sine(16000, 1.0).tobytes()
        transcoder = Transcoder(AudioFormat("pcm", 16000), TWILIO_FORMAT)
        out = b"".join(
            transcoder.convert_b64_to_bytes(base64.b64encode(pcm[i : i + 640]).decode())
            for i in range(0, len(pcm), 640)
        )
        out += transcoder.flush()
        assert abs(len(out) - 8000) <= 80

    @pytest.mark.parametrize("source", [TWILIO_FORMAT, AudioFormat("pcm", 16000)])
    def test_b64_to_bytes_refuses_bad_base64(self, source: AudioFormat) -> None:
        """Bad base64 is a ProtocolError on the identity path too (it is decoded there)."""
        with pytest.raises(ProtocolError):
            Transcoder(source, TWILIO_FORMAT).convert_b64_to_bytes("not base64!")


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class TestPacer:
    def test_deadlines_follow_frames_sent_without_drift(self) -> None:
        """Frame n is due at start + n × 20 ms however late earlier sends were."""
        clock = FakeClock()
        pacer = Pacer(20, clock)
        assert pacer.delay() == 0.0
        pacer.sent()
        assert pacer.delay() == pytest.approx(0.020)
        clock.now += 0.025  # a late wake-up
        assert pacer.delay() == 0.0
        pacer.sent()
        assert pacer.delay() == pytest.approx(0.015)
        pacer.sent(48)
        assert pacer.deadline() == pytest.approx(101.0)

    def test_lead_frames_allow_sending_ahead(self) -> None:
        """With a lead of 3 frames, the first 3 go out at once."""
        clock = FakeClock()
        pacer = Pacer(20, clock, lead_frames=3)
        pacer.sent(3)
        assert pacer.delay() == 0.0
        pacer.sent()
        assert pacer.delay() == pytest.approx(0.020)

    def test_underrun_reanchors_instead_of_bursting(self) -> None:
        """After a long gap the schedule restarts from now."""
        clock = FakeClock()
        pacer = Pacer(20, clock, max_lag_frames=5)
        pacer.sent()
        clock.now += 1.0
        assert pacer.delay() == 0.0
        pacer.sent()
        assert pacer.delay() == pytest.approx(0.020)

    def test_reset_forgets_schedule(self) -> None:
        """After reset the next frame is due immediately."""
        clock = FakeClock()
        pacer = Pacer(20, clock)
        pacer.sent(10)
        pacer.reset()
        assert pacer.frames_sent == 0 and pacer.delay() == 0.0


class TestFraming:
    def test_split_pads_last_frame_with_silence(self) -> None:
        """350 bytes give three 160-byte frames, the last padded with 0xFF."""
        frames = split_frames(bytes(350))
        assert [len(f) for f in frames] == [160, 160, 160]
        assert frames[2] == bytes(30) + b"\xff" * 130
        assert split_frames(b"") == []

    def test_splitter_carries_remainder(self) -> None:
        """Chunks of any size come out as whole frames, the rest on flush."""
        splitter = FrameSplitter()
        assert splitter.push(bytes(100)) == []
        assert splitter.push(bytes(300)) == [bytes(160), bytes(160)]
        assert splitter.flush() == [bytes(80) + b"\xff" * 80]
        assert splitter.flush() == []

    def test_splitter_reports_what_it_holds(self) -> None:
        """pending is the remainder's size: 0 after whole frames, after flush and after clear."""
        splitter = FrameSplitter()
        frames = splitter.push(b"\x01" * 320)
        assert frames == [b"\x01" * 160] * 2 and splitter.pending == 0
        assert splitter.push(b"\x02" * 250) == [b"\x02" * 160]
        assert splitter.pending == 90
        assert splitter.push(b"\x03" * 100) == [b"\x02" * 90 + b"\x03" * 70]
        assert splitter.pending == 30
        splitter.clear()
        assert splitter.pending == 0 and splitter.flush() == []


class TestEnergy:
    def test_levels(self) -> None:
        """Silence is far below the threshold, a -6 dBFS sine is near -9 dBFS RMS."""
        assert ulaw_rms_dbfs(b"\xff" * 160) < -90
        assert ulaw_rms_dbfs(pcm16_to_ulaw(sine(8000, 0.02).tobytes())) == pytest.approx(-9, abs=1)

    def test_speech_start_and_end_with_hangover(self) -> None:
        """Speech starts after two loud frames and ends 600 ms after the last one."""
        detector = SpeechDetector(8000)
        silence = b"\xff" * 160
        loud = pcm16_to_ulaw(sine(8000, 1.2).tobytes())
        assert detector.feed_ulaw(silence * 10) == []
        assert detector.feed_ulaw(loud) == [SpeechStarted(200)]
        assert detector.speaking
        assert detector.feed_ulaw(silence * 29) == []
        assert detector.feed_ulaw(silence) == [SpeechEnded(2000, 1200)]
        assert not detector.speaking

    def test_single_click_is_not_speech(self) -> None:
        """One loud frame alone does not start speech."""
        detector = SpeechDetector(16000)
        click = sine(16000, 0.02).tobytes()
        assert detector.feed_pcm16(click + b"\x00" * 640 * 40) == []

    def test_speech_needs_its_minimum_duration(self) -> None:
        """200 ms of loudness is not speech; 260 ms is, reported from its first frame."""
        detector = SpeechDetector(8000)
        silence = b"\xff" * 160
        assert detector.feed_ulaw(pcm16_to_ulaw(sine(8000, 0.2).tobytes()) + silence * 40) == []
        changes = detector.feed_ulaw(pcm16_to_ulaw(sine(8000, 0.26).tobytes()))
        assert changes == [SpeechStarted(1000)]

    def test_chromium_fake_microphone_beep_is_never_speech(self) -> None:
        """Chromium's fake microphone, as its page hears it through getUserMedia with
        echo cancellation (levels measured per 20 ms frame: a beep every 500 ms,
        two frames near -9 dBFS decaying below -40 dBFS within six), never starts
        speech, and does not hold up the end of speech that came before it."""
        beep = [-10, -9, -25, -32, -37, -40, -43, -47, -50, -54, -58, -61, -67, -72, -79]
        period = frames_at(beep + [-120] * (25 - len(beep)))
        detector = SpeechDetector(8000)
        assert detector.feed_pcm16(period * 40) == []
        # Speech, 300 ms of quiet, then the beeps again: speech ends 600 ms after it stopped.
        detector = SpeechDetector(8000)
        voice = frames_at([-12.0 + (i % 7) for i in range(50)])  # 1 s, a varying level
        changes = detector.feed_pcm16(voice + frames_at([-120] * 15) + period * 4)
        assert changes == [SpeechStarted(0), SpeechEnded(1600, 1000)]

    def test_a_steady_tone_is_capped_and_then_ignored(self) -> None:
        """A tone at one level (a hum, a beeping line) counts as speech for at most 2 s,
        then not at all until it stops; speech after it is heard again."""
        detector = SpeechDetector(8000)
        silence = b"\xff" * 160
        hum = pcm16_to_ulaw(sine(8000, 10.0, amp=0.1).tobytes())
        changes = detector.feed_ulaw(hum)
        assert changes == [SpeechStarted(0), SpeechEnded(2000, 1980)]
        assert not detector.speaking
        voice = pcm16_to_ulaw(sine(8000, 0.5, amp=0.3).tobytes())
        assert detector.feed_ulaw(silence * 5 + voice) == [SpeechStarted(10100)]

    def test_short_bursts_in_the_hangover_do_not_extend_speech(self) -> None:
        """A 100 ms click every 400 ms after speech does not keep the speech going."""
        detector = SpeechDetector(8000)
        voice = pcm16_to_ulaw(sine(8000, 1.0, amp=0.3).tobytes())
        click = pcm16_to_ulaw(sine(8000, 0.1, amp=0.3).tobytes())
        silence = b"\xff" * 160
        changes = detector.feed_ulaw(voice)
        for _ in range(3):
            changes += detector.feed_ulaw(silence * 15 + click)
        assert changes == [SpeechStarted(0), SpeechEnded(1600, 1000)]
