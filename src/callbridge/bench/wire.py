"""Stamped audio frames: a send time and a sequence number inside the μ-law payload.

Both ends of every measured path live in the load generator, so one clock
(``time.monotonic_ns``) times them. A frame's first 18 bytes are a stamp
(magic, call index, sequence number, send time); the rest is μ-law silence.
Eighteen is a multiple of three, so the base64 of a frame is the base64 of the
stamp (24 characters) followed by a constant tail computed once: stamping a
frame costs one ``struct.pack`` and one short ``b64encode``.

A bridge that passes μ-law through untouched (both ends speak ``ulaw_8000``, as
the agent is configured for Twilio, protocols.md §4.5) delivers the stamp intact.
A bridge that transcodes would destroy it; :func:`read_stamp` then returns
``None`` and the frame counts as received but unmeasured.
"""

from __future__ import annotations

import base64
import binascii
import struct
from dataclasses import dataclass

__all__ = ["FRAME_BYTES", "STAMP_CHARS", "Stamp", "StampedAudio", "read_stamp"]

#: Twilio sends 20 ms of μ-law per ``media`` message: 160 bytes (protocols.md §3.2).
FRAME_BYTES = 160
_MAGIC = b"CB"
_STAMP = struct.Struct(">2sHIQH")  # magic, call index, sequence, send time (ns), spare
STAMP_BYTES = _STAMP.size
STAMP_CHARS = STAMP_BYTES * 4 // 3
assert STAMP_BYTES % 3 == 0, "the stamp must cover whole base64 quanta"


@dataclass(frozen=True, slots=True)
class Stamp:
    """What a received frame says about itself."""

    call_index: int
    sequence: int
    sent_ns: int


class StampedAudio:
    """Builds base64 audio payloads of ``size`` bytes that carry a :class:`Stamp`."""

    def __init__(self, size: int, filler: int = 0xFF) -> None:
        if size < STAMP_BYTES:
            raise ValueError(f"a stamped frame needs at least {STAMP_BYTES} bytes")
        self.size = size
        self._tail = base64.b64encode(bytes([filler]) * (size - STAMP_BYTES)).decode("ascii")

    def payload(self, call_index: int, sequence: int, sent_ns: int) -> str:
        """The base64 payload of one frame stamped with these values."""
        head = _STAMP.pack(_MAGIC, call_index & 0xFFFF, sequence & 0xFFFFFFFF, sent_ns, 0)
        return base64.b64encode(head).decode("ascii") + self._tail


def read_stamp(payload: str) -> Stamp | None:
    """The stamp at the start of a base64 payload, or ``None`` if it carries none."""
    try:
        head = base64.b64decode(payload[:STAMP_CHARS], validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(head) != STAMP_BYTES:
        return None
    magic, call_index, sequence, sent_ns, _ = _STAMP.unpack(head)
    if magic != _MAGIC:
        return None
    return Stamp(call_index, sequence, sent_ns)
