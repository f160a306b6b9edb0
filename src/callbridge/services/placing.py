"""Request a call: check it, record it, then ask Twilio to place it.

The order is the promise: nothing is recorded before the number and the abuse
policy pass; the call is recorded (``requested``) before Twilio is asked; a
Twilio refusal is recorded as ``failed`` with its code and a sentence a visitor
understands. 429 and 5xx from Twilio are retried with backoff and jitter, and a
create is never retried blind: Twilio's CreateCall is not idempotent (no
idempotency header or key exists for it), so after any outcome that may have placed
the call (a timeout, a reset connection, a 5xx) the service looks for the call first
and retries only if it finds none (security.md 40; see
:meth:`PlacingService._find_placed` for how, and the limits of looking).
"""

from __future__ import annotations

import asyncio
import json
import random
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol

import structlog

from callbridge.domain.call import Call, CallMode, CallStatus
from callbridge.domain.policy import check_schedule_time
from callbridge.domain.privacy import mask_number
from callbridge.domain.quotas import NUMBER_UNAVAILABLE_MESSAGE
from callbridge.domain.text import clean_optional
from callbridge.errors import (
    Conflict,
    ErrorCategory,
    PolicyRejected,
    ProviderError,
    StoreError,
    ValidationFailed,
)
from callbridge.metrics import Metrics
from callbridge.ports import (
    CallEvent,
    CallStore,
    Clock,
    CreateCallRequest,
    EventBus,
    MachineDetection,
    NewCall,
    ProviderCall,
    ScheduleBook,
    SpendHold,
    StatusUpdate,
    TelephonyProvider,
)
from callbridge.services.alerts import Alerts
from callbridge.services.tokens import CancelTokens, StreamTokens

_log = structlog.get_logger(__name__)


class Admission(Protocol):
    """The abuse policy's door: say yes (and hold a slot) or raise PolicyRejected."""

    async def admit(self, raw_number: str, client_ip: str | None) -> Admitted:
        """Normalise and check a number; reserve the quotas a call needs.

        Raises:
            InvalidNumber: the number does not parse or is not valid.
            PolicyRejected: the policy or a quota refuses it.
        """
        ...

    async def admit_later(self, raw_number: str, client_ip: str | None, at: datetime) -> Admitted:
        """Check a number for a call at ``at`` without reserving quotas (those count
        when the call is placed, where :meth:`admit` runs again).

        Raises:
            InvalidNumber: the number does not parse or is not valid.
            PolicyRejected: the policy refuses it (OutsideCallingHours at ``at``).
        """
        ...

    def earliest_allowed(self, e164: str, after: datetime) -> datetime:
        """The first time at or after ``after`` inside the callee's allowed hours."""
        ...

    async def bind(self, admitted: Admitted, call_id: str) -> None:
        """Make the admission's slots ``call_id``'s (any process can then free them)."""
        ...

    async def abandon(self, admitted: Admitted, call_id: str) -> None:
        """Undo an admission whose call was never recorded (slots and spend)."""
        ...

    async def settle(self, call: Call) -> None:
        """Free an ended call's slots and book its spend at the truth known now."""
        ...


#: Twilio's connection overrides for the status callback URL
#: (https://www.twilio.com/docs/usage/webhooks/webhooks-connection-overrides): without
#: them Twilio retries a callback only when it cannot connect (rc=1, rp=ct), and a
#: callback answered 503 while the database is away would be lost. With them, a 5xx,
#: a refused connection or a read timeout is retried 5 times (the most Twilio allows)
#: within 15 s (tt, also Twilio's maximum). ct (2 s) and rt (6 s) keep one attempt
#: short; rt stays above STATUS_HOLD_S so that our own 503 arrives before Twilio's
#: read timeout. Confirmed: the keys and ranges. Unconfirmed: the rp values
#: (third-party copies of the doc), the pause between retries (none documented) and
#: whether the signature covers the fragment (our check accepts both).
STATUS_CALLBACK_OVERRIDES: Final = "ct=2000&rt=6000&tt=15000&rc=5&rp=ct,rt,5xx"

#: Seconds one status callback waits for an unreachable store before answering 503:
#: with Twilio's retries sent back to back, this is what spreads them over ~15 s.
STATUS_HOLD_S: Final = 2.5


