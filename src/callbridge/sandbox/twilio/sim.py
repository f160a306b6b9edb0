"""The call simulator: one emulated outbound call from ``queued`` to its end.

Implements the call lifecycle and the webhooks Twilio sends for it, as
protocols.md 2.1-2.3 records them
(https://www.twilio.com/docs/voice/api/call-resource#statuscallback and
https://www.twilio.com/docs/usage/webhooks/voice-webhooks): status callbacks for
the events asked for in ``StatusCallbackEvent`` (``completed`` by default) with
``SequenceNumber`` from 0, the TwiML fetch on answer with ``CallStatus=in-progress``
(and ``FallbackUrl`` with ``ErrorCode``/``ErrorUrl`` when that fails, see
:meth:`~callbridge.sandbox.twilio.twiml.TwimlExecutor.run_url`), and
``X-Twilio-Signature`` on every request
(https://www.twilio.com/docs/usage/security#validating-requests).

:class:`SimCall` is the record tests read; :class:`CallRunner` drives it and is
the :class:`~callbridge.sandbox.twilio.twiml.CallContext` of its TwiML.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any, Protocol
from urllib.parse import urlencode

import httpx
from twilio.request_validator import RequestValidator

from callbridge.sandbox.callee import (
    Answerer,
    CalleeScript,
    InboundAudio,
    Pickup,
    beep,
    machine_greeting,
    script_audio,
)
from callbridge.sandbox.twilio.amd import (
    NO_AMD_CALLBACK,
    AmdRequest,
    callback_params,
    verdict_for,
)
from callbridge.sandbox.twilio.media import (
    MediaStreamClient,
    StreamCodec,
    StreamLog,
    new_stream_sid,
)
from callbridge.sandbox.twilio.overrides import ConnectionOverrides
from callbridge.sandbox.twilio.twiml import Dial, Outcome, Stream, TwimlError, TwimlExecutor

API_VERSION = "2010-04-01"
HTTP_RETRIEVAL_FAILURE = 11200
#: 12300: "Twilio is unable to process the Content-Type of the provided URL".
INVALID_CONTENT_TYPE = 12300
#: Content types Twilio reads as TwiML.
_TWIML_TYPES = frozenset({"text/xml", "application/xml", "text/html"})
#: What Twilio plays when a call's TwiML cannot be retrieved or executed.
APPLICATION_ERROR = "We are sorry, an application error has occurred. Goodbye."
_FINAL = frozenset({"completed", "busy", "no-answer", "failed", "canceled"})
_SIP = {"busy": 486, "no-answer": 487, "failed": 404}


def rfc2822(moment: datetime) -> str:
    """Format a time as Twilio does: ``Tue, 31 Aug 2010 20:36:28 +0000``."""
    return format_datetime(moment.astimezone(UTC)).replace("-0000", "+0000")


@dataclass(frozen=True)
class WebhookRecord:
    """One request the emulator sent."""

    kind: str  # "status", "twiml", "stream"
    url: str
    method: str
    params: dict[str, str]
    signature: str
    status_code: int | None
    idempotency_token: str = ""


@dataclass
class SimCall:
    """An emulated call, as the REST resource and the tests see it."""

    sid: str
    account_sid: str
    to: str
    from_: str
    url: str | None
    method: str
    twiml: str | None
    status_callback: str | None
    status_callback_method: str
    status_callback_events: frozenset[str]
    timeout: float
    time_limit: float
    script: CalleeScript
    fallback_url: str | None = None
    fallback_method: str = "POST"
    callee_kind: str = "script"  # or "phone"
    amd: AmdRequest | None = None
    answered_by: str | None = None
    beep_at: float | None = None  # monotonic time of an answering machine's beep
    said_after_beep: list[str] = field(default_factory=list)
    status: str = "queued"
    date_created: datetime = field(default_factory=lambda: datetime.now(UTC))
    date_updated: datetime = field(default_factory=lambda: datetime.now(UTC))
    start_time: datetime | None = None
    end_time: datetime | None = None
    duration: int | None = None
    sip_response_code: int | None = None
    history: list[tuple[str, float]] = field(default_factory=list)
    callbacks: list[dict[str, str]] = field(default_factory=list)
    webhooks: list[WebhookRecord] = field(default_factory=list)
    documents: list[str] = field(default_factory=list)
    said: list[str] = field(default_factory=list)
    digits_pressed: list[str] = field(default_factory=list)
    gathered: list[str] = field(default_factory=list)
    dialled: list[str] = field(default_factory=list)
    streams: list[StreamLog] = field(default_factory=list)
    errors: list[tuple[int, str]] = field(default_factory=list)
    times: dict[str, float] = field(default_factory=lambda: {"created": time.monotonic()})
    end_reason: str | None = None
    inbound: InboundAudio = field(default_factory=InboundAudio, repr=False)
    ended: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    on_event: Callable[[dict[str, Any]], None] | None = field(default=None, repr=False)
    _changed: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    @property
    def is_final(self) -> bool:
        """Whether the call has ended."""
        return self.status in _FINAL

    @property
    def stream(self) -> StreamLog | None:
        """The latest media stream, if any."""
        return self.streams[-1] if self.streams else None

    @property
    def heard(self) -> bytes:
        """All server μ-law the callee heard, across streams."""
        return b"".join(bytes(s.played) for s in self.streams)

    @property
    def heard_after_beep(self) -> bytes:
        """Server μ-law heard on streams that started after a machine's beep (its recording)."""
        if self.beep_at is None:
            return b""
        beep_at = self.beep_at
        return b"".join(
            bytes(s.played)
            for s in self.streams
            if s.started_at is not None and s.started_at >= beep_at
        )

    def notify(self, message: dict[str, Any]) -> None:
        """Tell the phone page (if one carries this call) what happened."""
        if self.on_event is not None:
            self.on_event(message)

    def set_status(self, status: str) -> None:
        """Move to ``status`` and wake waiters."""
        self.status = status
        self.date_updated = datetime.now(UTC)
        self.history.append((status, time.monotonic()))
        self.times.setdefault(status, time.monotonic())
        self._changed.set()
        self._changed = asyncio.Event()
        self.notify({"type": "status", "status": status})

    async def wait_changed(self) -> None:
        """Wait for the next status change."""
        await self._changed.wait()


