"""Scripted callees of the sandbox: the person who picks up an emulated call.

A script is the value of ``CALLBRIDGE_SANDBOX_CALLEE`` (see DESIGN.md, "Sandbox
settings"): comma-separated steps such as ``answer=2,digits=1,speak,hangup=60``.
Who picks up is a person (``human``, the default), an answering machine
(``machine`` or ``machine=SECONDS``: a greeting of that many seconds, then a beep)
or a fax (``fax``); Twilio's AMD verdict for them is emulated by the call simulator,
and ``amd=VALUE`` forces the verdict it sends (e.g. ``amd=unknown``).
:func:`parse_callee_script` turns it into a frozen :class:`CalleeScript`;
``CALLBRIDGE_SANDBOX_CALLEES`` scripts callees per destination (:class:`CalleeBook`,
:func:`parse_callee_book`): ``NUMBER=SCRIPT`` entries separated by ``;``, where
NUMBER is an E.164 number or a prefix ending in ``*``, or the path of a JSON file
mapping the same keys to scripts;
:class:`InboundAudio` is the callee's microphone, the 20 ms μ-law frames the
emulator sends up a media stream (silence unless something was queued);
:func:`builtin_sample` and :func:`load_wav_ulaw` make the audio the callee speaks.
"""

from __future__ import annotations

import enum
import io
import json
import math
import re
import shutil
import subprocess
import tempfile
import wave
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np

from callbridge.errors import ValidationFailed
from callbridge.media.ulaw import ULAW_SILENCE, pcm16_to_ulaw, ulaw_to_pcm16

#: The script every sandbox call uses unless told otherwise.
DEFAULT_CALLEE_SCRIPT = "answer=2,digits=1,speak,hangup=60"

#: Bytes of μ-law in one 20 ms frame at 8 kHz.
FRAME_BYTES = 160

_RATE = 8000
_SAMPLE_SENTENCE = "Hello, this is the sandbox callee. I can hear you."
_DIGITS = set("0123456789*#w")


class Answerer(enum.StrEnum):
    """What answers the call, as Twilio's answering machine detection would judge it."""

    HUMAN = "human"
    MACHINE = "machine"
    FAX = "fax"


#: Seconds of an answering machine's greeting before its beep (``machine`` alone).
DEFAULT_GREETING_S = 5.0
#: Twilio's ``AnsweredBy`` values (``amd=`` may force any of them).
ANSWERED_BY = frozenset(
    {
        "human",
        "unknown",
        "machine_start",
        "machine_end_beep",
        "machine_end_silence",
        "machine_end_other",
        "fax",
    }
)


class Pickup(enum.StrEnum):
    """What the callee does when the phone rings."""

    ANSWER = "answer"
    BUSY = "busy"
    NO_ANSWER = "no-answer"
    REJECT = "reject"
    FAIL = "fail"


@dataclass(frozen=True)
class CalleeScript:
    """A parsed callee script.

    Attributes:
        pickup: what happens when the phone rings.
        answer_after: seconds of ringing before answering (``answer=N``).
        digits: keys pressed when asked for input (``digits=…``), or ``""``.
        speak: ``None`` (silent), ``"builtin"`` (``speak``) or a WAV path (``speak=FILE``).
        hangup_after: seconds after answering when the callee hangs up, or ``None``.
        answerer: a person, an answering machine or a fax (``human``, ``machine``, ``fax``).
        greeting_s: an answering machine's greeting, in seconds, before its beep.
        amd: the ``AnsweredBy`` to report whatever answers (``amd=VALUE``), or ``None``.
    """

    pickup: Pickup = Pickup.ANSWER
    answer_after: float = 2.0
    digits: str = ""
    speak: str | None = None
    hangup_after: float | None = None
    answerer: Answerer = Answerer.HUMAN
    greeting_s: float = DEFAULT_GREETING_S
    amd: str | None = None


