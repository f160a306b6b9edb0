"""A placed call's life: the TwiML it is given, its status callbacks, its stream's door.

Twilio calls back here. Every entry point looks the call up by CallSid first: a
CallSid we did not create gets :class:`~callbridge.errors.NotFound` and nothing is
written. Status callbacks are idempotent (a replay, same status and
SequenceNumber, is recorded once and changes nothing) and a terminal status never
goes back.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog

from callbridge.domain.amd import AnsweredBy, is_machine
from callbridge.domain.call import (
    TWILIO_STATUSES,
    Call,
    CallMode,
    CallStatus,
    is_call_id,
    transition,
)
from callbridge.domain.phrases import OPTED_OUT
from callbridge.domain.privacy import mask_number
from callbridge.domain.twilio_times import twilio_time
from callbridge.errors import (
    AuthRejected,
    Conflict,
    InvalidTransition,
    NotFound,
    ProviderError,
    StoreError,
    ValidationFailed,
)
from callbridge.metrics import Metrics
from callbridge.ports import (
    CallAnsweredObserver,
    CallEndedObserver,
    CallEvent,
    CallStore,
    Clock,
    EventBus,
    StatusUpdate,
    TelephonyProvider,
    TwimlWriter,
)
from callbridge.services.placing import Admission
from callbridge.services.tokens import StreamTokens
from callbridge.services.voicemail import Voicemail
from callbridge.services.writer import BackgroundWriter
from callbridge.tasks import cancel_and_wait

_log = structlog.get_logger(__name__)

_FAILURE_TEXT = {
    CallStatus.BUSY: "The line was busy.",
    CallStatus.NO_ANSWER: "Nobody answered.",
    CallStatus.CANCELED: "The call was canceled before it was answered.",
    CallStatus.FAILED: "The call could not be connected.",
}
_FAX = "A fax machine answered that number. Please check it."


@dataclass(frozen=True, slots=True)
class LifecycleConfig:
    """What the lifecycle needs from the settings."""

    public_base_url: str
    consent_required: bool
    target_number: str | None


class CallLifecycle:
    """TwiML, status callbacks and stream authentication for placed calls."""

    def __init__(
        self,
        *,
        config: LifecycleConfig,
        store: CallStore,
        twiml: TwimlWriter,
        stream_tokens: StreamTokens,
        events: EventBus,
        clock: Clock,
        admission: Admission,
        telephony: TelephonyProvider | None = None,
        on_answered: CallAnsweredObserver | None = None,
        on_ended: CallEndedObserver | None = None,
        on_opt_out: Callable[[str], Awaitable[None]] | None = None,
        writer: BackgroundWriter,
        metrics: Metrics | None = None,
        voicemail: Voicemail | None = None,
    ) -> None:
        """Args:
        telephony: hangs up a call we recorded failed that Twilio placed after all
            (see :meth:`_end_late_call`).
        on_answered: told when a call is being connected to the agent (the pre-warm).
        on_ended: told, without waiting, when Twilio reports a call over (the
            price fetch).
        on_opt_out: puts a number that pressed 9 on the do-not-call list.
        writer: writes the media path's records in the background.
        voicemail: acts on Twilio's answering machine verdicts (None: AMD is off).
        """
        self._config = config
        self._store = store
        self._twiml = twiml
        self._tokens = stream_tokens
        self._events = events
        self._clock = clock
        self._admission = admission
        self._telephony = telephony
        self._on_answered = on_answered
        self._on_ended = on_ended
        self._late_calls: set[asyncio.Task[None]] = set()
        self._on_opt_out = on_opt_out
        self._metrics = metrics
        self._writer = writer
        self._voicemail = voicemail

    async def _call_by_sid(self, call_sid: str | None, call_id: str | None = None) -> Call:
        """Our call for a webhook: by CallSid, or by the call id in the signed URL.

        Twilio may call back (``initiated``) before its answer to the create request
        has reached us and the CallSid is stored. The URLs we give Twilio name our call
        id, and a signed URL proves Twilio sent it, so a call of ours still waiting for
        its CallSid is bound to it here instead of losing the callback.
        """
        if not call_sid:
            raise NotFound("no CallSid given")
        call = await self._store.get_call_by_sid(call_sid)
        if call is None and call_id and is_call_id(call_id):
            pending = await self._store.get_call(call_id)
            if pending is not None and pending.call_sid == call_sid:
                call = pending  # the CallSid was stored between the two reads
            elif pending is not None and pending.call_sid is None:
                # Early, or late: a call we recorded failed because every create timed
                # out may still have been placed (see _end_late_call).
                call = await self._store.update_call(pending.id, StatusUpdate(call_sid=call_sid))
                _log.info("call_sid_bound", call_id=pending.id, status=pending.status.value)
            elif pending is not None:
                self._end_duplicate(pending, call_sid)
        if call is None:
            raise NotFound("no call with that CallSid was placed by this service")
        structlog.contextvars.bind_contextvars(call_id=call.id, call_sid=call_sid)
        return call

    # TwiML ------------------------------------------------------------------------------

    async def twiml_for(
        self, params: Mapping[str, str], step: str | None, call_id: str | None = None
    ) -> str:
        """The TwiML for a call at ``step`` (None: just answered; ``consent``: key pressed).

        ``call_id`` is the one named in the (signed) URL, if any.

        Raises:
            NotFound: the CallSid is not one of ours.
        """
        if step == "fallback":
            try:
                await self._record_fallback(params)
            except StoreError as exc:
                # The apology needs no store, and a store outage is when it is needed.
                _log.warning("twiml_fallback_not_recorded", error=exc.message)
            return self._twiml.say_and_hang_up(
                "Sorry, something went wrong on our side. Please try again later. Goodbye."
            )
        call = await self._call_by_sid(params.get("CallSid"), call_id)
        if call.status.is_terminal:
            # Over on our side (a failed create that Twilio placed after all): never
            # connect the agent; _end_late_call is hanging it up.
            return self._twiml.say_and_hang_up("Sorry, this call can't go ahead. Goodbye.")
        if step == "voicemail_left" and self._voicemail is not None:
            await self._voicemail.message_left(call)
            return self._twiml.hang_up()
        if step in (None, "consent") and self._voicemail is not None:
            instead = await self._voicemail.twiml_instead(call)
            if instead is not None:
                return instead  # a machine's verdict came first: never connect it
        if step is None:
            return await self._answered(call)
        if step == "consent":
            return await self._consent(call, params.get("Digits", ""))
        raise ValidationFailed(f"unknown TwiML step {step!r}")

    async def _record_fallback(self, params: Mapping[str, str]) -> None:
        """Twilio could not get usable TwiML for one of our calls and fell back.

        Twilio sends ``ErrorCode`` (e.g. 11200) and ``ErrorUrl`` with the fallback
        request. The call is recorded failed with that code (its ``completed``
        callback then leaves it failed), so it does not pass for a call that went
        well. A CallSid that is not ours still gets the apology: the request is
        signed, and the callee must not be left in silence.
        """
        call_sid = params.get("CallSid")
        call = await self._store.get_call_by_sid(call_sid) if call_sid else None
        if call is None:
            return
        raw = params.get("ErrorCode", "")
        code = int(raw) if raw.isdigit() else None
        await self._event(call.id, "twiml_fallback", {"error_code": code})
        _log.warning("twiml_fallback", call_id=call.id, provider_code=code)
        try:
            status = transition(call.status, CallStatus.FAILED)
        except InvalidTransition:
            return
        updated = await self._store.update_call(
            call.id,
            StatusUpdate(
                status=status,
                failure_code="twiml_error",
                failure_reason="Our server could not tell Twilio what to do with the call.",
                provider_error_code=code,
            ),
        )
        await self._events.publish(call.id, public_event(updated, self._clock.now()))

    async def _answered(self, call: Call) -> str:
        if call.mode is CallMode.OWNER:
            target = self._config.target_number
            if not target:
                return self._twiml.say_and_hang_up("Sorry, nobody is available. Goodbye.")
            await self._event(call.id, "dial_owner", {"to": mask_number(target)})
            return self._twiml.dial(target, greet=True)
        if self._config.consent_required:
            # "asked" until a key says otherwise: a callee who presses nothing ends as
            # the operator's ``no_consent`` outcome (domain.call.outcome_of).
            await self._store.update_call(
                call.id, StatusUpdate(consent="asked"), event=self._ev(call.id, "consent_asked")
            )
            return self._twiml.consent_prompt(
                f"{self._config.public_base_url}/api/call/twiml?step=consent"
            )
        return await self._connect(call, greet=True)

    async def _consent(self, call: Call, digits: str) -> str:
        if digits.startswith("1"):
            await self._store.update_call(
                call.id, StatusUpdate(consent="given"), event=self._ev(call.id, "consent_given")
            )
            return await self._connect(call, greet=False)
        if digits.startswith("9"):
            await self._store.update_call(
                call.id, StatusUpdate(consent="opted_out"), event=self._ev(call.id, "opted_out")
            )
            if self._on_opt_out is not None:
                await self._on_opt_out(call.to_number)
            return self._twiml.say_and_hang_up(OPTED_OUT)
        await self._store.update_call(
            call.id,
            StatusUpdate(consent="declined"),
            event=self._ev(call.id, "consent_declined", {"digits": len(digits)}),
        )
        return self._twiml.say_and_hang_up("No problem. Goodbye.")

    async def _connect(self, call: Call, *, greet: bool) -> str:
        if self._on_answered is not None:
            await self._on_answered.call_answered(call)  # pre-warm the agent session
        return self._twiml.connect_agent(call.id, self._tokens.token_for(call.id), greet=greet)

    # Answering machines ----------------------------------------------------------------

    async def apply_amd(self, params: Mapping[str, str], call_id: str | None = None) -> None:
        """Record Twilio's asynchronous AMD verdict and act on it (see :mod:`.voicemail`).

        Raises:
            NotFound: the CallSid is not one of ours (nothing is written).
            ValidationFailed: the callback has no ``AnsweredBy``.
        """
        if not params.get("AnsweredBy"):
            raise ValidationFailed("the AMD callback has no AnsweredBy")
        call = await self._call_by_sid(params.get("CallSid"), call_id)
        if self._voicemail is None:
            _log.warning("amd_callback_unexpected")  # AMD is not asked for: keep nothing
            return
        await self._voicemail.verdict(call, params)

    async def voicemail_left(self, call_id: str) -> None:
        """The agent said its whole voicemail message."""
        call = await self._store.get_call(call_id)
        if call is not None and self._voicemail is not None:
            await self._voicemail.message_left(call)

    async def voicemail_without_agent(self, call: Call, reason: str) -> None:
        """The agent could not be had for ``call``'s voicemail: leave our message instead."""
        if self._voicemail is not None:
            await self._voicemail.agent_unavailable(call, reason)

    def voicemail_first_message(self, call: Call) -> str | None:
        """For the agent's voicemail stream of ``call``: its first message; else None."""
        if self._voicemail is None or not self._voicemail.is_voicemail_stream(call):
            return None
        return self._voicemail.message_for(call)

    # Status callbacks ------------------------------------------------------------------

    async def apply_status(self, params: Mapping[str, str], call_id: str | None = None) -> None:
        """Record a status callback and move the call forward if it is news.

        ``call_id`` is the one named in the (signed) callback URL, if any.

        Raises:
            NotFound: the CallSid is not one of ours (nothing is written).
            ValidationFailed: the callback has no usable CallStatus.
        """
        raw_status = params.get("CallStatus", "")
        if raw_status not in TWILIO_STATUSES:
            raise ValidationFailed(f"unknown CallStatus {raw_status!r}")
        call_sid = params.get("CallSid")
        seq_raw = params.get("SequenceNumber", "")
        sequence = int(seq_raw) if seq_raw.isdigit() else None
        now = self._clock.now()
        detail = {
            k: params[k] for k in ("CallDuration", "SipResponseCode", "AnsweredBy") if params.get(k)
        }
        target = CallStatus(raw_status)

        def received(call: Call) -> CallEvent:
            return CallEvent(
                call_id=call.id,
                source="twilio",
                status=raw_status,
                at=now,
                sequence_number=sequence,
                detail=detail,
            )

        # The usual case in one transaction: read the call by its CallSid, record the
        # callback, move the call. A replay (the event is there already) whose changes
        # are none writes nothing.
        applied = None
        if call_sid:
            try:
                applied = await self._store.apply_by_sid(
                    call_sid,
                    lambda c: (received(c), self._changes_for(c, target, params, now)),
                )
            except Conflict:
                applied = None  # moved meanwhile by another process: read it again below
        if applied is not None:
            call, fresh, updated = applied
            changes = self._changes_for(call, target, params, now)
            structlog.contextvars.bind_contextvars(call_id=call.id, call_sid=call_sid)
        else:
            # No call has this CallSid yet (a callback that beat Twilio's answer to the
            # create binds it here), or the status moved under us.
            call = await self._call_by_sid(call_sid, call_id)
            for _ in range(3):
                changes = self._changes_for(call, target, params, now)
                try:
                    fresh, updated = await self._store.record_and_update(
                        received(call), changes, expect=call.status
                    )
                    break
                except Conflict:
                    reloaded = await self._store.get_call(call.id)
                    assert reloaded is not None
                    call = reloaded
            else:  # pragma: no cover - three concurrent writers in a row
                raise Conflict("the call kept changing while a callback was applied")
        if not fresh:
            if changes == StatusUpdate():
                _log.info("status_callback_replayed", status=raw_status, sequence=sequence)
                if call.status.is_terminal:
                    # Twilio retries a callback we failed to answer: freeing the slots or
                    # settling the spend may be what failed the first time. Settling is
                    # idempotent (and frees the slots), so settle again.
                    await self._shared_state(lambda: self._admission.settle(call), "settle")
                return
            # Recorded, yet the call was not moved by it (a version that wrote the two
            # apart met an outage in between): this retry finishes the job.
            _log.info("status_callback_resumed", status=raw_status, sequence=sequence)
        if call.status is CallStatus.FAILED and not target.is_terminal:
            # Beside the answer to Twilio, not before it: the webhook must stay quick.
            task = asyncio.create_task(self._end_late_call(call, params.get("CallSid", "")))
            self._late_calls.add(task)
            task.add_done_callback(self._late_calls.discard)
        if target.is_terminal:
            # Twilio says the call is over: free its slots and book its spend at the
            # estimate. Settling is idempotent, and the call may already be terminal on
            # our side (agent_failed) while Twilio was still playing the apology.
            await self._shared_state(lambda: self._admission.settle(updated), "settle")
            if self._on_ended is not None:
                self._on_ended.call_ended(updated)
        if changes.status is not None and updated.status.is_terminal and self._metrics:
            self._metrics.calls_final.labels(status=updated.status.value).inc()
            if updated.answered_by:
                self._metrics.amd_outcomes.labels(
                    answered_by=_verdict_label(updated.answered_by), status=updated.status.value
                ).inc()
        if changes.status is not None:
            event = public_event(updated, now)
            await self._shared_state(
                lambda: self._events.publish(call.id, event), "live event", catch_up=False
            )

    async def _shared_state(
        self, work: Callable[[], Awaitable[None]], what: str, *, catch_up: bool = True
    ) -> None:
        """Update the state Redis shares after a callback was stored; a Redis outage waits.

        Once a status callback is in the database, the call's truth is stored. What Redis
        keeps is derived from it and heals without the callback: the slot audit frees a
        call's slot, the day's spend counter is corrected from the ledger, and a page
        that misses a live event polls. So a Redis failure here is logged, not answered
        503: that would spend Twilio's few retries (15 s at most) on an outage the
        database does not have, and could leave a stored callback looking lost. A
        database failure still raises, and Twilio retries the callback.

        With ``catch_up``, the work is tried again in the background until Redis answers
        (settling is idempotent): a slot left held until the next audit would refuse
        calls that the real traffic allows, in the seconds after Redis returns.
        """
        try:
            await work()
        except StoreError as exc:
            if exc.dependency != "redis":
                raise
            _log.warning("shared_state_deferred", what=what, error=exc.message)
            if catch_up:
                task = asyncio.create_task(self._catch_up(work, what))
                self._late_calls.add(task)
                task.add_done_callback(self._late_calls.discard)

    async def aclose(self) -> None:
        """Stop the work begun beside webhook answers (late-call hang-ups, catch-ups).

        A catch-up still waiting for Redis at shutdown is left to the slot audit and the
        ledger's heal, as it would be after a crash.
        """
        for task in list(self._late_calls):
            await cancel_and_wait(task)

    async def _catch_up(self, work: Callable[[], Awaitable[None]], what: str) -> None:
        """Retry deferred shared-state work every quarter second, for ten minutes at most
        (then the slot audit and the ledger's heal take over)."""
        for _ in range(2400):
            await asyncio.sleep(0.25)
            try:
                await work()
            except StoreError:
                continue
            _log.info("shared_state_caught_up", what=what)
            return

    async def settle_spend(self, call: Call) -> None:
        """Book an ended call's spend at the truth now stored (its price, once fetched)."""
        await self._admission.settle(call)

    def _end_duplicate(self, call: Call, call_sid: str) -> None:
        """Hang up a second call Twilio placed for one of ours, beside the webhook.

        Its signed URL names our call id but another CallSid than the one we bound:
        a create that failed ambiguously was placed after all, too late for the
        look before the retry to find it (see PlacingService._find_placed). The call
        we know goes on; this one is ended at its first webhook, usually while it
        rings.
        """
        task = asyncio.create_task(self._end_duplicate_call(call, call_sid))
        self._late_calls.add(task)
        task.add_done_callback(self._late_calls.discard)

    async def _end_duplicate_call(self, call: Call, call_sid: str) -> None:
        # Only a call Twilio knows on this account is ended and recorded: a CallSid
        # Twilio has never heard of leaves no trace.
        if self._telephony is None:
            return
        try:
            await self._telephony.fetch_call(call_sid)
        except (NotFound, ProviderError) as exc:
            _log.warning("duplicate_call_not_found", error=exc.message)
            return
        await self._end_late_call(call, call_sid, "duplicate_call_ended")

    async def _end_late_call(
        self, call: Call, call_sid: str, event: str = "late_call_ended"
    ) -> None:
        """Hang up a call we recorded failed that Twilio reports alive.

        Every create attempt timed out, so the call was recorded failed and the visitor
        told so; Twilio placed it all the same. Ending it at its first callback keeps a
        phone from ringing for a call nobody expects, and an answer from reaching the
        agent. Each live callback tries again (hanging up an ended call is harmless).
        """
        if self._telephony is None or not call_sid:
            return
        try:
            await self._telephony.hang_up(call_sid)
        except ProviderError as exc:
            _log.warning("late_call_end_failed", error=exc.message)
            return
        _log.warning(event, call_id=call.id)
        await self._event(call.id, event, {"call_sid": call_sid})

    def _changes_for(
        self, call: Call, target: CallStatus, params: Mapping[str, str], now: datetime
    ) -> StatusUpdate:
        status: CallStatus | None
        try:
            status = transition(call.status, target)
        except InvalidTransition:
            status = None  # late or out of order: keep the newer status
        duration = params.get("CallDuration", "")
        fields: dict[str, Any] = {"status": status}
        if target is CallStatus.IN_PROGRESS and call.answered_at is None:
            fields["answered_at"] = now
        if target.is_terminal:
            if call.ended_at is None:
                fields["ended_at"] = _ended_at(call, params, now)
            if duration.isdigit() and call.duration_s is None:
                fields["duration_s"] = int(duration)
            if params.get("AnsweredBy") and call.answered_by is None:
                fields["answered_by"] = params["AnsweredBy"]
            verdict = call.answered_by or params.get("AnsweredBy")
            if status is CallStatus.COMPLETED and is_machine(verdict):
                fields["status"] = status = CallStatus.VOICEMAIL  # a machine took it
            elif status is CallStatus.COMPLETED and verdict == AnsweredBy.FAX:
                fields["status"] = status = CallStatus.FAILED
                fields["failure_code"] = "fax"
                fields["failure_reason"] = _FAX
            if status is not None and status in _FAILURE_TEXT and "failure_code" not in fields:
                fields["failure_code"] = status.value
                fields["failure_reason"] = _FAILURE_TEXT[status]
        return StatusUpdate(**fields)

    # The media stream's door -----------------------------------------------------------

    async def admit_stream(
        self, call_id: str | None, token: str | None, call_sid: str | None, stream_sid: str
    ) -> Call:
        """Check a stream's ``start``: a live call of ours, and its unused token.

        Raises:
            AuthRejected: the token is missing, wrong or already used, or the call
                does not match.
        """
        if not call_id or not token or not call_sid:
            raise AuthRejected("the stream did not present a call id and token")
        # One statement checks and uses the token: each transaction costs the waiting
        # agent audio a few turns of a loop busy with other calls' set-ups (issue 12).
        call = await self._store.claim_stream(
            call_id, call_sid, self._tokens.digest(token), stream_sid
        )
        if call is None:
            # Refused (rare): one more read says why, for the log.
            known = await self._store.get_call(call_id) if is_call_id(call_id) else None
            if known is None or known.call_sid != call_sid or known.status.is_terminal:
                raise AuthRejected("the stream names no live call of ours")
            raise AuthRejected("the stream token is wrong or was already used")
        if self._voicemail is not None and self._voicemail.refuses_stream(call):
            # The token is used up too: no agent may ever speak on this call.
            raise AuthRejected("an answering machine took this call: no agent on it")
        structlog.contextvars.bind_contextvars(
            call_id=call.id, call_sid=call_sid, stream_sid=stream_sid
        )
        return call

    def stream_started(
        self, call_id: str, stream_sid: str, agent_conversation_id: str | None
    ) -> None:
        """Record the stream's start and the agent conversation (queued: never waits)."""
        if agent_conversation_id:
            self._writer.call_update(
                call_id, StatusUpdate(agent_conversation_id=agent_conversation_id)
            )
        self._writer.event(self._stream_event(call_id, "stream_started", stream_sid=stream_sid))

    def stream_stopped(self, call_id: str, reason: str) -> None:
        """Record that a call's media stream ended (queued: never waits)."""
        self._writer.event(self._stream_event(call_id, "stream_stopped", reason=reason))

    def _stream_event(self, call_id: str, status: str, **detail: str) -> CallEvent:
        return CallEvent(
            call_id=call_id, source="service", status=status, at=self._clock.now(), detail=detail
        )

    # The page's view -------------------------------------------------------------------

    async def public_view(self, call_id: str) -> dict[str, Any]:
        """A call's status for the page: nothing private, the number masked.

        Raises:
            NotFound: no such call (an id of the wrong shape is not looked up).
        """
        call = await self._store.get_call(call_id) if is_call_id(call_id) else None
        if call is None:
            raise NotFound("no such call")
        view = public_view(call)
        if call.retry_on_no_answer and call.status in (CallStatus.BUSY, CallStatus.NO_ANSWER):
            # The visitor asked for another try: say when it is (the scheduler records it
            # within one pass of the end).
            found = await self._store.get_by_idempotency_key(f"retry:{call.id}")
            if found is not None:
                view["retry"] = {
                    "call_id": found[0].id,
                    "status": found[0].status.value,
                    "scheduled_for": _iso_z(found[0].scheduled_for),
                }
        return view

    async def follow(self, call_id: str) -> AsyncIterator[dict[str, Any]]:
        """The call's current status, then each change, ending after a terminal one.

        Raises:
            NotFound: no such call (an id of the wrong shape is not looked up).
        """
        call = await self._store.get_call(call_id) if is_call_id(call_id) else None
        if call is None:
            raise NotFound("no such call")
        changes = await self._events.subscribe(call_id)
        try:
            current = await self._store.get_call(call_id)  # read after subscribing: no gap
            assert current is not None
            last = current.status.value
            yield public_event(current, self._clock.now())
            if current.status.is_terminal:
                return
            async for change in changes:
                status = str(change.get("status"))
                if status not in CallStatus._value2member_map_:
                    continue
                if CallStatus(status).rank <= CallStatus(last).rank:
                    continue  # a repeat, or news that arrived late: the page only goes forward
                last = status
                yield dict(change)
                if CallStatus(status).is_terminal:
                    return
        finally:
            await changes.aclose()

    async def _event(self, call_id: str, status: str, detail: Mapping[str, Any]) -> None:
        await self._store.add_event(self._ev(call_id, status, detail))

    def _ev(self, call_id: str, status: str, detail: Mapping[str, Any] | None = None) -> CallEvent:
        return CallEvent(
            call_id=call_id,
            source="service",
            status=status,
            at=self._clock.now(),
            detail=detail or {},
        )


