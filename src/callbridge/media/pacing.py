"""Real-time pacing arithmetic for outbound audio, and 20 ms framing of μ-law.

Twilio plays what it is sent in order and buffers the rest; pacing 20 ms frames
to the wall clock keeps that buffer small so a ``clear`` on interruption drops
little (protocols.md §3.3–3.4, style habit 10, after pipecat's
``_write_audio_sleep``). Deadlines are computed from the start time and the
number of frames sent, never by adding sleeps, so they do not drift.

Nothing here sleeps: the caller asks :meth:`Pacer.delay` and sleeps itself, which
keeps the arithmetic testable with a fake clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from callbridge.media.ulaw import ULAW_SILENCE

__all__ = ["FRAME_BYTES", "FrameSplitter", "Pacer", "split_frames"]

#: One 20 ms frame of μ-law at 8 kHz.
FRAME_BYTES = 160


class Pacer:
    """Schedule frames of ``frame_ms`` against a monotonic clock.

    Args:
        frame_ms: duration of one frame.
        clock: seconds from an arbitrary origin (``time.monotonic`` by default).
        lead_frames: how many frames may be sent ahead of real time (a small
            lead absorbs scheduling jitter at the receiver).
        max_lag_frames: when sending falls further behind than this (the
            source ran dry), re-anchor the schedule at "now" instead of
            bursting to catch up.
    """

    def __init__(
        self,
        frame_ms: int = 20,
        clock: Callable[[], float] = time.monotonic,
        *,
        lead_frames: int = 0,
        max_lag_frames: int = 5,
    ) -> None:
        if frame_ms <= 0:
            raise ValueError("frame_ms must be positive")
        self.frame_s = frame_ms / 1000
        self._clock = clock
        self._lead = lead_frames
        self._max_lag = max_lag_frames
        self._start: float | None = None
        self.frames_sent = 0

    def reset(self) -> None:
        """Forget the schedule (e.g. after ``clear``); the next frame goes at once."""
        self._start = None
        self.frames_sent = 0

    def deadline(self) -> float:
        """The clock time at which the next frame is due."""
        if self._start is None:
            return self._clock()
        return self._start + (self.frames_sent - self._lead) * self.frame_s

    def delay(self) -> float:
        """Seconds to wait before sending the next frame (0 if it is due)."""
        now = self._clock()
        if self._start is None:
            return 0.0
        due = self._start + (self.frames_sent - self._lead) * self.frame_s
        if now - due > self._max_lag * self.frame_s:
            # Underrun: restart the schedule from now rather than send a burst.
            self._start = now - (self.frames_sent - self._lead) * self.frame_s
            return 0.0
        return max(0.0, due - now)

    def sent(self, frames: int = 1) -> None:
        """Record that ``frames`` frames were just sent."""
        if self._start is None:
            self._start = self._clock()
        self.frames_sent += frames


def split_frames(data: bytes, frame_bytes: int = FRAME_BYTES) -> list[bytes]:
    """Split μ-law bytes into frames, padding the last one with silence (0xFF)."""
    frames = [data[i : i + frame_bytes] for i in range(0, len(data), frame_bytes)]
    if frames and len(frames[-1]) < frame_bytes:
        frames[-1] = frames[-1] + bytes([ULAW_SILENCE]) * (frame_bytes - len(frames[-1]))
    return frames


class FrameSplitter:
    """Cut a stream of μ-law chunks of any size into whole frames.

    Args:
        frame_bytes: frame size (160 = 20 ms at 8 kHz).
    """

    def __init__(self, frame_bytes: int = FRAME_BYTES) -> None:
        self.frame_bytes = frame_bytes
        self._buffer = bytearray()

    @property
    def pending(self) -> int:
        """Bytes held back, short of a whole frame (0 when nothing waits)."""
        return len(self._buffer)

    def push(self, data: bytes) -> list[bytes]:
        """Add a chunk; return the whole frames now available."""
        size = self.frame_bytes
        if self._buffer:
            self._buffer += data
            data = bytes(self._buffer)
            self._buffer.clear()
        whole = len(data) - len(data) % size
        if whole < len(data):
            self._buffer += data[whole:]
        return [data[i : i + size] for i in range(0, whole, size)]

    def flush(self) -> list[bytes]:
        """Return the remainder as one frame padded with silence (or nothing)."""
        rest, self._buffer = bytes(self._buffer), bytearray()
        return split_frames(rest, self.frame_bytes)

    def clear(self) -> None:
        """Drop the remainder (after an interruption)."""
        self._buffer.clear()