def _seconds(step: str, value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise ValidationFailed(f"callee step {step!r} needs a number of seconds") from None
    if not math.isfinite(seconds) or seconds < 0 or seconds > 86_400:
        raise ValidationFailed(f"callee step {step!r} needs seconds between 0 and 86400")
    return seconds


def parse_callee_script(text: str) -> CalleeScript:
    """Parse a ``CALLBRIDGE_SANDBOX_CALLEE`` script.

    Args:
        text: comma-separated steps: ``answer=N``, ``busy``, ``no-answer``,
            ``reject``, ``fail``, ``speak`` or ``speak=FILE.wav``,
            ``digits=KEYS``, ``hangup=N``, ``human``, ``machine`` or
            ``machine=SECONDS``, ``fax`` and ``amd=VALUE``.

    Returns:
        The script; steps not given keep their defaults (answer after 2 s,
        no digits, silent, never hang up).

    Raises:
        ValidationFailed: a step is unknown, malformed or repeated, or the
            script is empty.
    """
    fields: dict[str, object] = {}
    seen: set[str] = set()
    steps = [part.strip() for part in text.split(",")]
    if not any(steps):
        raise ValidationFailed("the callee script is empty")
    for step in steps:
        name, has_value, value = step.partition("=")
        name = name.strip().lower()
        value = value.strip()
        key = "pickup" if name in {p.value for p in Pickup} else name
        key = "answerer" if name in {a.value for a in Answerer} else key
        if key in seen:
            raise ValidationFailed(f"callee step {name!r} is given twice (or conflicts)")
        seen.add(key)
        if name == "answer":
            fields["pickup"] = Pickup.ANSWER
            fields["answer_after"] = _seconds(step, value) if has_value else 0.0
        elif name in {"busy", "no-answer", "reject", "fail"} and not has_value:
            fields["pickup"] = Pickup(name)
        elif name == "digits" and has_value:
            if not value or not set(value) <= _DIGITS:
                raise ValidationFailed(f"callee step {step!r}: digits are 0-9, *, # or w")
            fields["digits"] = value
        elif name == "speak":
            if has_value and not value:
                raise ValidationFailed("callee step 'speak=' needs a WAV file name")
            fields["speak"] = value if has_value else "builtin"
        elif name == "hangup" and has_value:
            fields["hangup_after"] = _seconds(step, value)
        elif name == "machine":
            fields["answerer"] = Answerer.MACHINE
            if has_value:
                fields["greeting_s"] = _seconds(step, value)
        elif name in ("human", "fax") and not has_value:
            fields["answerer"] = Answerer(name)
        elif name == "amd" and value in ANSWERED_BY:
            fields["amd"] = value
        else:
            raise ValidationFailed(
                f"unknown callee step {step!r}; use answer=N, busy, no-answer, reject, "
                "fail, speak[=FILE.wav], digits=KEYS, hangup=N, human, machine[=N], fax "
                "or amd=ANSWERED_BY"
            )
    return CalleeScript(**fields)  # type: ignore[arg-type]


_BOOK_KEY = re.compile(r"^\+[1-9]\d{0,14}\*?$")


@dataclass(frozen=True)
class CalleeBook:
    """Callee scripts per destination: an exact number first, then the longest prefix.

    Attributes:
        numbers: E.164 number -> script.
        prefixes: E.164 prefix (without its ``*``) -> script.
    """

    numbers: Mapping[str, CalleeScript] = field(default_factory=dict)
    prefixes: Mapping[str, CalleeScript] = field(default_factory=dict)

    def script_for(self, to: str) -> CalleeScript | None:
        """The script for a call to ``to``, or ``None`` when no entry matches."""
        exact = self.numbers.get(to)
        if exact is not None:
            return exact
        for length in range(len(to), 0, -1):
            script = self.prefixes.get(to[:length])
            if script is not None:
                return script
        return None

    def __len__(self) -> int:
        return len(self.numbers) + len(self.prefixes)


def _book_entries(text: str) -> list[tuple[str, str]]:
    source = text.strip()
    if source.endswith(".json") and "=" not in source:
        try:
            data = json.loads(Path(source).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValidationFailed(f"cannot read callee file {source!r}: {exc}") from exc
        if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in data.items()
        ):
            raise ValidationFailed(
                f"callee file {source!r} must hold one JSON object of number -> script strings"
            )
        return list(data.items())
    entries: list[tuple[str, str]] = []
    for part in source.split(";"):
        if not part.strip():
            continue
        key, has_script, script = part.partition("=")
        if not has_script:
            raise ValidationFailed(
                f"callee entry {part.strip()!r} needs NUMBER=SCRIPT, like +12025550101=busy"
            )
        entries.append((key, script))
    return entries


def parse_callee_book(text: str) -> CalleeBook:
    """Parse ``CALLBRIDGE_SANDBOX_CALLEES``: callee scripts per destination number.

    Args:
        text: ``NUMBER=SCRIPT`` entries separated by ``;`` (NUMBER an E.164 number,
            or an E.164 prefix ending in ``*``, e.g. ``+1202555*``; SCRIPT as for
            :func:`parse_callee_script`), or the path of a ``.json`` file holding one
            object with the same keys and script strings. Empty: no entries.

    Returns:
        The book; a call to a number it does not match uses the default script.

    Raises:
        ValidationFailed: a key is not a number or prefix, a key is given twice,
            or a script does not parse.
    """
    numbers: dict[str, CalleeScript] = {}
    prefixes: dict[str, CalleeScript] = {}
    for raw_key, script in _book_entries(text):
        key = raw_key.strip()
        if not _BOOK_KEY.match(key):
            raise ValidationFailed(
                f"callee key {key!r} must be an E.164 number like +12025550101 "
                "or a prefix like +1202555*"
            )
        table, name = (prefixes, key[:-1]) if key.endswith("*") else (numbers, key)
        if name in table:
            raise ValidationFailed(f"callee key {key!r} is given twice")
        table[name] = parse_callee_script(script)
    return CalleeBook(numbers=numbers, prefixes=prefixes)


def _resample(samples: np.ndarray, rate: int) -> np.ndarray:
    if rate == _RATE or samples.size == 0:
        return samples
    count = max(1, round(samples.size * _RATE / rate))
    positions = np.linspace(0, samples.size - 1, count)
    resampled: np.ndarray = np.interp(positions, np.arange(samples.size), samples)
    return resampled


def load_wav_ulaw(path: str | Path) -> bytes:
    """Read a PCM WAV file (any rate, 8/16-bit, mono or stereo) as 8 kHz μ-law.

    Raises:
        ValidationFailed: the file is missing or not a PCM WAV file.
    """
    try:
        with wave.open(str(path), "rb") as wav:
            rate, width, channels = wav.getframerate(), wav.getsampwidth(), wav.getnchannels()
            raw = wav.readframes(wav.getnframes())
    except (OSError, EOFError, wave.Error) as exc:
        raise ValidationFailed(f"cannot read WAV file {str(path)!r}: {exc}") from exc
    if width == 1:
        samples = (np.frombuffer(raw, dtype=np.uint8).astype(np.float64) - 128) * 256
    elif width == 2:
        samples = np.frombuffer(raw, dtype="<i2").astype(np.float64)
    else:
        raise ValidationFailed(f"WAV file {str(path)!r} must be 8- or 16-bit PCM")
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1)
    pcm = np.clip(_resample(samples, rate), -32768, 32767).astype("<i2")
    return pcm16_to_ulaw(pcm.tobytes())


