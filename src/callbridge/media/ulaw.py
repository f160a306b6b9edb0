"""G.711 μ-law ⇄ 16-bit linear PCM, by table look-up.

The decode table has 256 entries and the encode table 65,536 (one per 16-bit
sample), both built once on first use with numpy, so converting a 20 ms frame
is one vectorised ``take``. The tables follow ITU-T G.711 with the usual bias
of 0x84 and clip at 32,635, exactly as ``audioop.lin2ulaw``/``ulaw2lin`` did
(the stdlib module is deprecated in 3.11 and gone in 3.13).
"""

from __future__ import annotations

from functools import cache

import numpy as np
import numpy.typing as npt

_BIAS = 0x84
_CLIP = 32635  # 8159 << 2

#: One byte of μ-law silence (the encoding of 0).
ULAW_SILENCE = 0xFF


def _encode_one(sample: int) -> int:
    # 14-bit magnitude with an arithmetic shift, as the reference G.711 code does.
    value = sample >> 2
    mask = 0xFF
    if value < 0:
        value = -value
        mask = 0x7F
    value = min(value, _CLIP >> 2) + (_BIAS >> 2)
    segment = 0
    while segment < 7 and value > (0x40 << segment) - 1:
        segment += 1
    return ((segment << 4) | ((value >> (segment + 1)) & 0x0F)) ^ mask


def _decode_one(byte: int) -> int:
    byte = ~byte & 0xFF
    sign = byte & 0x80
    exponent = (byte >> 4) & 0x07
    mantissa = byte & 0x0F
    magnitude = (((mantissa << 3) + _BIAS) << exponent) - _BIAS
    return -magnitude if sign else magnitude


@cache
def _decode_table() -> npt.NDArray[np.int16]:
    return np.array([_decode_one(b) for b in range(256)], dtype="<i2")


@cache
def _encode_table() -> npt.NDArray[np.uint8]:
    samples = np.arange(65536, dtype=np.uint16).view(np.int16)
    return np.array([_encode_one(int(s)) for s in samples], dtype=np.uint8)


def ulaw_to_pcm16(data: bytes) -> bytes:
    """Decode μ-law bytes to little-endian signed 16-bit PCM (two bytes per sample)."""
    return _decode_table().take(np.frombuffer(data, dtype=np.uint8)).tobytes()


def pcm16_to_ulaw(data: bytes) -> bytes:
    """Encode little-endian signed 16-bit PCM to μ-law (one byte per sample).

    Raises:
        ValueError: if ``data`` has an odd number of bytes.
    """
    if len(data) % 2:
        raise ValueError("PCM16 data must have an even number of bytes")
    return _encode_table().take(np.frombuffer(data, dtype="<u2")).tobytes()