@dataclass(frozen=True)
class RingOutcome:
    """How ringing ended: answered, or a final status with its SIP code."""

    answered: bool
    status: str = "in-progress"
    sip_code: int | None = None


class Ringer(Protocol):
    """Rings the callee and reports whether (and how) it picked up."""

    async def ring(self, call: SimCall, stop: asyncio.Event) -> RingOutcome:
        """Ring until answered, refused, ``call.timeout`` or ``stop``."""
        ...


async def wait_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep ``seconds`` unless ``stop`` is set first; return whether it was."""
    if stop.is_set():
        return True
    if seconds <= 0:
        return False
    try:
        async with asyncio.timeout(seconds):
            await stop.wait()
    except TimeoutError:
        return False
    return True


class ScriptedRinger:
    """Picks up (or not) as the call's :class:`CalleeScript` says."""

    refuse_after = 0.1

    async def ring(self, call: SimCall, stop: asyncio.Event) -> RingOutcome:
        """Ring per the script; see :class:`Ringer`."""
        script = call.script
        if script.pickup is Pickup.ANSWER and script.answer_after <= call.timeout:
            if await wait_or_stop(stop, script.answer_after):
                return RingOutcome(False, "canceled")
            return RingOutcome(True)
        if script.pickup in (Pickup.ANSWER, Pickup.NO_ANSWER):
            if await wait_or_stop(stop, call.timeout):
                return RingOutcome(False, "canceled")
            return RingOutcome(False, "no-answer", _SIP["no-answer"])
        if await wait_or_stop(stop, self.refuse_after):
            return RingOutcome(False, "canceled")
        if script.pickup is Pickup.REJECT:
            return RingOutcome(False, "busy", 603)
        if script.pickup is Pickup.BUSY:
            return RingOutcome(False, "busy", _SIP["busy"])
        return RingOutcome(False, "failed", _SIP["failed"])


