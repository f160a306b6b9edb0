"""The demo agent's voice: espeak-ng speech where installed, otherwise a tone pattern.

Output is raw audio in one of the agent formats (protocols.md §4.5): μ-law or
16-bit little-endian PCM, mono, no header. ``espeak-ng --stdout`` writes a WAV
(whose length fields may be unset when streaming), which is parsed leniently
and converted with :class:`~callbridge.media.transcode.Transcoder`.
"""

from __future__ import annotations

import asyncio
import shutil
import struct
import subprocess

import numpy as np

from callbridge.media.transcode import AudioFormat, Transcoder
from callbridge.media.ulaw import pcm16_to_ulaw

__all__ = ["Voice", "parse_wav", "tone_pattern"]

_SYLLABLE_S = 0.12
_GAP_S = 0.04
_MS_PER_CHAR = 55
_MIN_S = 0.6
_MAX_S = 12.0
_PITCHES = (392.0, 440.0, 494.0, 523.0, 587.0)


def parse_wav(data: bytes) -> tuple[int, bytes]:
    """Return ``(sample_rate, pcm16_mono)`` from a 16-bit PCM WAV.

    Tolerates the unset (0 or 0xFFFFFFFF) sizes that tools writing to a pipe
    leave in the header: the ``data`` chunk then runs to the end.

    Raises:
        ValueError: not a RIFF/WAVE file, or not 16-bit mono PCM.
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("not a RIFF/WAVE file")
    pos = 12
    rate: int | None = None
    while pos + 8 <= len(data):
        chunk_id = data[pos : pos + 4]
        (size,) = struct.unpack_from("<I", data, pos + 4)
        body = pos + 8
        if chunk_id == b"fmt ":
            fmt_tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", data, body)
            if fmt_tag != 1 or channels != 1 or bits != 16:
                raise ValueError("WAV must be 16-bit mono PCM")
        elif chunk_id == b"data":
            if rate is None:
                raise ValueError("WAV data before fmt")
            end = len(data) if size in (0, 0xFFFFFFFF) else min(len(data), body + size)
            pcm = data[body:end]
            return rate, pcm[: len(pcm) - len(pcm) % 2]
        pos = body + size + (size & 1)
    raise ValueError("WAV has no data chunk")


def tone_pattern(text: str, rate: int) -> bytes:
    """A speech-like pattern of short tones, as long as ``text`` would take to say.

    Returns:
        16-bit little-endian PCM at ``rate`` (about 55 ms per character,
        between 0.6 s and 12 s), deterministic for a given text.
    """
    seconds = min(_MAX_S, max(_MIN_S, len(text) * _MS_PER_CHAR / 1000))
    syllable = int(_SYLLABLE_S * rate)
    gap = int(_GAP_S * rate)
    t = np.arange(syllable) / rate
    fade = min(len(t) // 4, int(0.005 * rate))
    envelope = np.ones(syllable)
    envelope[:fade] = np.linspace(0, 1, fade)
    envelope[syllable - fade :] = np.linspace(1, 0, fade)
    pieces: list[np.typing.NDArray[np.float64]] = []
    total = int(seconds * rate)
    index = 0
    while sum(p.size for p in pieces) < total:
        code = ord(text[index % len(text)]) if text else index
        pitch = _PITCHES[code % len(_PITCHES)]
        pieces.append(0.3 * np.sin(2 * np.pi * pitch * t) * envelope)
        pieces.append(np.zeros(gap))
        index += 1
    signal = np.concatenate(pieces)[:total]
    return (signal * 32767).astype("<i2").tobytes()


class Voice:
    """Turn text into audio in the agent's output format.

    Args:
        use_espeak: ``None`` uses espeak-ng when it is on PATH; ``False`` forces tones.
        espeak_voice: espeak-ng voice name.
    """

    def __init__(self, *, use_espeak: bool | None = None, espeak_voice: str = "en-us") -> None:
        self._espeak = shutil.which("espeak-ng") if use_espeak is not False else None
        self._espeak_voice = espeak_voice

    @property
    def kind(self) -> str:
        """``"espeak-ng"`` or ``"tones"``."""
        return "espeak-ng" if self._espeak else "tones"

    async def synthesize(self, text: str, target: AudioFormat) -> bytes:
        """Speak ``text`` as raw audio in ``target`` (falls back to tones if espeak fails)."""
        if self._espeak:
            wav = await self._run_espeak(self._espeak, text)
            if wav is not None:
                try:
                    rate, pcm = parse_wav(wav)
                except ValueError:
                    pass
                else:
                    return _convert(pcm, rate, target)
        pcm = tone_pattern(text, target.rate)
        return pcm16_to_ulaw(pcm) if target.encoding == "ulaw" else pcm

    async def _run_espeak(self, path: str, text: str) -> bytes | None:
        # A blocking run in a worker thread rather than an asyncio subprocess: when a
        # call ends mid-utterance this coroutine is cancelled, and a cancelled
        # asyncio subprocess leaves its pipe transports open until the garbage
        # collector finds them, by which time their event loop may be closed. The
        # thread always reaps its process (or kills it after 10 s) on its own.
        return await asyncio.to_thread(_espeak_wav, path, self._espeak_voice, text)


def _espeak_wav(path: str, voice: str, text: str) -> bytes | None:
    try:
        done = subprocess.run(  # noqa: S603 - fixed argv, text goes to stdin
            [path, "-v", voice, "--stdin", "--stdout"],
            input=text.encode("utf-8"),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def _convert(pcm: bytes, rate: int, target: AudioFormat) -> bytes:
    transcoder = Transcoder(AudioFormat("pcm", rate), target)
    return transcoder.convert(pcm) + transcoder.flush()
