"""A small, pure speech detector by frame energy (RMS in dBFS with hang-over).

Used by the emulated agent to notice that the caller speaks (to interrupt
itself, and to answer when they stop). It is not a VAD for production: any
sound above the threshold for long enough, and not as steady as a tone, counts
as speech. Time is counted in samples, not
read from a clock, so results are deterministic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from callbridge.media.ulaw import ulaw_to_pcm16

__all__ = ["SpeechDetector", "SpeechEnded", "SpeechStarted", "rms_dbfs", "ulaw_rms_dbfs"]

_FULL_SCALE = 32768.0
_FLOOR_DB = -120.0


def rms_dbfs(samples: npt.NDArray[np.int16]) -> float:
    """RMS level of 16-bit samples in dBFS (0 = full-scale square wave; silence = -120)."""
    if samples.size == 0:
        return _FLOOR_DB
    rms = math.sqrt(float(np.mean(np.square(samples, dtype=np.float64))))
    if rms <= 0:
        return _FLOOR_DB
    return max(_FLOOR_DB, 20 * math.log10(rms / _FULL_SCALE))


def ulaw_rms_dbfs(data: bytes) -> float:
    """RMS level of μ-law bytes in dBFS."""
    return rms_dbfs(np.frombuffer(ulaw_to_pcm16(data), dtype="<i2"))


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """Speech began; ``at_ms`` is stream time of the first loud frame."""

    at_ms: int


@dataclass(frozen=True, slots=True)
class SpeechEnded:
    """Speech ended after ``duration_ms`` of speech (hang-over excluded)."""

    at_ms: int
    duration_ms: int


class SpeechDetector:
    """Detect speech start and end in a stream of 16-bit PCM at ``rate``.

    A frame is loud when its RMS is at or above ``threshold_dbfs``. Loud frames
    separated by gaps of at most ``max_gap_ms`` form one burst; a burst becomes
    speech once it holds ``min_speech_ms`` of loud frames (so a click, a cough or
    Chromium's fake-microphone beep, about 100 ms loud every 500 ms, never does).
    Speech ends ``hangover_ms`` after the last loud frame of a burst that counted as
    speech: short bursts during the hang-over do not keep it going. A steady tone
    (``tone_ms`` of loud frames whose levels stay within ``tone_spread_db``, which
    no voice does) ends the speech and is ignored until it stops.

    ``SpeechStarted.at_ms`` is when the burst began, but it is reported only once
    the burst qualified: ``min_speech_ms`` later at the earliest.

    Args:
        rate: sample rate of the PCM fed in.
        threshold_dbfs: loudness threshold (-40 dBFS: well above line noise).
        hangover_ms: silence that ends speech.
        frame_ms: analysis frame length.
        min_speech_ms: loud time a burst needs to count as speech.
        max_gap_ms: the longest quiet gap inside one burst (between syllables).
        tone_ms: how long a steady level must last to be taken for a tone.
        tone_spread_db: the level range (max - min) under which a stretch is steady.
    """

    def __init__(
        self,
        rate: int = 8000,
        *,
        threshold_dbfs: float = -40.0,
        hangover_ms: int = 600,
        frame_ms: int = 20,
        min_speech_ms: int = 250,
        max_gap_ms: int = 200,
        tone_ms: int = 2000,
        tone_spread_db: float = 2.0,
    ) -> None:
        self.threshold_dbfs = threshold_dbfs
        self._frame = rate * frame_ms // 1000
        self._frame_ms = frame_ms
        self._hangover_frames = max(1, hangover_ms // frame_ms)
        self._min_frames = max(1, -(-min_speech_ms // frame_ms))
        self._max_gap = max(0, max_gap_ms // frame_ms)
        self._tone_frames = max(2, tone_ms // frame_ms)
        self._tone_spread = tone_spread_db
        self._pending = np.zeros(0, dtype=np.int16)
        self._frames_seen = 0
        # The current burst: first frame, loud frames in it, last loud frame.
        self._burst_start: int | None = None
        self._burst_loud = 0
        self._last_loud = -1
        # The steady run: consecutive loud frames and their level range.
        self._steady: list[float] = []
        self._tone = False
        self._speech_start: int | None = None
        self._last_speech = 0

    @property
    def speaking(self) -> bool:
        """Whether speech is in progress."""
        return self._speech_start is not None

    def feed_ulaw(self, data: bytes) -> list[SpeechStarted | SpeechEnded]:
        """Feed μ-law bytes (``rate`` must be 8000)."""
        return self.feed(np.frombuffer(ulaw_to_pcm16(data), dtype="<i2"))

    def feed_pcm16(self, data: bytes) -> list[SpeechStarted | SpeechEnded]:
        """Feed little-endian 16-bit PCM bytes (an odd trailing byte is ignored)."""
        return self.feed(np.frombuffer(data[: len(data) - len(data) % 2], dtype="<i2"))

    def feed(self, samples: npt.NDArray[np.int16]) -> list[SpeechStarted | SpeechEnded]:
        """Feed samples; return the changes they caused, in order."""
        buffer = np.concatenate([self._pending, samples]) if self._pending.size else samples
        whole = buffer.size - buffer.size % self._frame
        self._pending = buffer[whole:].copy()
        changes: list[SpeechStarted | SpeechEnded] = []
        for start in range(0, whole, self._frame):
            change = self._step(rms_dbfs(buffer[start : start + self._frame]))
            if change is not None:
                changes.append(change)
        return changes

    def _step(self, level: float) -> SpeechStarted | SpeechEnded | None:
        index = self._frames_seen
        self._frames_seen += 1
        if level < self.threshold_dbfs:
            self._steady.clear()
            self._tone = False
            return self._maybe_end(index)
        if self._is_tone(level):
            self._burst_start = None  # a tone is no burst: it must stop to be heard again
            return self._end(index) if self.speaking else None
        if self._burst_start is None or index - self._last_loud - 1 > self._max_gap:
            self._burst_start, self._burst_loud = index, 0
        self._burst_loud += 1
        self._last_loud = index
        if self._burst_loud < self._min_frames:
            return self._maybe_end(index)
        self._last_speech = index
        if self._speech_start is None:
            self._speech_start = self._burst_start
            return SpeechStarted(self._speech_start * self._frame_ms)
        return None

    def _is_tone(self, level: float) -> bool:
        if self._tone:
            return True
        self._steady.append(level)
        if len(self._steady) > self._tone_frames:
            del self._steady[0]
        if len(self._steady) < self._tone_frames:
            return False
        self._tone = max(self._steady) - min(self._steady) < self._tone_spread
        return self._tone

    def _maybe_end(self, index: int) -> SpeechEnded | None:
        if self._speech_start is None or index - self._last_speech < self._hangover_frames:
            return None
        return self._end(index)

    def _end(self, index: int) -> SpeechEnded:
        assert self._speech_start is not None
        duration = (self._last_speech - self._speech_start + 1) * self._frame_ms
        self._speech_start = None
        return SpeechEnded((index + 1) * self._frame_ms, duration)
