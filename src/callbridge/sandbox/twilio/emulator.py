"""The Twilio emulator: REST resource, call simulator and sandbox phone hub in one object.

A protocol-faithful local stand-in for Twilio Programmable Voice
(https://www.twilio.com/docs/voice/api) that the production adapter cannot tell
from Twilio: mount :attr:`TwilioEmulator.asgi_app` at ``/sandbox/twilio`` and
point ``client.api.base_url`` (and ``client.voice.base_url``, for the Voice Dialing
Permissions of :mod:`~callbridge.sandbox.twilio.dialing_permissions`) at it.
Each created call runs as a tracked task
(:class:`~callbridge.sandbox.twilio.sim.CallRunner`) until it ends or
:meth:`TwilioEmulator.aclose` ends it. Tests inject faults
(:meth:`~TwilioEmulator.inject_create_failure`, :meth:`~TwilioEmulator.refuse_number`,
:meth:`~TwilioEmulator.delay_next_create`, :meth:`~TwilioEmulator.inject_list_failure`;
a create failure injected ``after_placing`` answers the error for a call that rings)
and drive the callee live
(:meth:`~TwilioEmulator.callee_press`, :meth:`~TwilioEmulator.callee_hangup`,
:meth:`~TwilioEmulator.callee_speak`). While a sandbox phone page is connected to
``/phone/ws``, calls ring there instead (:class:`PhoneHub`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import secrets
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

import httpx
import structlog
from starlette.websockets import WebSocket

from callbridge.domain.privacy import mask_number
from callbridge.errors import NotFound
from callbridge.sandbox.callee import (
    DEFAULT_CALLEE_SCRIPT,
    Answerer,
    CalleeScript,
    greeting_seconds,
    parse_callee_book,
    parse_callee_script,
)
from callbridge.sandbox.twilio.api import CreateParams, build_app
from callbridge.sandbox.twilio.dialing_permissions import (
    DialingPermissions,
    EmulatedCountry,
)
from callbridge.sandbox.twilio.numbers import SANDBOX_NUMBER, PhoneNumbers
from callbridge.sandbox.twilio.rest import TwilioApiError
from callbridge.sandbox.twilio.sim import (
    CallRunner,
    Ringer,
    RingOutcome,
    ScriptedRinger,
    SimCall,
)

log = structlog.get_logger(__name__)

_FINAL = ("completed", "busy", "no-answer", "failed", "canceled")


@dataclass(frozen=True)
class _Fault:
    status: int
    code: int
    message: str
    #: The call is created before the error is answered (a 5xx that lost a placed call).
    after_placing: bool = False


class TwilioEmulator:
    """Twilio's Calls API and call simulator for one account.

    Args:
        account_sid: the ``AC…`` the API accepts (and the URL path must name).
        auth_token: the password of Basic auth; signs every webhook.
        callee_script: the default ``CALLBRIDGE_SANDBOX_CALLEE`` script.
        callees: per-destination scripts (``CALLBRIDGE_SANDBOX_CALLEES``, see
            :func:`~callbridge.sandbox.callee.parse_callee_book`); they win
            over ``callee_script``, and :meth:`set_callee` wins over them.
        say_seconds_per_char: how long ``<Say>`` takes per character (0 in tests).
        dial_seconds: how long a ``<Dial>`` leg stays up.
        http: the client webhooks are sent with (one is made and owned if omitted).
        allowed_countries: where the account's dialing permissions start enabled.
        owned_numbers: the numbers the account owns (IncomingPhoneNumbers, voice-capable);
            :attr:`numbers` changes them.
        sign_url_fragment: sign webhook URLs together with their ``#`` connection
            overrides (unconfirmed what Twilio does; by default the fragment is left out).

    Raises:
        ValidationFailed: ``callee_script`` or ``callees`` does not parse.
    """

    def __init__(
        self,
        *,
        account_sid: str,
        auth_token: str,
        callee_script: str = DEFAULT_CALLEE_SCRIPT,
        callees: str = "",
        say_seconds_per_char: float = 0.06,
        dial_seconds: float = 3.0,
        http: httpx.AsyncClient | None = None,
        allowed_countries: Iterable[str] = ("US", "CA"),
        owned_numbers: Iterable[str] = (SANDBOX_NUMBER,),
        sign_url_fragment: bool = False,
    ) -> None:
        self.account_sid = account_sid
        self.sign_url_fragment = sign_url_fragment
        self.auth_token = auth_token
        self.calls: dict[str, SimCall] = {}
        self.dialing_permissions = DialingPermissions(allowed_countries)
        self.numbers = PhoneNumbers(owned_numbers, clock=time.time)
        self.phone_hub = PhoneHub(self)
        self.asgi_app = build_app(self)
        self._default_script = parse_callee_script(callee_script)
        self._scripts: dict[str, CalleeScript] = {}
        self._book = parse_callee_book(callees)
        self._say_rate = say_seconds_per_char
        self._dial_seconds = dial_seconds
        self._http = http
        self._owns_http = http is None
        self._runners: dict[str, CallRunner] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._failures: list[BaseException] = []
        self._create_faults: deque[_Fault] = deque()
        self._list_faults: deque[_Fault] = deque()
        self._refused: dict[str, _Fault] = {}
        self._create_delay = 0.0
        self._placed_late = False

    # ----- lifecycle ------------------------------------------------------------

    async def start(self) -> None:
        """Get ready to run calls (creates the HTTP client if none was given)."""
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=10.0)

    async def aclose(self, grace: float = 5.0) -> None:
        """End every call (closing its stream), wait for them, release resources.

        Raises:
            ExceptionGroup: a call task failed unexpectedly during the emulator's life.
        """
        for runner in self._runners.values():
            runner.hangup("shutdown")
        tasks = set(self._tasks)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        self.phone_hub.close()
        if self._owns_http and self._http is not None:
            await self._http.aclose()
            self._http = None
        if self._failures:
            failures, self._failures = self._failures, []
            raise ExceptionGroup("emulated calls failed", failures)  # type: ignore[type-var]

    async def __aenter__(self) -> TwilioEmulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            error = task.exception()
            assert error is not None
            log.error("sandbox_call_crashed", task=task.get_name(), error=repr(error))
            self._failures.append(error)

    # ----- the REST resource's operations --------------------------------------

    def create_call(self, params: CreateParams) -> SimCall:
        """Create and start a call (``POST Calls.json``).

        Every create places a new call, as on Twilio: CreateCall defines no
        idempotency header or parameter (twilio-oai ``twilio_api_v2010.json``; error
        20500's page warns that a retried create may place several calls), so an
        ``I-Twilio-Idempotency-Token`` header is ignored.

        Raises:
            TwilioApiError: the destination is refused (see :meth:`refuse_number`).
        """
        refused = self._refused.get(params.to)
        if refused is not None:
            raise TwilioApiError(refused.status, refused.code, refused.message)
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=10.0)
        phone = self.phone_hub.connected
        script = CalleeScript(answer_after=0.0) if phone else self._script_for(params.to)
        call = SimCall(
            sid="CA" + secrets.token_hex(16),
            account_sid=self.account_sid,
            to=params.to,
            from_=params.from_,
            url=params.url,
            method=params.method,
            twiml=params.twiml,
            fallback_url=params.fallback_url,
            fallback_method=params.fallback_method,
            status_callback=params.status_callback,
            status_callback_method=params.status_callback_method,
            status_callback_events=params.events,
            timeout=params.timeout,
            time_limit=params.time_limit,
            amd=params.amd,
            script=script,
            callee_kind="phone" if phone else "script",
        )
        ringer: Ringer = self.phone_hub if phone else ScriptedRinger()
        runner = CallRunner(
            call,
            auth_token=self.auth_token,
            http=self._http,
            ringer=ringer,
            say_seconds_per_char=self._say_rate,
            dial_seconds=self._dial_seconds,
            sign_fragment=self.sign_url_fragment,
        )
        self.calls[call.sid] = call
        self._runners[call.sid] = runner
        task = asyncio.create_task(runner.run(), name=f"sandbox-call-{call.sid}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        log.debug(
            "sandbox_call_created",
            call_sid=call.sid,
            to=mask_number(call.to),
            callee=call.callee_kind,
        )
        return call

    async def update_call(self, call: SimCall, form: dict[str, str]) -> None:
        """Modify a live call (``POST Calls/{Sid}.json``).

        Raises:
            TwilioApiError: 21220 if the call has ended; 20001 for a bad ``Status``
                or both ``Url`` and ``Twiml``.
        """
        if call.is_final:
            raise TwilioApiError(400, 21220, "Call is not in-progress. Cannot redirect.")
        status = form.get("Status") or None
        if status not in (None, "completed", "canceled"):
            raise TwilioApiError(
                400, 20001, f"Status {status} is not valid; use completed or canceled"
            )
        if form.get("Url") and form.get("Twiml"):
            raise TwilioApiError(400, 20001, "Url and Twiml are mutually exclusive")
        runner = self._runners[call.sid]
        if form.get("StatusCallback"):
            call.status_callback = form["StatusCallback"]
        if form.get("FallbackUrl"):
            call.fallback_url = form["FallbackUrl"]
            call.fallback_method = (form.get("FallbackMethod") or "POST").upper()
        if status == "completed" or (status == "canceled" and call.status in ("queued", "ringing")):
            runner.hangup("rest")
            try:
                await self.wait_for_status(call.sid, _FINAL, timeout=2.0)
            except TimeoutError:
                log.warning("sandbox_hangup_slow", call_sid=call.sid)
        elif form.get("Twiml"):
            runner.redirect("twiml", form["Twiml"])
        elif form.get("Url"):
            runner.redirect("url", form["Url"], (form.get("Method") or "POST").upper())

    def delete_call(self, call: SimCall) -> None:
        """Delete an ended call's record.

        Raises:
            TwilioApiError: 21220 if the call is still live.
        """
        if not call.is_final:
            raise TwilioApiError(400, 21220, "Call is in-progress. Cannot delete.")
        del self.calls[call.sid]

    # ----- faults ---------------------------------------------------------------

    def inject_create_failure(
        self, status: int, code: int, message: str, count: int = 1, *, after_placing: bool = False
    ) -> None:
        """Make the next ``count`` creates fail with this Twilio error.

        No call is created, unless ``after_placing``: then the call is placed (and
        rings) but the answer is the error, as when a 5xx loses a placed call.
        """
        self._create_faults.extend([_Fault(status, code, message, after_placing)] * count)

    def inject_list_failure(self, status: int, code: int, message: str, count: int = 1) -> None:
        """Make the next ``count`` reads of the call list (``GET Calls.json``) fail."""
        self._list_faults.extend([_Fault(status, code, message)] * count)

    def take_list_fault(self) -> None:
        """Raise the next injected call-list failure, if any.

        Raises:
            TwilioApiError: the injected failure.
        """
        if self._list_faults:
            fault = self._list_faults.popleft()
            raise TwilioApiError(fault.status, fault.code, fault.message)

    def refuse_number(self, to: str, status: int, code: int, message: str) -> None:
        """Make every create to ``to`` fail with this Twilio error (e.g. 400/21215)."""
        self._refused[to] = _Fault(status, code, message)

    def set_dialing_permission(self, iso_code: str, **groups: bool) -> EmulatedCountry:
        """Change a country's voice dialing permissions (``low_risk``, ``high_risk_special``,
        ``high_risk_tollfraud``), as the Twilio Console would.

        Raises:
            NotFound: Twilio lists no such country.
        """
        return self.dialing_permissions.set_permission(iso_code, **groups)

    def delay_next_create(self, seconds: float, *, placed_late: bool = False) -> None:
        """Answer the next create ``seconds`` late; the call is created meanwhile, or,
        with ``placed_late``, only then (a request that reached Twilio late)."""
        self._create_delay = seconds
        self._placed_late = placed_late

    def take_create_fault(self, *, placed: bool) -> None:
        """Raise the next injected create failure of this kind, if it is next.

        Called before placing (``placed=False``) and after (``placed=True``); a fault
        injected ``after_placing`` is raised only by the second call.

        Raises:
            TwilioApiError: the injected failure.
        """
        if self._create_faults and self._create_faults[0].after_placing == placed:
            fault = self._create_faults.popleft()
            raise TwilioApiError(fault.status, fault.code, fault.message)

    def take_create_delay(self) -> tuple[float, bool]:
        """The pending create delay and whether the call is placed after it (then none)."""
        delay, self._create_delay = self._create_delay, 0.0
        late, self._placed_late = self._placed_late, False
        return delay, late

    # ----- callees --------------------------------------------------------------

    def set_callee(self, to: str | None, script: str) -> None:
        """Script the callee of ``to`` (``None``: of every other number).

        Raises:
            ValidationFailed: ``script`` does not parse.
        """
        parsed = parse_callee_script(script)
        if to is None:
            self._default_script = parsed
        else:
            self._scripts[to] = parsed

    def _script_for(self, to: str) -> CalleeScript:
        script = self._scripts.get(to) or self._book.script_for(to)
        return script if script is not None else self._default_script

    def _runner(self, sid: str) -> CallRunner:
        runner = self._runners.get(sid)
        if runner is None:
            raise NotFound(f"no emulated call {sid}")
        return runner

    def callee_hangup(self, sid: str) -> None:
        """The callee hangs up (or declines, if still ringing)."""
        self._runner(sid).hangup("callee")

    def callee_press(self, sid: str, digits: str) -> None:
        """The callee presses ``digits``."""
        self._runner(sid).press(digits)

    def callee_speak(self, sid: str, ulaw: bytes) -> None:
        """The callee says ``ulaw`` (8 kHz μ-law) into the call's stream."""
        self._runner(sid).call.inbound.enqueue(ulaw)

    def show_turn(self, call_id: str, role: str, text: str, event_id: int) -> None:
        """Caption an agent turn on the sandbox phone carrying callbridge's call ``call_id``.

        The agent's words travel as audio only, as with Twilio; the sandbox phone also
        gets them as text, matched by the ``call_id`` ``<Parameter>`` of the call's
        stream. Calls not on a phone page (scripted callees) ignore it. A turn told again
        with the same ``event_id`` (an interrupted response, cut) replaces its caption.
        """
        if not call_id:
            return
        for call in self.calls.values():
            stream = call.stream
            if stream is not None and stream.custom_parameters.get("call_id") == call_id:
                call.notify({"type": "caption", "role": role, "text": text, "event_id": event_id})

    def feed_microphone(self, sid: str, ulaw: bytes) -> None:
        """Queue the phone page's microphone audio, while a stream runs."""
        runner = self._runner(sid)
        if runner.streaming:
            runner.call.inbound.enqueue(ulaw)

    # ----- waiting --------------------------------------------------------------

    async def wait_for_status(
        self,
        sid: str,
        statuses: str | Iterable[str],
        timeout: float,  # noqa: ASYNC109 - a plain deadline reads best in tests
    ) -> SimCall:
        """Wait until call ``sid`` has one of ``statuses``.

        Raises:
            NotFound: no such call.
            TimeoutError: it did not get there within ``timeout`` seconds.
        """
        wanted = {statuses} if isinstance(statuses, str) else set(statuses)
        call = self.calls.get(sid)
        if call is None:
            raise NotFound(f"no emulated call {sid}")
        async with asyncio.timeout(timeout):
            while call.status not in wanted:
                await call.wait_changed()
        return call

    async def wait_for_end(
        self,
        sid: str,
        timeout: float,  # noqa: ASYNC109 - a plain deadline reads best in tests
    ) -> SimCall:
        """Wait until call ``sid`` has ended and its last callback was sent.

        Raises:
            NotFound: no such call.
            TimeoutError: it did not end within ``timeout`` seconds.
        """
        call = self.calls.get(sid)
        if call is None:
            raise NotFound(f"no emulated call {sid}")
        async with asyncio.timeout(timeout):
            await call.ended.wait()
        return call