def _iso(at: datetime) -> str:
    """A UTC instant as ISO 8601 with ``Z``."""
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def status_callback_url(base: str, call_id: str) -> str:
    """The ``StatusCallback`` URL for a call: our door, the call id, Twilio's retry overrides."""
    return f"{base}/api/call/status?call_id={call_id}#{STATUS_CALLBACK_OVERRIDES}"


@dataclass(frozen=True, slots=True)
class Admitted:
    """A number that passed the policy, in E.164, and the handle of its reservation."""

    e164: str
    client_ip_hash: str | None
    reservation: object | None = None
    spend: SpendHold | None = None


@dataclass(frozen=True, slots=True)
class CallRequest:
    """What the browser (or the CLI) asks for."""

    to_number: str
    name: str | None = None
    reason: str | None = None
    summary: str | None = None
    conversation_id: str | None = None
    idempotency_key: str | None = None
    client_ip: str | None = None
    test: bool = False
    at: datetime | None = None
    retry_on_no_answer: bool = False


@dataclass(frozen=True, slots=True)
class PlacingConfig:
    """The settings the placing service needs."""

    public_base_url: str
    from_number: str
    mode: CallMode
    target_number: str | None
    dial_target_only: bool
    ring_timeout: int
    time_limit: int
    create_retries: int
    calls_enabled: bool
    retry_base_s: float = 0.5
    schedule: ScheduleConfig | None = None
    machine_detection: AmdConfig | None = None


@dataclass(frozen=True, slots=True)
class ScheduleConfig:
    """Call me later: how far ahead, how many waiting, and the retry after no answer."""

    max_days: int = 7
    max_pending_per_number: int = 2
    max_pending_per_requester: int = 3
    number_retry_after_s: int = 3600
    retry_after: timedelta = timedelta(minutes=10)


@dataclass(frozen=True, slots=True)
class AmdConfig:
    """Twilio's answering machine detection as every call asks for it.

    Attributes:
        mode: ``Enable`` or ``DetectMessageEnd`` (:func:`callbridge.domain.amd.detection_mode`).
        timeout_s, speech_threshold_ms, speech_end_threshold_ms, silence_timeout_ms:
            sent only when they differ from Twilio's defaults (None here).
    """

    mode: str
    timeout_s: int | None = None
    speech_threshold_ms: int | None = None
    speech_end_threshold_ms: int | None = None
    silence_timeout_ms: int | None = None


#: Twilio error code → (our failure code, HTTP status for the browser, visitor sentence).
_TWILIO_REFUSALS: dict[int, tuple[str, int, str]] = {
    21211: ("invalid_number", 422, "That phone number doesn't look right. Please check it."),
    21217: ("invalid_number", 422, "That phone number doesn't look right. Please check it."),
    21201: ("invalid_number", 422, "Please give a phone number to call."),
    21214: ("unreachable", 422, "We couldn't reach that number. Please check it and try again."),
    21215: ("blocked_by_provider", 422, "That number can't be called from here."),
    21216: ("blocked_by_provider", 422, "That number can't be called from here."),
    13227: ("blocked_by_provider", 422, "That number can't be called from here."),
    32205: ("blocked_by_provider", 422, "That number can't be called from here."),
    21219: (
        "unverified_number",
        422,
        "This service can only call verified numbers for now. Please try another way to reach us.",
    ),
    20003: ("provider_auth", 503, "Calling is not available right now. Please try again later."),
}
#: How many of Twilio's calls to a number we read when looking for a lost create.
_LOOKUP_PAGE = 20
#: How far before the first attempt a call Twilio created may be dated and still be
#: ours: ``date_created`` has whole seconds, and our clock may run ahead of Twilio's.
#: Wider slack tolerates a worse clock; an older call of ours inside it is still
#: skipped (its CallSid is ours already), so the cost is only a foreign call to the
#: same number from the same caller id within these seconds.
_CLOCK_SLACK = timedelta(seconds=30)
_BUSY = ("provider_unavailable", 503, "Calling is busy right now. Please try again in a minute.")


@dataclass(frozen=True, slots=True)
class PlacedCall:
    """The browser's answer, and the HTTP status to send it with."""

    body: Mapping[str, Any]
    http_status: int = 200


