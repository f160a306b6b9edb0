"""A small, pure speech detector by frame energy (RMS in dBFS with hang-over).

Used by the emulated agent to notice that the caller speaks (to interrupt
itself, and to answer when they stop). It is not a VAD for production: any
sound above the threshold counts as speech. Time is counted in samples, not
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

    A frame is loud when its RMS is at or above ``threshold_dbfs``. Speech
    starts after ``attack_frames`` consecutive loud frames and ends after
    ``hangover_ms`` without a loud frame.

    Args:
        rate: sample rate of the PCM fed in.
        threshold_dbfs: loudness threshold (-40 dBFS: well above line noise).
        hangover_ms: silence that ends speech.
        frame_ms: analysis frame length.
        attack_frames: loud frames needed to start speech (rejects clicks).
    """

    def __init__(
        self,
        rate: int = 8000,
        *,
        threshold_dbfs: float = -40.0,
        hangover_ms: int = 600,
        frame_ms: int = 20,
        attack_frames: int = 2,
    ) -> None:
        self.threshold_dbfs = threshold_dbfs
        self._frame = rate * frame_ms // 1000
        self._frame_ms = frame_ms
        self._hangover_frames = max(1, hangover_ms // frame_ms)
        self._attack = max(1, attack_frames)
        self._pending = np.zeros(0, dtype=np.int16)
        self._frames_seen = 0
        self._loud_run = 0
        self._quiet_run = 0
        self._speech_start: int | None = None
        self._last_loud = 0

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
        if level >= self.threshold_dbfs:
            self._loud_run += 1
            self._quiet_run = 0
            self._last_loud = index
            if self._speech_start is None and self._loud_run >= self._attack:
                self._speech_start = index - self._attack + 1
                return SpeechStarted(self._speech_start * self._frame_ms)
            return None
        self._loud_run = 0
        if self._speech_start is None:
            return None
        self._quiet_run += 1
        if self._quiet_run < self._hangover_frames:
            return None
        duration = (self._last_loud - self._speech_start + 1) * self._frame_ms
        self._speech_start = None
        self._quiet_run = 0
        return SpeechEnded((index + 1) * self._frame_ms, duration)