class PhoneHub:
    """The sandbox phone page's socket: calls ring there while a page is connected.

    Server→browser: ``ring``, ``say``, ``caption`` (the agent's words and the stand-in
    transcript of the callee's, see :meth:`TwilioEmulator.show_turn`), ``media``,
    ``clear``, ``status``, ``beep``, ``ended``;
    browser→server: ``answer``, ``voicemail`` (let it go to the answering machine: its
    greeting, then a beep), ``decline``, ``hangup``, ``dtmf``, ``media``
    (JSON text frames; see DESIGN.md "The sandbox").
    """

    def __init__(self, emulator: TwilioEmulator) -> None:
        self._emulator = emulator
        self._phones: set[asyncio.Queue[dict[str, Any] | None]] = set()
        self._pickup: dict[str, asyncio.Future[bool]] = {}
        self._current: str | None = None

    @property
    def connected(self) -> bool:
        """Whether at least one phone page is connected."""
        return bool(self._phones)

    def broadcast(self, message: dict[str, Any]) -> None:
        """Send ``message`` to every connected phone page."""
        for queue in self._phones:
            queue.put_nowait(message)

    def close(self) -> None:
        """Ask every phone socket to close."""
        for queue in self._phones:
            queue.put_nowait(None)

    async def ring(self, call: SimCall, stop: asyncio.Event) -> RingOutcome:
        """Ring the phone page until answered, declined, timed out or stopped."""
        self._current = call.sid
        call.on_event = self._forwarder(call.sid)
        pickup: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pickup[call.sid] = pickup
        self.broadcast({"type": "ring", "call_sid": call.sid, "from": call.from_, "to": call.to})
        stopped: asyncio.Future[bool] = asyncio.ensure_future(stop.wait())
        try:
            done, _ = await asyncio.wait(
                [pickup, stopped], timeout=call.timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            stopped.cancel()
            self._pickup.pop(call.sid, None)
        if pickup in done:
            return RingOutcome(True) if pickup.result() else RingOutcome(False, "busy", 603)
        pickup.cancel()
        if stopped in done:
            return RingOutcome(False, "canceled")
        return RingOutcome(False, "no-answer", 487)

    def _forwarder(self, sid: str) -> Any:
        def forward(message: dict[str, Any]) -> None:
            self.broadcast(message)
            if message["type"] == "ended" and self._current == sid:
                self._current = None

        return forward

    async def serve(self, websocket: WebSocket) -> None:
        """Serve one phone page until it disconnects."""
        await websocket.accept()
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._phones.add(queue)
        for sid in self._pickup:
            call = self._emulator.calls[sid]
            queue.put_nowait({"type": "ring", "call_sid": sid, "from": call.from_, "to": call.to})
        try:
            async with asyncio.TaskGroup() as group:
                reader = group.create_task(self._read(websocket))
                writer = group.create_task(self._write(websocket, queue))
                await asyncio.wait({reader, writer}, return_when=asyncio.FIRST_COMPLETED)
                reader.cancel()
                writer.cancel()
        finally:
            self._phones.discard(queue)

    async def _write(
        self, websocket: WebSocket, queue: asyncio.Queue[dict[str, Any] | None]
    ) -> None:
        while (message := await queue.get()) is not None:
            await websocket.send_text(json.dumps(message))
        await websocket.close()

    async def _read(self, websocket: WebSocket) -> None:
        async for text in websocket.iter_text():
            try:
                message = json.loads(text)
            except ValueError:
                log.info("sandbox_phone_bad_message", reason="not json")
                continue
            if isinstance(message, dict):
                self._handle(message)

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        sid = message.get("call_sid") or self._current
        if not isinstance(sid, str) or sid not in self._emulator.calls:
            return
        pickup = self._pickup.get(sid)
        try:
            if kind in ("answer", "decline") and pickup is not None and not pickup.done():
                pickup.set_result(kind == "answer")
            elif kind == "voicemail" and pickup is not None and not pickup.done():
                call = self._emulator.calls[sid]
                call.script = replace(
                    call.script, answerer=Answerer.MACHINE, greeting_s=greeting_seconds()
                )
                pickup.set_result(True)
            elif kind == "hangup":
                if pickup is not None and not pickup.done():
                    pickup.set_result(False)
                else:
                    self._emulator.callee_hangup(sid)
            elif kind == "dtmf" and isinstance(message.get("digit"), str):
                self._emulator.callee_press(sid, message["digit"][:1])
            elif kind == "media" and isinstance(message.get("payload"), str):
                self._emulator.feed_microphone(
                    sid, base64.b64decode(message["payload"], validate=True)
                )
        except binascii.Error:
            log.info("sandbox_phone_bad_message", reason="media payload is not base64")
