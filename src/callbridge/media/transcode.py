"""Streaming audio conversion between Twilio's μ-law/8 kHz and the agent's formats.

Formats follow the agent's enum (protocols.md §4.5,
https://elevenlabs.io/docs/api-reference/agents/create ``TTSOutputFormat``/``ASRInputFormat``):
``ulaw_8000`` and ``pcm_{8000,16000,22050,24000,44100,48000}``, where ``pcm`` is
raw signed 16-bit little-endian mono without a header.

Choice of resampler, measured on this machine (Python 3.11, numpy 2.4, soxr 1.1;
440 Hz sine at -6 dBFS, streamed in 20 ms chunks; SNR against the ideal sine at
the target rate, best alignment; time per 20 ms frame):

=====================  ============  ==============  ===================  ================
method                 8k→16k SNR    8k→16k µs/fr    16k→8k µs/fr         6 kHz alias @16k→8k
=====================  ============  ==============  ===================  ================
soxr ``HQ`` (chosen)   85.6 dB       7.1             6.2                  -95.5 dBFS
soxr ``MQ``/``LQ``     85.5 dB       4.0             3.4                  —
soxr ``QQ``            72.2 dB       4.2             3.3                  —
numpy ``interp``       36.9 dB       8.5             7.4                  -9.0 dBFS (none)
audioop ``ratecv``     39.5 dB       3.6             —                    —
=====================  ============  ==============  ===================  ================

8k↔48k with soxr HQ: 85.0 dB up, 6.7/4.8 µs per frame; 8k↔44.1k: 84.6 dB, 8.7/5.8 µs.
The μ-law table codec costs 1.3–1.4 µs per frame each way (G.711 itself limits a
full-scale sine to ~36.5 dB SNR, so the resampler is never the weak link with soxr,
and is with linear interpolation, which also lets 4–8 kHz content alias straight
through). ``audioop`` is deprecated in 3.11 and gone in 3.13. soxr's ``HQ`` costs
a few µs more than ``LQ`` for the same SNR on a pure tone but keeps a steeper
anti-alias filter, and at < 10 µs per 20 ms frame (0.05 % of real time) it is not
worth saving. Its filter delays output by a few ms at the start of a stream;
:meth:`Transcoder.flush` returns the tail.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import soxr  # no stubs; see pyproject overrides

from callbridge.errors import ProtocolError
from callbridge.media.ulaw import pcm16_to_ulaw, ulaw_to_pcm16

__all__ = [
    "SUPPORTED_FORMATS",
    "TWILIO_FORMAT",
    "AudioFormat",
    "Transcoder",
    "parse_format",
]

Encoding = Literal["ulaw", "pcm"]

#: Every format the agent platform offers for input and output.
SUPPORTED_FORMATS = (
    "ulaw_8000",
    "pcm_8000",
    "pcm_16000",
    "pcm_22050",
    "pcm_24000",
    "pcm_44100",
    "pcm_48000",
)


@dataclass(frozen=True, slots=True)
class AudioFormat:
    """An audio wire format: encoding and sample rate (always mono)."""

    encoding: Encoding
    rate: int

    @property
    def bytes_per_sample(self) -> int:
        """1 for μ-law, 2 for 16-bit PCM."""
        return 1 if self.encoding == "ulaw" else 2

    @property
    def bytes_per_second(self) -> int:
        """How many bytes one second of audio takes."""
        return self.rate * self.bytes_per_sample

    def __str__(self) -> str:
        return f"{self.encoding}_{self.rate}"


#: What Twilio Media Streams carries both ways.
TWILIO_FORMAT = AudioFormat("ulaw", 8000)


def parse_format(name: str) -> AudioFormat:
    """Parse an agent format name such as ``"pcm_16000"`` or ``"ulaw_8000"``.

    Raises:
        ProtocolError: if the name is not one of :data:`SUPPORTED_FORMATS`.
    """
    if name not in SUPPORTED_FORMATS:
        raise ProtocolError(f"unsupported audio format {name[:40]!r}")
    encoding, rate = name.split("_")
    return AudioFormat("ulaw" if encoding == "ulaw" else "pcm", int(rate))


class Transcoder:
    """Convert a stream of audio chunks from one format to another.

    Keeps state across chunks: the resampler's filter memory and an odd
    trailing byte of PCM input. Converting a format to itself is the identity
    and :meth:`convert_b64` then returns the very string it was given;
    :meth:`convert_b64_to_bytes` gives raw bytes instead (to cut into frames).

    Args:
        source: format of the input chunks.
        target: format of the output.
        quality: soxr quality recipe (``"HQ"`` by default; see module docstring).
    """

    def __init__(self, source: AudioFormat, target: AudioFormat, *, quality: str = "HQ") -> None:
        self.source = source
        self.target = target
        self.identity = source == target
        self._carry = b""
        self._resampler: Any = None  # soxr.ResampleStream
        if source.rate != target.rate:
            self._resampler = soxr.ResampleStream(
                source.rate, target.rate, 1, dtype="int16", quality=quality
            )

    def convert(self, data: bytes) -> bytes:
        """Convert one chunk; the output may be a few samples shorter or longer."""
        if self.identity:
            return data
        return self._run(data, last=False)

    def flush(self) -> bytes:
        """Return what the resampler still holds; the stream then ends."""
        if self.identity or self._resampler is None:
            return b""
        return self._run(b"", last=True)

    def convert_b64(self, payload: str) -> str:
        """Convert one base64 chunk; the identity returns ``payload`` itself.

        Raises:
            ProtocolError: if ``payload`` is not valid base64.
        """
        if self.identity:
            return payload
        return base64.b64encode(self.convert_b64_to_bytes(payload)).decode("ascii")

    def convert_b64_to_bytes(self, payload: str) -> bytes:
        """Convert one base64 chunk to raw bytes of the target format.

        For the identity this is only the base64 decode (the bytes are needed
        anyway to cut them into frames).

        Raises:
            ProtocolError: if ``payload`` is not valid base64.
        """
        try:
            raw = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ProtocolError("audio payload is not valid base64") from exc
        return raw if self.identity else self._run(raw, last=False)

    def _run(self, data: bytes, *, last: bool) -> bytes:
        if self.source.encoding == "ulaw":
            pcm = ulaw_to_pcm16(data)
        else:
            if self._carry:
                data = self._carry + data
                self._carry = b""
            if len(data) % 2:
                data, self._carry = data[:-1], data[-1:]
            pcm = data
        if self._resampler is not None:
            samples = np.frombuffer(pcm, dtype="<i2")
            pcm = self._resampler.resample_chunk(samples, last=last).astype("<i2").tobytes()
        if self.target.encoding == "ulaw":
            return pcm16_to_ulaw(pcm)
        return pcm