class CallFailed(ProviderError):
    """A call could not be placed; it is recorded as failed with this reason."""

    def __init__(self, message: str, *, code: str, http_status: int, call_id: str) -> None:
        super().__init__(
            message, provider="twilio", category=ErrorCategory.CLIENT, http_status=http_status
        )
        self.code = code
        self.http_status = http_status
        self.call_id = call_id


class PlacingService:
    """Places calls: policy, record, Twilio, answer."""

    def __init__(
        self,
        *,
        config: PlacingConfig,
        store: CallStore,
        telephony: TelephonyProvider,
        admission: Admission,
        stream_tokens: StreamTokens,
        events: EventBus,
        clock: Clock,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        alerts: Alerts | None = None,
        pending: ScheduleBook | None = None,
        cancel_tokens: CancelTokens | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._alerts = alerts
        self._pending = pending
        self._cancel_tokens = cancel_tokens
        self._metrics = metrics
        self._config = config
        self._store = store
        self._telephony = telephony
        self._admission = admission
        self._tokens = stream_tokens
        self._events = events
        self._clock = clock
        self._sleep = sleep

    async def request_call(self, request: CallRequest) -> PlacedCall:
        """Check, record and place a call; return the browser's answer.

        Raises:
            PolicyRejected: calls are switched off, or the policy refuses.
            InvalidNumber: the number is not a callable phone number.
            CallFailed: Twilio refused or failed (the call is recorded as failed).
        """
        # The visitor's words are stored, shown to the operator and given to the agent:
        # no line breaks or terminal escapes in any of them.
        request = replace(
            request,
            name=clean_optional(request.name),
            reason=clean_optional(request.reason),
            summary=clean_optional(request.summary),
        )
        if request.idempotency_key:
            earlier = await self._store.get_by_idempotency_key(request.idempotency_key)
            if earlier is not None:
                return self._replay(*earlier)
        if not self._config.calls_enabled:
            raise PolicyRejected(
                "Calls are switched off right now. Please try again later.",
                reason="kill_switch",
                http_status=503,
                retry_after=300,
            )
        if request.at is not None:
            return await self._schedule(request)
        admitted = await self._admission.admit(request.to_number, request.client_ip)
        call_id = "call_" + secrets.token_hex(10)
        try:
            await self._admission.bind(admitted, call_id)
            call = await self._record(call_id, request, admitted)
        except Conflict:
            await self._admission.abandon(admitted, call_id)
            earlier = await self._store.get_by_idempotency_key(request.idempotency_key or "")
            if earlier is None:
                raise
            return self._replay(*earlier)
        except BaseException:
            await self._admission.abandon(admitted, call_id)
            raise
        structlog.contextvars.bind_contextvars(call_id=call.id)
        return await self._place(call)

    def _replay(self, call: Call, response_json: str | None) -> PlacedCall:
        if response_json:
            stored = json.loads(response_json)
            return PlacedCall(stored["body"], stored["status"])
        # The first request is still being placed: answer with what we know.
        return PlacedCall(self._success_body(call, call.status.value))

    # Call me later -----------------------------------------------------------------------

    async def _schedule(self, request: CallRequest) -> PlacedCall:
        """Check and record a call for later; the scheduler places it at its time.

        The policy runs now (number, quiet hours at the asked time, do-not-call) and
        again when the call is placed; quotas count then. Pending scheduled calls are
        limited per number and per requester. The two counts and the insert are not one
        transaction: two simultaneous requests may pass a limit by one, which the limit
        tolerates (it bounds waiting calls; each is still checked when placed).
        """
        cfg = self._config.schedule
        if cfg is None or self._pending is None or self._cancel_tokens is None:
            raise ValidationFailed("Calls can't be scheduled on this server.", code="no_schedule")
        assert request.at is not None
        at = check_schedule_time(request.at, self._clock.now(), max_days=cfg.max_days)
        admitted = await self._admission.admit_later(request.to_number, request.client_ip, at)
        waiting = await self._pending.pending(admitted.e164, admitted.client_ip_hash)
        if waiting.for_number >= cfg.max_pending_per_number:
            # Looks exactly like every other per-number refusal (security.md 14).
            raise PolicyRejected(
                NUMBER_UNAVAILABLE_MESSAGE,
                reason="number_pending",
                http_status=429,
                retry_after=cfg.number_retry_after_s,
            )
        if waiting.from_requester >= cfg.max_pending_per_requester:
            raise PolicyRejected(
                f"You already have {waiting.from_requester} calls scheduled. Please cancel one"
                " or wait until it is made.",
                reason="requester_pending",
                http_status=429,
                retry_after=3600,
            )
        call_id = "call_" + secrets.token_hex(10)
        try:
            call = await self._record(call_id, request, admitted, scheduled_for=at)
        except Conflict:
            earlier = await self._store.get_by_idempotency_key(request.idempotency_key or "")
            if earlier is None:
                raise
            return self._replay(*earlier)
        structlog.contextvars.bind_contextvars(call_id=call.id)
        await self._event(call.id, "scheduled", {"scheduled_for": _iso(at)})
        if self._metrics is not None:
            self._metrics.scheduled_calls.labels(event="scheduled").inc()
        _log.info("call_scheduled", to=mask_number(call.to_number), scheduled_for=_iso(at))
        result = PlacedCall(
            {
                "success": True,
                "message": "Call scheduled",
                "call_id": call.id,
                "status": "scheduled",
                "scheduled_for": _iso(at),
                "to": mask_number(call.to_number),
                "retry_on_no_answer": call.retry_on_no_answer,
                # The page's capability to cancel this call (and its retries).
                "cancel_token": self._cancel_tokens.token_for(call.id),
            },
            202,
        )
        await self._store.save_response(
            call.id, json.dumps({"body": result.body, "status": result.http_status})
        )
        return result

    async def place_claimed(self, call: Call) -> bool:
        """Place a scheduled call the scheduler claimed (now ``requested``).

        The policy runs again: a number put on the do-not-call list in between, quiet
        hours, the kill switch and the quotas (which count the call now) may refuse it;
        it is then recorded ``failed`` with the reason and never dialled.

        Returns:
            Whether Twilio accepted the call.
        """
        structlog.contextvars.bind_contextvars(call_id=call.id)
        try:
            if not self._config.calls_enabled:
                raise PolicyRejected(
                    "Calls are switched off.", reason="kill_switch", http_status=503
                )
            # The requester's address is not kept, only its keyed hash: the per-address
            # quotas count scheduled calls under that hash.
            requester = f"scheduled:{call.client_ip_hash or call.id}"
            admitted = await self._admission.admit(call.to_number, requester)
        except (PolicyRejected, ValidationFailed) as exc:
            reason = getattr(exc, "reason", exc.code)
            await self._refused_at_placement(call, reason)
            return False
        try:
            await self._admission.bind(admitted, call.id)
            if admitted.spend is not None and self._pending is not None:
                # The spend ledger line a call gets when it is recorded, now that it counts.
                await self._pending.hold_spend(call.id, admitted.spend, self._clock.now())
        except BaseException:
            await self._admission.abandon(admitted, call.id)
            raise
        try:
            await self._place(call)
        except CallFailed:
            return False  # recorded failed with its reason (and its spend settled) by _fail
        if self._metrics is not None:
            self._metrics.scheduled_calls.labels(event="placed").inc()
        return True

    async def _refused_at_placement(self, call: Call, reason: str) -> None:
        # The visitor's sentence never says which rule refused (a do-not-call number
        # must look like any other refusal); the operator sees the reason after it.
        await self._store.update_call(
            call.id,
            StatusUpdate(
                status=CallStatus.FAILED,
                failure_code="refused_at_time",
                failure_reason=(
                    "We couldn't place the call at the time you asked. Please ask again later."
                    f" ({reason})"
                ),
                ended_at=self._clock.now(),
            ),
            expect=CallStatus.REQUESTED,
        )
        await self._event(call.id, "failed", {"code": "refused_at_time", "reason": reason})
        if self._metrics is not None:
            self._metrics.scheduled_calls.labels(event="refused").inc()
        _log.info("scheduled_call_refused", reason=reason)

    async def schedule_retry(self, call: Call) -> Call | None:
        """Record a retry of ``call`` (busy / no-answer, the visitor opted in).

        The retry is its own call, linked to the first (``retry_of``), due
        ``retry_after`` after the end, or at the callee's next allowed time when that
        falls in quiet hours. Its idempotency key names the call it retries,
        so two schedulers never record two retries of one call.

        Returns:
            The retry, or None when another process recorded it first.
        """
        cfg = self._config.schedule
        assert cfg is not None
        root = call.retry_of or call.id
        retry_id = "call_" + secrets.token_hex(10)
        at = self._admission.earliest_allowed(
            call.to_number, (call.ended_at or self._clock.now()) + cfg.retry_after
        )
        try:
            retry = await self._store.add_call(
                NewCall(
                    id=retry_id,
                    to_number=call.to_number,
                    dialled_number=call.dialled_number,
                    mode=call.mode.value,
                    context_name=call.context.visitor_name,
                    context_reason=call.context.reason,
                    context_summary=call.context.summary,
                    context_conversation_id=call.context.conversation_id,
                    stream_token_hash=self._tokens.digest(self._tokens.token_for(retry_id)),
                    idempotency_key=f"retry:{call.id}",
                    client_ip_hash=call.client_ip_hash,
                    created_at=self._clock.now(),
                    is_test=call.is_test,
                    scheduled_for=at,
                    retry_on_no_answer=True,
                    retry_of=root,
                    attempt=call.attempt + 1,
                )
            )
        except Conflict:
            return None
        await self._event(retry.id, "scheduled", {"scheduled_for": _iso(at), "retry_of": root})
        await self._event(call.id, "retry_scheduled", {"retry": retry.id, "at": _iso(at)})
        if self._metrics is not None:
            self._metrics.scheduled_calls.labels(event="retry").inc()
        _log.info("retry_scheduled", retry_of=root, attempt=retry.attempt)
        return retry

    async def _record(
        self,
        call_id: str,
        request: CallRequest,
        admitted: Admitted,
        *,
        scheduled_for: datetime | None = None,
    ) -> Call:
        dialled = admitted.e164
        if self._config.dial_target_only and self._config.target_number:
            dialled = self._config.target_number
        now = self._clock.now()
        # The call and its first timeline entry in one transaction.
        call = await self._store.add_call(
            NewCall(
                id=call_id,
                to_number=admitted.e164,
                dialled_number=dialled,
                mode=self._config.mode.value,
                context_name=request.name,
                context_reason=request.reason,
                context_summary=request.summary,
                context_conversation_id=request.conversation_id,
                stream_token_hash=self._tokens.digest(self._tokens.token_for(call_id)),
                idempotency_key=request.idempotency_key,
                client_ip_hash=admitted.client_ip_hash,
                created_at=now,
                is_test=request.test,
                spend=admitted.spend,
                scheduled_for=scheduled_for,
                retry_on_no_answer=request.retry_on_no_answer,
            ),
            event=self._service_event(
                call_id, "requested", {"to": mask_number(admitted.e164)}, now
            ),
        )
        await self._publish(call.id, "requested", now)
        return call

    async def _place(self, call: Call) -> PlacedCall:
        base = self._config.public_base_url
        request = CreateCallRequest(
            to=call.dialled_number,
            from_=self._config.from_number,
            # Our call id in the (signed) URLs lets a callback that beats Twilio's
            # answer to this request still find its call (see CallLifecycle).
            url=f"{base}/api/call/twiml?call_id={call.id}",
            status_callback=status_callback_url(base, call.id),
            fallback_url=f"{base}/api/call/twiml?step=fallback",
            timeout=self._config.ring_timeout,
            time_limit=self._config.time_limit,
            machine_detection=self._amd(call),
        )
        try:
            placed = await self._create_with_retries(call, request)
        except ProviderError as exc:
            await self._fail(call, exc)
            raise AssertionError("unreachable") from exc  # _fail always raises
        now = self._clock.now()
        queued = self._service_event(call.id, "queued", {"call_sid": placed.sid}, now)
        try:
            changed = await self._store.update_call(
                call.id,
                StatusUpdate(status=CallStatus.QUEUED, call_sid=placed.sid),
                expect=CallStatus.REQUESTED,
                event=queued,
            )
        except Conflict:
            # A status callback got here first and moved the call on: keep its status.
            changed = await self._store.update_call(
                call.id, StatusUpdate(call_sid=placed.sid), event=queued
            )
        structlog.contextvars.bind_contextvars(call_sid=placed.sid)
        await self._publish(call.id, "queued", now)
        _log.info("call_placed", to=mask_number(call.dialled_number))
        result = PlacedCall(self._success_body(changed, "queued"))
        await self._store.save_response(
            call.id, json.dumps({"body": result.body, "status": result.http_status})
        )
        return result

    def _amd(self, call: Call) -> MachineDetection | None:
        amd = self._config.machine_detection
        if amd is None:
            return None
        return MachineDetection(
            mode=amd.mode,
            # Signed like every callback, with our call id (see CallLifecycle._call_by_sid),
            # and the status callback's retry overrides: a lost verdict would give a
            # machine the agent. Whether Twilio honours overrides on this callback is
            # unconfirmed (research notes §0); harmless if not, as a fragment is never
            # sent and our signature check accepts the URL with or without it.
            status_callback=(
                f"{self._config.public_base_url}/api/call/amd?call_id={call.id}"
                f"#{STATUS_CALLBACK_OVERRIDES}"
            ),
            timeout_s=amd.timeout_s,
            speech_threshold_ms=amd.speech_threshold_ms,
            speech_end_threshold_ms=amd.speech_end_threshold_ms,
            silence_timeout_ms=amd.silence_timeout_ms,
        )

    def _success_body(self, call: Call, status: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "success": True,
            "message": "Call initiated successfully",
            "call_sid": call.call_sid,
            "status": status,
            "call_id": call.id,
            "to": mask_number(call.to_number),
        }
        if call.retry_on_no_answer and self._cancel_tokens is not None and call.retry_of is None:
            # The visitor may cancel the retry this call may get.
            body["retry_on_no_answer"] = True
            body["cancel_token"] = self._cancel_tokens.token_for(call.id)
        return body

    async def _create_with_retries(self, call: Call, request: CreateCallRequest) -> ProviderCall:
        """Create the call, retrying only what cannot have placed it twice.

        - 429: Twilio never processed the request ("always safe to retry", error
          20429), so it is retried after backoff.
        - A timeout, a network error or any 5xx may have placed the call: after the
          backoff we look for it (:meth:`_find_placed`) and retry only if it is not
          there. Looking comes after the wait so that a request still on its way to
          Twilio has time to land. On the last attempt we look before giving up.
        - If looking itself fails, we cannot know: we stop rather than ring twice.
          A call that was placed after all is then hung up at its first status
          callback (:meth:`CallLifecycle._end_late_call`), as the call is recorded
          failed.
        - Anything else (a 4xx refusal) is final.
        """
        attempts = self._config.create_retries + 1
        started = self._clock.now()
        for attempt in range(1, attempts + 1):
            try:
                return await self._telephony.create_call(request)
            except ProviderError as exc:
                maybe_placed = exc.category in (
                    ErrorCategory.TIMEOUT,
                    ErrorCategory.NETWORK,
                    ErrorCategory.SERVER,
                )
                retryable = maybe_placed or exc.category is ErrorCategory.RATE_LIMIT
                _log.warning(
                    "twilio_create_failed",
                    attempt=attempt,
                    category=exc.category.value,
                    provider_code=exc.provider_code,
                )
                last = not retryable or attempt == attempts
                if not last:
                    delay = self._config.retry_base_s * 2 ** (attempt - 1)
                    await self._sleep(delay * (0.5 + random.random()))  # noqa: S311 - jitter
                if maybe_placed:
                    try:
                        found = await self._find_placed(request, call.id, started)
                    except ProviderError as lookup:
                        _log.warning("twilio_lookup_failed", error=lookup.message)
                        raise exc from lookup
                    if found is not None:
                        return found
                if last:
                    raise
        raise AssertionError("unreachable")

    async def _find_placed(
        self, request: CreateCallRequest, call_id: str, started: datetime
    ) -> ProviderCall | None:
        """The call an ambiguous create placed, if we can find it.

        1. Our own record: a status callback that beat the lost answer bound the
           CallSid to our call (its signed URL names our call id), which proves it
           was placed, and placed for us.
        2. Twilio's call list, filtered by ``To`` (the dialled number) and ``From``
           (our caller id), one page of the newest: a call created no earlier than
           our first attempt (less a few seconds of clock slack) whose CallSid no
           other call of ours holds is taken as ours; the newest such call wins.

        Limits, honestly: Twilio's call resource returns neither our ``Url`` nor
        our ``StatusCallback`` (where our call id is), and CreateCall takes no key
        we could search by, so step 2 is an inference from (To, From, time). It
        could pick up a call that another system placed on the same account, from
        the same number, to the same number within those seconds. Within this
        service, the admission policy holds calls in flight to one number to
        ``per_number_in_flight`` (1 by default), and a sid held by another call of
        ours is skipped. It assumes Twilio lists a call
        as soon as its create is carried out [unconfirmed: no documented
        list-after-create delay]. Whatever step 2 misses (a list delay, or a
        request that reaches Twilio only after we looked) is placed twice; the
        extra call names our call id in its signed URLs with a CallSid other than
        the one we bound, and :class:`CallLifecycle` hangs it up at its first
        webhook, usually while it rings.
        Ordering of the list is not relied on: we read a page and compare
        ``date_created`` ourselves.

        Raises:
            ProviderError: listing Twilio's calls failed.
        """
        own = await self._store.get_call(call_id)
        if own is not None and own.call_sid:
            _log.info("call_found_after_ambiguous_create", source="callback")
            return ProviderCall(sid=own.call_sid, status=own.status.value)
        listed = await self._telephony.recent_calls(
            to=request.to, from_=request.from_, limit=_LOOKUP_PAGE
        )
        since = started - _CLOCK_SLACK
        candidates = sorted(
            (c for c in listed if c.date_created is not None and c.date_created >= since),
            key=lambda c: c.date_created or since,
            reverse=True,
        )
        for found in candidates:
            claimed = await self._store.get_call_by_sid(found.sid)
            if claimed is None or claimed.id == call_id:
                _log.info("call_found_after_ambiguous_create", source="twilio_list")
                return found
        return None

    async def _fail(self, call: Call, exc: ProviderError) -> None:
        code, http_status, message = _BUSY
        if exc.provider_code is not None and exc.provider_code in _TWILIO_REFUSALS:
            code, http_status, message = _TWILIO_REFUSALS[exc.provider_code]
        elif exc.category is ErrorCategory.CLIENT:
            code, http_status, message = (
                "provider_refused",
                422,
                "We couldn't place a call to that number.",
            )
        failed_call = await self._store.update_call(
            call.id,
            StatusUpdate(
                status=CallStatus.FAILED,
                failure_code=code,
                failure_reason=f"{message} ({exc.message})",
                provider_error_code=exc.provider_code,
                ended_at=self._clock.now(),
            ),
        )
        await self._event(call.id, "failed", {"code": code, "provider_code": exc.provider_code})
        await self._admission.settle(failed_call)
        _log.warning("call_failed", code=code, provider_code=exc.provider_code)
        if code == "blocked_by_provider" and self._alerts is not None:
            self._alerts.raise_alert(
                "blocked_by_provider",
                "Twilio refused a destination: check its Geo Permissions.",
                provider_code=exc.provider_code,
                to=mask_number(call.dialled_number),
            )
        failed = CallFailed(message, code=code, http_status=http_status, call_id=call.id)
        body = {"success": False, "error": {"code": code, "message": message}, "call_id": call.id}
        await self._store.save_response(call.id, json.dumps({"body": body, "status": http_status}))
        raise failed from exc

    async def _event(self, call_id: str, status: str, detail: Mapping[str, Any]) -> None:
        now = self._clock.now()
        await self._store.add_event(self._service_event(call_id, status, detail, now))
        await self._publish(call_id, status, now)

    @staticmethod
    def _service_event(
        call_id: str, status: str, detail: Mapping[str, Any], at: datetime
    ) -> CallEvent:
        return CallEvent(call_id=call_id, source="service", status=status, at=at, detail=detail)

    async def _publish(self, call_id: str, status: str, now: datetime) -> None:
        try:
            await self._events.publish(
                call_id,
                {"call_id": call_id, "status": status, "at": now.isoformat(), "duration": None},
            )
        except StoreError as exc:
            # Live events are a courtesy (a follower reads the store first). Failing here,
            # after Twilio placed the call, would tell the visitor it failed and invite a
            # second call.
            _log.warning("live_event_not_published", status=status, error=exc.message)