class CallRunner:
    """Drives one :class:`SimCall` and carries out its TwiML.

    Args:
        call: the call to run.
        auth_token: signs every request.
        http: sends webhooks.
        ringer: the callee's phone.
        say_seconds_per_char: how long ``<Say>`` takes per character.
        dial_seconds: how long a ``<Dial>`` leg lasts.
        sign_fragment: sign webhook URLs with their ``#`` connection overrides
            (whether Twilio does is unconfirmed; by default they are left out).
    """

    def __init__(
        self,
        call: SimCall,
        *,
        auth_token: str,
        http: httpx.AsyncClient,
        ringer: Ringer,
        say_seconds_per_char: float,
        dial_seconds: float,
        sign_fragment: bool = False,
    ) -> None:
        self.call = call
        self._sign_fragment = sign_fragment
        self._validator = RequestValidator(auth_token)
        self._token = auth_token
        self._http = http
        self._ringer = ringer
        self._say_rate = say_seconds_per_char
        self._dial_seconds = dial_seconds
        self._stop = asyncio.Event()
        self._hangup_reason: str | None = None
        self._pending: tuple[str, str, str] | None = None  # ("url"|"twiml", value, method)
        self._sequence = 0
        self._keypad: asyncio.Queue[str] = asyncio.Queue()
        self._gathering = False
        self._key_pressed = asyncio.Event()
        self._script_digits = call.script.digits
        self._active_stream: MediaStreamClient | None = None
        self._amd_task: asyncio.Task[None] | None = None
        self._amd_sending = False

    # ----- control from outside -------------------------------------------------

    @property
    def stopped(self) -> bool:
        """Whether the current TwiML must stop (hangup or REST redirect)."""
        return self._stop.is_set()

    @property
    def streaming(self) -> bool:
        """Whether a media stream is running now."""
        return self._active_stream is not None

    def hangup(self, reason: str) -> None:
        """End the call (``reason``: ``callee``, ``rest``, ``time-limit``, ``shutdown``)."""
        if self._hangup_reason is None:
            self._hangup_reason = reason
        self._stop.set()

    def redirect(self, kind: str, value: str, method: str = "POST") -> None:
        """Replace the call's TwiML (REST update with ``Url`` or ``Twiml``)."""
        if self.call.status == "in-progress":
            self._pending = (kind, value, method)
            self._stop.set()
        elif kind == "url":
            self.call.url, self.call.twiml, self.call.method = value, None, method
        else:
            self.call.url, self.call.twiml = None, value

    def press(self, digits: str) -> None:
        """The callee presses ``digits``: to the stream, to a Gather, or into the void."""
        self.call.digits_pressed.extend(digits)
        if self._active_stream is not None:
            self._active_stream.press(digits)
        elif self._gathering:
            for digit in digits:
                self._keypad.put_nowait(digit)
            self._key_pressed.set()

    # ----- lifecycle ------------------------------------------------------------

    async def run(self) -> None:
        """Run the call to its end; the final callback is sent before ``ended`` is set."""
        call = self.call
        try:
            await self._callback("initiated", "initiated")
            call.set_status("ringing")
            await self._callback("ringing", "ringing")
            outcome = await self._ringer.ring(call, self._stop)
            if outcome.answered and not self._stop.is_set():
                await self._converse()
                await self._finish("completed", None)
            elif outcome.status == "canceled" and self._hangup_reason == "callee":
                await self._finish("busy", 603)
            else:
                await self._finish(outcome.status, outcome.sip_code)
        finally:
            if not call.is_final:  # cancelled from outside
                call.end_reason = call.end_reason or "cancelled"
                call.set_status("canceled" if call.start_time is None else "completed")
            await self._settle_amd()
            call.ended.set()

    async def _settle_amd(self) -> None:
        """A verdict not yet due dies with the call; one being delivered is let finish."""
        task, self._amd_task = self._amd_task, None
        if task is None:
            return
        if not self._amd_sending:
            task.cancel()
        await asyncio.wait({task})
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]

    async def _converse(self) -> None:
        call = self.call
        call.start_time = datetime.now(UTC)
        call.set_status("in-progress")
        call.notify({"type": "status", "status": "answered"})
        await self._callback("answered", "in-progress")
        executor = TwimlExecutor(self)
        extra = await self._sync_amd()
        async with asyncio.TaskGroup() as group:
            timers = [group.create_task(self._hangup_after(call.time_limit, "time-limit"))]
            if call.script.answerer is Answerer.MACHINE:
                timers.append(group.create_task(self._beep_after(call.script.greeting_s)))
            if call.amd is not None and call.amd.asynchronous:
                # Beside the call, not in this group: the verdict's request must not be
                # cut off when the call ends because of it (see run()).
                self._amd_task = asyncio.get_running_loop().create_task(self._async_amd(call.amd))
            if call.script.hangup_after is not None:
                timers.append(
                    group.create_task(self._hangup_after(call.script.hangup_after, "callee"))
                )
            source: tuple[str, str, str] = (
                ("url", call.url, call.method) if call.url else ("twiml", call.twiml or "", "POST")
            )
            while True:
                if source[0] == "url":
                    fallback = (
                        (call.fallback_url, call.fallback_method) if call.fallback_url else None
                    )
                    outcome = await executor.run_url(source[1], source[2], extra, fallback=fallback)
                    extra = {}
                else:
                    outcome = await executor.run_document(source[1])
                if outcome is Outcome.ERROR and not self._stop.is_set():
                    # Twilio's own last word when neither Url nor FallbackUrl gave usable
                    # TwiML (twilio.com/blog "a hidden gem: fallback URLs"); the exact
                    # wording is [unconfirmed].
                    await self.say(APPLICATION_ERROR)
                if self._pending is None or self._hangup_reason is not None:
                    break
                source, self._pending = self._pending, None
                self._stop.clear()
            for timer in timers:
                timer.cancel()
        call.end_reason = self._hangup_reason or "twiml-ended"

    # ----- answering machine detection (see amd.py) -----------------------------

    async def _sync_amd(self) -> dict[str, str]:
        """Synchronous AMD: the TwiML request waits for the verdict and carries it."""
        amd = self.call.amd
        if amd is None or amd.asynchronous:
            return {}
        verdict = verdict_for(self.call.script, amd)
        await wait_or_stop(self._stop, verdict.after_s)
        self.call.answered_by = verdict.answered_by
        return {"AnsweredBy": verdict.answered_by, "MachineDetectionDuration": verdict.duration_ms}

    async def _async_amd(self, amd: AmdRequest) -> None:
        """Asynchronous AMD: POST the verdict, signed, when it is reached (not after the end)."""
        if amd.callback is None:
            self.record_error(NO_AMD_CALLBACK, "No AMD status callback URL provided")
            return
        verdict = verdict_for(self.call.script, amd)
        await asyncio.sleep(verdict.after_s)  # a redirect does not stop AMD; the end does
        if self._hangup_reason is not None or self.call.is_final:
            return
        self.call.answered_by = verdict.answered_by
        self._amd_sending = True
        params = callback_params(self.call.account_sid, self.call.sid, verdict)
        try:
            await self._request("amd", amd.callback, amd.callback_method, params)
        except httpx.HTTPError as exc:
            self.call.errors.append((HTTP_RETRIEVAL_FAILURE, f"AMD callback failed: {exc}"))

    async def _beep_after(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        self.call.beep_at = time.monotonic()
        self.call.notify({"type": "beep"})

    async def _hangup_after(self, seconds: float, reason: str) -> None:
        await asyncio.sleep(seconds)
        self.hangup(reason)

    async def _finish(self, status: str, sip_code: int | None) -> None:
        call = self.call
        call.end_time = datetime.now(UTC)
        if call.start_time is not None:
            call.duration = max(0, round((call.end_time - call.start_time).total_seconds()))
        else:
            call.duration = 0
            call.end_reason = call.end_reason or self._hangup_reason or status
        call.sip_response_code = sip_code
        call.set_status(status)
        call.notify({"type": "ended", "status": status, "duration": call.duration})
        await self._callback("completed", status)

    # ----- webhooks -------------------------------------------------------------

    def _voice_params(self, status: str) -> dict[str, str]:
        call = self.call
        return {
            "AccountSid": call.account_sid,
            "CallSid": call.sid,
            "From": call.from_,
            "To": call.to,
            "Caller": call.from_,
            "Called": call.to,
            "CallStatus": status,
            "Direction": "outbound-api",
            "ApiVersion": API_VERSION,
        }

    async def _callback(self, event: str, status: str) -> None:
        call = self.call
        if call.status_callback is None or event not in call.status_callback_events:
            return
        params = self._voice_params(status)
        params |= {
            "CallbackSource": "call-progress-events",
            "SequenceNumber": str(self._sequence),
            # As Twilio: when the event fired, so the final one's is the call's end_time.
            "Timestamp": rfc2822(
                call.end_time if event == "completed" and call.end_time else datetime.now(UTC)
            ),
        }
        if event == "completed":
            params["CallDuration"] = str(call.duration or 0)
            params["Duration"] = str(math.ceil((call.duration or 0) / 60))
            if status in _SIP or call.sip_response_code is not None:
                params["SipResponseCode"] = str(call.sip_response_code or _SIP[status])
        self._sequence += 1
        call.callbacks.append(params)
        try:
            await self._request("status", call.status_callback, call.status_callback_method, params)
        except httpx.HTTPError as exc:
            call.errors.append((HTTP_RETRIEVAL_FAILURE, f"status callback failed: {exc}"))

    async def _request(
        self, kind: str, url: str, method: str, params: dict[str, str]
    ) -> httpx.Response:
        """Deliver one webhook as Twilio does, with the connection overrides of its URL.

        The ``#fragment`` is never sent. Each retry (per the overrides' ``rc`` and
        ``rp``, within ``tt``) repeats the same body, the same signature and the same
        ``I-Twilio-Idempotency-Token`` (believed identical across Twilio's retries:
        many apps dedupe on it; UNCONFIRMED). Whether Twilio signs the URL with or
        without the fragment is UNCONFIRMED: the emulator signs it without (the one
        source found says so) unless ``sign_fragment`` is set.

        Returns:
            The last answer (a 4xx/5xx that was not retried, or the last retry's).

        Raises:
            httpx.HTTPError: the last attempt got no answer at all.
        """
        target, _, fragment = url.partition("#")
        overrides = ConnectionOverrides.parse(fragment)
        token = self.call.sid + "-" + str(len(self.call.webhooks))  # one per delivery
        signed = f"{target}#{fragment}" if fragment and self._sign_fragment else target
        if method.upper() == "GET":
            query = ("&" if "?" in target else "?") + urlencode(params)
            target += query
            signed = target + (f"#{fragment}" if fragment and self._sign_fragment else "")
            signature = self._validator.compute_signature(signed, {})
            record_params: dict[str, str] = {}
        else:
            signature = self._validator.compute_signature(signed, params)
            record_params = dict(params)
        headers = {
            "User-Agent": "TwilioProxy/1.1",
            "I-Twilio-Idempotency-Token": token,
            "X-Twilio-Signature": signature,
        }
        deadline = time.monotonic() + overrides.total_s
        attempt = 0
        while True:
            attempt += 1
            left = max(0.001, deadline - time.monotonic())
            timeout = httpx.Timeout(
                min(overrides.read_timeout_s, left),
                connect=min(overrides.connect_timeout_s, left),
            )
            if method.upper() == "GET":
                request = self._http.build_request("GET", target, headers=headers, timeout=timeout)
            else:
                request = self._http.build_request(
                    "POST", target, data=params, headers=headers, timeout=timeout
                )
            failure: str | None
            try:
                response = await self._http.send(request)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                error: httpx.HTTPError | None = exc
                failure, status_code = "ct", None
            except httpx.HTTPError as exc:  # read timeout, or the answer broke off
                error, failure, status_code = exc, "rt", None
            else:
                error, status_code = None, response.status_code
                failure = f"{status_code // 100}xx" if status_code >= 400 else None
            self.call.webhooks.append(
                WebhookRecord(kind, target, method, record_params, signature, status_code, token)
            )
            more = (
                failure is not None
                and attempt <= overrides.retries
                and overrides.retries_on(failure)
                and time.monotonic() < deadline
            )
            if not more:
                if error is not None:
                    raise error
                return response

    # ----- CallContext ----------------------------------------------------------

    def record_document(self, url: str | None, document: str) -> None:
        """Remember a TwiML document."""
        self.call.documents.append(document)

    def record_error(self, code: int, message: str) -> None:
        """Remember an error notification."""
        self.call.errors.append((code, message))

    async def fetch(self, url: str, method: str, extra: dict[str, str]) -> str:
        """Request TwiML, signed, with the voice params and ``extra``.

        Raises:
            TwimlError: 11200 when the request fails or answers non-2xx; 12300 when a
                body comes with a Content-Type that is not TwiML's (or none).
        """
        params = self._voice_params("in-progress") | extra
        try:
            response = await self._request("twiml", url, method, params)
        except httpx.HTTPError as exc:
            raise TwimlError(HTTP_RETRIEVAL_FAILURE, f"HTTP retrieval failure: {exc}") from exc
        if not response.is_success:
            raise TwimlError(
                HTTP_RETRIEVAL_FAILURE,
                f"HTTP retrieval failure: {url} answered {response.status_code}",
            )
        kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if response.content and kind not in _TWIML_TYPES:
            # Twilio also plays audio/* and speaks text/plain [unconfirmed which
            # exactly]; the emulator runs only TwiML, so those are refused here too.
            raise TwimlError(INVALID_CONTENT_TYPE, f"Invalid Content-Type {kind or 'none'!r}")
        return response.text

    async def say(self, text: str) -> None:
        """Speak ``text`` (records it; takes ``len(text) * say_seconds_per_char``)."""
        self.call.said.append(text)
        if self.call.beep_at is not None:
            self.call.said_after_beep.append(text)
        self.call.notify({"type": "say", "text": text})
        await wait_or_stop(self._stop, len(text) * self._say_rate)

    async def pause(self, seconds: float) -> None:
        """Stay silent for ``seconds``."""
        await wait_or_stop(self._stop, seconds)

    async def gather(
        self,
        *,
        num_digits: int | None,
        digit_timeout: float,
        finish_on_key: str,
        prompt: Callable[[], Coroutine[Any, Any, None]],
    ) -> tuple[str, bool]:
        """Listen for digits while playing ``prompt``; the scripted callee presses its keys."""
        self._gathering = True
        self._keypad = asyncio.Queue()
        self._key_pressed.clear()
        try:
            await self._until_key(prompt())
            if self._script_digits and self.call.callee_kind == "script":
                digits, self._script_digits = self._script_digits, ""
                self.press(digits.replace("w", ""))
            collected = ""
            while num_digits is None or len(collected) < num_digits:
                key = await self._next_key(digit_timeout)
                if key is None:
                    break
                if key == finish_on_key:
                    if collected:
                        self.call.gathered.append(collected)
                    return collected, True
                collected += key
        finally:
            self._gathering = False
        if collected:
            self.call.gathered.append(collected)
        return collected, False

    async def _until_key(self, prompt: Coroutine[Any, Any, None]) -> None:
        async with asyncio.TaskGroup() as group:
            played = group.create_task(prompt)
            pressed = group.create_task(self._key_pressed.wait())
            await asyncio.wait({played, pressed}, return_when=asyncio.FIRST_COMPLETED)
            played.cancel()
            pressed.cancel()

    async def _next_key(self, seconds: float) -> str | None:
        async with asyncio.TaskGroup() as group:
            key = group.create_task(self._keypad.get())
            stop = group.create_task(self._stop.wait())
            done, _ = await asyncio.wait(
                {key, stop}, timeout=max(seconds, 0.0), return_when=asyncio.FIRST_COMPLETED
            )
            key.cancel()
            stop.cancel()
        return key.result() if key in done else None

    async def stream(self, stream: Stream) -> None:
        """Run ``<Connect><Stream>``; the scripted callee speaks ~0.5 s in, presses late keys."""
        call = self.call
        log = StreamLog(
            url=stream.url, stream_sid=new_stream_sid(), custom_parameters=dict(stream.parameters)
        )
        call.streams.append(log)
        codec = StreamCodec(
            account_sid=call.account_sid,
            call_sid=call.sid,
            stream_sid=log.stream_sid,
            custom_parameters=log.custom_parameters,
        )
        client = MediaStreamClient(
            log=log,
            codec=codec,
            auth_token=self._token,
            inbound=call.inbound,
            stop=self._stop,
            on_output=call.notify,
            on_error=self.record_error,
        )
        call.inbound.clear()
        if call.script.answerer is Answerer.MACHINE and call.beep_at is None:
            # The machine's greeting goes on: the stream carries what is left of it.
            answered = call.times.get("in-progress", time.monotonic())
            heard = int((time.monotonic() - answered) * 8000)
            call.inbound.enqueue((machine_greeting(call.script.greeting_s) + beep())[heard:])
        elif call.callee_kind == "script" and call.script.speak is not None:
            call.inbound.enqueue(b"\xff" * 4000 + script_audio(call.script))
        self._active_stream = client
        try:
            async with asyncio.TaskGroup() as group:
                late = None
                if self._script_digits and call.callee_kind == "script":
                    answered = call.times.get("in-progress", time.monotonic())
                    late = group.create_task(self._press_late(answered + 1.0))
                await client.run()
                if late is not None:
                    late.cancel()
        finally:
            self._active_stream = None

    async def _press_late(self, at: float) -> None:
        await asyncio.sleep(max(0.1, at - time.monotonic()))
        digits, self._script_digits = self._script_digits, ""
        self.press(digits.replace("w", ""))

    async def dial(self, dial: Dial) -> float:
        """Record the dialled number; the far end talks for ``dial_seconds``."""
        self.call.dialled.append(dial.number)
        started = time.monotonic()
        await wait_or_stop(self._stop, self._dial_seconds)
        return time.monotonic() - started
