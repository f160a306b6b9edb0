"""TwiML for Programmable Voice: parse a document and carry out its verbs.

Implements the subset of https://www.twilio.com/docs/voice/twiml that callbridge
uses: ``<Say>``, ``<Pause>``, ``<Gather>`` (digits), ``<Connect><Stream>`` with
``<Parameter>`` (https://www.twilio.com/docs/voice/twiml/stream), ``<Dial>``,
``<Redirect>``, ``<Hangup>`` and ``<Reject>``. The executor talks to the call
through the :class:`CallContext` protocol, so this module does no I/O itself.
Other verbs are skipped and recorded as warning 12200; a document that is not
TwiML ends the call with error 12100, as Twilio's "application error" does.
"""

from __future__ import annotations

import enum
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urljoin

from callbridge.errors import ProtocolError

#: Twilio follows at most this many ``<Redirect>`` in a row (then error 11215).
MAX_REDIRECTS = 10

DOCUMENT_PARSE_FAILURE = 12100
SCHEMA_WARNING = 12200
TOO_MANY_REDIRECTS = 11215


class TwimlError(ProtocolError):
    """A TwiML document or its retrieval failed; ``twilio_code`` says how."""

    def __init__(self, twilio_code: int, message: str) -> None:
        super().__init__(message)
        self.twilio_code = twilio_code


@dataclass(frozen=True)
class Say:
    """``<Say>``: speak ``text``."""

    text: str


@dataclass(frozen=True)
class Pause:
    """``<Pause length>``: silence for ``length`` seconds (default 1)."""

    length: float = 1.0


@dataclass(frozen=True)
class Gather:
    """``<Gather input="dtmf">`` with its nested ``<Say>``/``<Pause>`` prompt."""

    num_digits: int | None = None
    timeout: float = 5.0
    finish_on_key: str = "#"
    action: str | None = None
    method: str = "POST"
    prompt: tuple[Say | Pause, ...] = ()


@dataclass(frozen=True)
class Stream:
    """``<Stream url>`` inside ``<Connect>``, with its ``<Parameter>`` values."""

    url: str
    name: str | None = None
    parameters: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Connect:
    """``<Connect action method>`` around one ``<Stream>``."""

    stream: Stream | None
    action: str | None = None
    method: str = "POST"


@dataclass(frozen=True)
class Dial:
    """``<Dial>`` of one number (text body or ``<Number>``)."""

    number: str
    caller_id: str | None = None
    timeout: float = 30.0
    action: str | None = None
    method: str = "POST"


@dataclass(frozen=True)
class Redirect:
    """``<Redirect method>URL</Redirect>``."""

    url: str
    method: str = "POST"


@dataclass(frozen=True)
class Hangup:
    """``<Hangup/>``."""


@dataclass(frozen=True)
class Reject:
    """``<Reject reason>``."""

    reason: str = "rejected"


@dataclass(frozen=True)
class Unsupported:
    """A verb the emulator does not carry out."""

    name: str


Verb = Say | Pause | Gather | Connect | Dial | Redirect | Hangup | Reject | Unsupported

_FORBIDDEN = re.compile(r"<!(DOCTYPE|ENTITY)", re.IGNORECASE)


def _float(element: ET.Element, name: str, default: float) -> float:
    raw = element.get(name)
    if raw is None:
        return default
    try:
        return float(raw)
    except ValueError:
        message = f"<{element.tag} {name}> is not a number"
        raise TwimlError(DOCUMENT_PARSE_FAILURE, message) from None


def _method(element: ET.Element) -> str:
    method = (element.get("method") or "POST").upper()
    if method not in ("GET", "POST"):
        raise TwimlError(DOCUMENT_PARSE_FAILURE, f"<{element.tag} method> must be GET or POST")
    return method


def _text(element: ET.Element) -> str:
    return (element.text or "").strip()


def _prompt(element: ET.Element) -> tuple[Say | Pause, ...]:
    prompt: list[Say | Pause] = []
    for child in element:
        if child.tag == "Say":
            prompt.append(Say(_text(child)))
        elif child.tag == "Pause":
            prompt.append(Pause(_float(child, "length", 1.0)))
    return tuple(prompt)