def _tone_pattern() -> bytes:
    # Three rising beeps of 250 ms with 150 ms gaps: clearly "speech-like energy".
    parts: list[np.ndarray] = []
    for freq in (440.0, 554.0, 659.0):
        t = np.arange(int(0.25 * _RATE)) / _RATE
        parts.append(np.sin(2 * np.pi * freq * t) * 8000)
        parts.append(np.zeros(int(0.15 * _RATE)))
    pcm = np.concatenate(parts).astype("<i2")
    return pcm16_to_ulaw(pcm.tobytes())


@cache
def builtin_sample() -> bytes:
    """The built-in utterance as 8 kHz μ-law: espeak-ng if on PATH, else tones."""
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        return _tone_pattern()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "sample.wav"
        try:
            subprocess.run(  # noqa: S603 - fixed argv, no shell
                [espeak, "-w", str(out), _SAMPLE_SENTENCE],
                check=True,
                capture_output=True,
                timeout=20,
            )
        except (OSError, subprocess.SubprocessError):
            return _tone_pattern()
        return load_wav_ulaw(out)


def beep() -> bytes:
    """An answering machine's beep: 0.5 s of 1 kHz, as 8 kHz μ-law."""
    t = np.arange(int(0.5 * _RATE)) / _RATE
    return pcm16_to_ulaw((np.sin(2 * np.pi * 1000.0 * t) * 12000).astype("<i2").tobytes())