def _ended_at(call: Call, params: Mapping[str, str], now: datetime) -> datetime:
    """When the call ended: by Twilio's clock if the callback says (``Timestamp``, RFC 2822).

    A retried or delayed callback, or the reconciler's record of a call whose process
    died (it passes the Call resource's ``end_time`` as ``Timestamp``), reaches us long
    after the end; our clock is only the fallback when Twilio gave no time. Twilio's
    times have whole seconds, so a call shorter than a second could seem to end before
    it began by our (finer) clock: the end is never put before the answer or creation.
    """
    twilio_end = twilio_time(params.get("Timestamp"))
    if twilio_end is None:
        return now
    return max(twilio_end, call.answered_at or call.created_at, call.created_at)


def _verdict_label(answered_by: str) -> str:
    """A metric label for a stored verdict (Twilio's value, or ``other``)."""
    return answered_by if answered_by in AnsweredBy._value2member_map_ else "other"


def public_event(call: Call, at: datetime) -> dict[str, Any]:
    """One status change as the page's event stream sends it."""
    return {
        "call_id": call.id,
        "status": call.status.value,
        "at": at.isoformat(),
        "duration": call.duration_s,
        "message_left": call.message_left,
    }


def public_view(call: Call) -> dict[str, Any]:
    """A call as ``GET /api/call/{id}`` shows it."""
    failure = None
    if call.failure_code:
        failure = {"code": call.failure_code, "message": _visitor_failure(call)}
    return {
        "call_id": call.id,
        "status": call.status.value,
        "to": mask_number(call.to_number),
        "created_at": call.created_at.isoformat(),
        "answered_at": call.answered_at.isoformat() if call.answered_at else None,
        "ended_at": call.ended_at.isoformat() if call.ended_at else None,
        "duration": call.duration_s,
        "failure": failure,
        "scheduled_for": _iso_z(call.scheduled_for),
        "retry_on_no_answer": call.retry_on_no_answer,
        "retry_of": call.retry_of,
        "attempt": call.attempt,
        # Whether a message was left on an answering machine (None: no machine answered).
        "message_left": call.message_left,
    }


def _iso_z(at: datetime | None) -> str | None:
    return at.isoformat().replace("+00:00", "Z") if at is not None else None


def _visitor_failure(call: Call) -> str:
    reason = call.failure_reason or ""
    # Failure reasons are "<visitor sentence> (<detail>)"; the detail stays with the operator.
    return reason.split(" (", 1)[0] or "The call could not be completed."