def _verb(element: ET.Element) -> Verb:
    tag = element.tag
    if tag == "Say":
        return Say(_text(element))
    if tag == "Pause":
        return Pause(_float(element, "length", 1.0))
    if tag == "Gather":
        digits = element.get("numDigits")
        return Gather(
            num_digits=int(digits) if digits and digits.isdigit() else None,
            timeout=_float(element, "timeout", 5.0),
            finish_on_key=element.get("finishOnKey", "#"),
            action=element.get("action"),
            method=_method(element),
            prompt=_prompt(element),
        )
    if tag == "Connect":
        found = element.find("Stream")
        stream = None
        if found is not None:
            url = found.get("url")
            if not url:
                raise TwimlError(DOCUMENT_PARSE_FAILURE, "<Stream> needs a url")
            params = {p.get("name", ""): p.get("value", "") for p in found.iter("Parameter")}
            stream = Stream(url=url, name=found.get("name"), parameters=params)
        return Connect(stream=stream, action=element.get("action"), method=_method(element))
    if tag == "Dial":
        number_el = element.find("Number")
        number = _text(number_el) if number_el is not None else _text(element)
        return Dial(
            number=number,
            caller_id=element.get("callerId"),
            timeout=_float(element, "timeout", 30.0),
            action=element.get("action"),
            method=_method(element),
        )
    if tag == "Redirect":
        return Redirect(url=_text(element), method=_method(element))
    if tag == "Hangup":
        return Hangup()
    if tag == "Reject":
        return Reject(element.get("reason", "rejected"))
    return Unsupported(tag)


def parse_twiml(document: str) -> tuple[Verb, ...]:
    """Parse a TwiML ``<Response>`` into verbs.

    Raises:
        TwimlError: 12100 if the text is not XML, declares a DOCTYPE or entity,
            or its root is not ``<Response>``.
    """
    if _FORBIDDEN.search(document):
        raise TwimlError(DOCUMENT_PARSE_FAILURE, "TwiML must not declare a DOCTYPE or entities")
    try:
        root = ET.fromstring(document.strip())  # noqa: S314 - DOCTYPE/entities refused above
    except ET.ParseError as exc:
        raise TwimlError(DOCUMENT_PARSE_FAILURE, f"TwiML is not well-formed XML: {exc}") from exc
    if root.tag != "Response":
        raise TwimlError(DOCUMENT_PARSE_FAILURE, f"TwiML root must be <Response>, not <{root.tag}>")
    return tuple(_verb(child) for child in root)


class Outcome(enum.StrEnum):
    """Why a TwiML run stopped."""

    END = "end"  # the document ran out, or Hangup/Reject
    STOPPED = "stopped"  # the call was hung up or redirected from outside
    ERROR = "error"  # a fetch or parse failed


class CallContext(Protocol):
    """What the executor needs from the call it runs on."""

    @property
    def stopped(self) -> bool:
        """Whether the call ended or was redirected from outside."""
        ...

    def record_document(self, url: str | None, document: str) -> None:
        """Remember a TwiML document the call executed."""

    def record_error(self, code: int, message: str) -> None:
        """Remember an error notification on the call."""

    async def fetch(self, url: str, method: str, extra: dict[str, str]) -> str:
        """Request TwiML from ``url`` (signed), with the voice params and ``extra``."""
        ...

    async def say(self, text: str) -> None:
        """Speak ``text`` to the callee."""

    async def pause(self, seconds: float) -> None:
        """Stay silent for ``seconds``."""

    async def gather(
        self,
        *,
        num_digits: int | None,
        digit_timeout: float,
        finish_on_key: str,
        prompt: Callable[[], Coroutine[Any, Any, None]],
    ) -> tuple[str, bool]:
        """Play ``prompt`` while listening; return the digits and whether finishOnKey ended it."""
        ...

    async def stream(self, stream: Stream) -> None:
        """Run the media stream until the server closes it or the call stops."""

    async def dial(self, dial: Dial) -> float:
        """Connect the callee to ``dial.number``; return the leg's seconds."""
        ...


@dataclass(frozen=True)
class _Navigate:
    url: str
    method: str
    extra: dict[str, str] = field(default_factory=dict)
    redirect: bool = False