_GREETING_SENTENCE = (
    "Hello, you have reached the sandbox phone. Nobody can take your call right now. "
    "Please leave a message after the tone."
)


@cache
def greeting_audio() -> bytes:
    """The answering machine's recorded greeting as 8 kHz μ-law: espeak-ng if on PATH
    (made here, never downloaded), else a tone pattern."""
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        return _tone_pattern() * 6
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "greeting.wav"
        try:
            subprocess.run(  # noqa: S603 - fixed argv, no shell
                [espeak, "-s", "160", "-w", str(out), _GREETING_SENTENCE],
                check=True,
                capture_output=True,
                timeout=20,
            )
        except (OSError, subprocess.SubprocessError):
            return _tone_pattern() * 6
        return load_wav_ulaw(out)


def greeting_seconds() -> float:
    """How long the recorded greeting lasts (its beep follows)."""
    return len(greeting_audio()) / _RATE


def machine_greeting(seconds: float) -> bytes:
    """An answering machine's greeting of ``seconds`` (the recorded one, cut short or
    followed by silence), as 8 kHz μ-law; the beep is :func:`beep`."""
    size = int(seconds * _RATE)
    greeting = greeting_audio()[:size]
    return greeting + bytes([ULAW_SILENCE]) * (size - len(greeting))


def greeting_wav() -> bytes:
    """The recorded greeting and its beep as a 16-bit 8 kHz WAV file (for the phone page)."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(_RATE)
        wav.writeframes(ulaw_to_pcm16(greeting_audio() + beep()))
    return buffer.getvalue()


def script_audio(script: CalleeScript) -> bytes:
    """The μ-law the callee of ``script`` says once the stream starts (maybe empty)."""
    if script.speak is None:
        return b""
    if script.speak == "builtin":
        return builtin_sample()
    return load_wav_ulaw(script.speak)


class InboundAudio:
    """The callee's microphone: 20 ms μ-law frames, silence when nothing is queued."""

    def __init__(self) -> None:
        self._pending: deque[bytes] = deque()
        self._buffered = b""

    def enqueue(self, ulaw: bytes) -> None:
        """Queue audio to be sent after whatever is already queued."""
        if ulaw:
            self._pending.append(ulaw)

    def clear(self) -> None:
        """Drop everything queued."""
        self._pending.clear()
        self._buffered = b""

    @property
    def speaking(self) -> bool:
        """Whether queued audio remains."""
        return bool(self._buffered or self._pending)

    def next_frame(self) -> bytes:
        """Return the next 160-byte frame, padded with μ-law silence."""
        while len(self._buffered) < FRAME_BYTES and self._pending:
            self._buffered += self._pending.popleft()
        frame, self._buffered = self._buffered[:FRAME_BYTES], self._buffered[FRAME_BYTES:]
        return frame + bytes([ULAW_SILENCE]) * (FRAME_BYTES - len(frame))