class TwimlExecutor:
    """Carries out TwiML documents on one call, following navigation.

    Args:
        ctx: the call.
        max_redirects: ``<Redirect>`` in a row allowed before error 11215.
    """

    def __init__(self, ctx: CallContext, *, max_redirects: int = MAX_REDIRECTS) -> None:
        self._ctx = ctx
        self._max_redirects = max_redirects

    async def run_url(
        self,
        url: str,
        method: str,
        extra: dict[str, str] | None = None,
        *,
        fallback: tuple[str, str] | None = None,
    ) -> Outcome:
        """Fetch the TwiML at ``url`` (with ``extra`` parameters) and run it.

        ``fallback`` is the call's ``(FallbackUrl, FallbackMethod)``: if the document
        at ``url`` cannot be retrieved (connection error, timeout, non-2xx: 11200),
        comes as another content type (12300) or is not TwiML (12100), the fallback
        is requested once, with the same voice parameters plus ``ErrorCode`` and
        ``ErrorUrl``, and its TwiML runs instead
        (twilio.com/docs/usage/security/availability-reliability). Only the Url's own
        document falls back; a later ``<Gather>``/``<Redirect>`` target that fails
        ends the call [unconfirmed: Twilio's docs tie FallbackUrl to "the TwiML at
        url" and say nothing of action URLs].
        """
        return await self._run(_Navigate(url, method, dict(extra or {})), None, fallback)

    async def run_document(self, document: str, url: str | None = None) -> Outcome:
        """Run inline TwiML (relative URLs resolve against ``url``)."""
        return await self._run(None, (document, url))

    async def _run(
        self,
        nav: _Navigate | None,
        doc: tuple[str, str | None] | None,
        fallback: tuple[str, str] | None = None,
    ) -> Outcome:
        ctx = self._ctx
        redirects = 0
        while True:
            try:
                if nav is not None:
                    doc = (await ctx.fetch(nav.url, nav.method, nav.extra), nav.url)
                assert doc is not None
                ctx.record_document(doc[1], doc[0])
                verbs = parse_twiml(doc[0])
            except TwimlError as exc:
                ctx.record_error(exc.twilio_code, exc.message)
                if fallback is None or nav is None or ctx.stopped:
                    return Outcome.ERROR
                extra = {"ErrorCode": str(exc.twilio_code), "ErrorUrl": nav.url}
                nav, fallback = _Navigate(fallback[0], fallback[1], extra), None
                continue
            fallback = None  # only the first document falls back
            if ctx.stopped:
                return Outcome.STOPPED
            result = await self._run_verbs(verbs, doc[1])
            if not isinstance(result, _Navigate):
                return result
            redirects = redirects + 1 if result.redirect else 0
            if redirects > self._max_redirects:
                ctx.record_error(TOO_MANY_REDIRECTS, "too many redirects")
                return Outcome.ERROR
            nav = result

    @staticmethod
    def _resolve(base: str | None, url: str) -> str:
        return urljoin(base, url) if base else url

    async def _prompt(self, prompt: tuple[Say | Pause, ...]) -> None:
        for verb in prompt:
            if isinstance(verb, Say):
                await self._ctx.say(verb.text)
            else:
                await self._ctx.pause(verb.length)

    async def _run_verbs(self, verbs: tuple[Verb, ...], url: str | None) -> Outcome | _Navigate:
        ctx = self._ctx
        for verb in verbs:
            if ctx.stopped:
                return Outcome.STOPPED
            match verb:
                case Say(text=text):
                    await ctx.say(text)
                case Pause(length=length):
                    await ctx.pause(length)
                case Gather():
                    digits, on_key = await ctx.gather(
                        num_digits=verb.num_digits,
                        digit_timeout=verb.timeout,
                        finish_on_key=verb.finish_on_key,
                        prompt=lambda v=verb: self._prompt(v.prompt),  # type: ignore[misc]
                    )
                    if digits and not ctx.stopped:
                        target = self._resolve(url, verb.action) if verb.action else url
                        extra = {"Digits": digits}
                        if on_key:
                            extra["FinishedOnKey"] = verb.finish_on_key
                        if target is None:
                            ctx.record_error(SCHEMA_WARNING, "<Gather> has no action URL")
                            continue
                        return _Navigate(target, verb.method, extra)
                case Connect(stream=stream):
                    if stream is not None:
                        await ctx.stream(
                            Stream(self._resolve(url, stream.url), stream.name, stream.parameters)
                        )
                    if verb.action and not ctx.stopped:
                        return _Navigate(self._resolve(url, verb.action), verb.method)
                case Dial():
                    seconds = await ctx.dial(verb)
                    if verb.action and not ctx.stopped:
                        extra = {
                            "DialCallStatus": "completed",
                            "DialCallDuration": str(round(seconds)),
                        }
                        return _Navigate(self._resolve(url, verb.action), verb.method, extra)
                case Redirect(url=target, method=method):
                    return _Navigate(self._resolve(url, target), method, redirect=True)
                case Hangup() | Reject():
                    return Outcome.END
                case Unsupported(name=name):
                    ctx.record_error(SCHEMA_WARNING, f"<{name}> is not emulated; skipped")
        return Outcome.STOPPED if ctx.stopped else Outcome.END
