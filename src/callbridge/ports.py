"""The ports: what the services need from the outside world, as ``typing.Protocol``s.

Adapters implement them: ``adapters/twilio`` (and the sandbox's Twilio emulator behind the
same REST API), ``adapters/elevenlabs``, ``adapters/db``, ``adapters/quota``. Services reach
adapters only through this module, and adapters reach services not at all (the ``layers``
import contract in ``pyproject.toml``); the few exceptions are listed there with a reason.
The observer ports (:class:`CallAnsweredObserver`, :class:`CallEndedObserver`) let the
lifecycle tell services built before it, so no two services need each other.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol

from callbridge.domain.call import Call, CallStatus
from callbridge.domain.dialing_permissions import CountryPermission
from callbridge.domain.quotas import QuotaLimits, QuotaRequest, Reservation


class Clock(Protocol):
    """Wall and monotonic time, replaceable in tests."""

    def now(self) -> datetime:
        """The current UTC time (timezone-aware)."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin, never going backwards."""
        ...


@dataclass(frozen=True, slots=True)
class MachineDetection:
    """Twilio's asynchronous answering machine detection for a call (protocols.md §2.4).

    Attributes:
        mode: ``Enable`` or ``DetectMessageEnd``.
        status_callback: where the verdict is POSTed (``AsyncAmdStatusCallback``).
        timeout_s, speech_threshold_ms, speech_end_threshold_ms, silence_timeout_ms:
            Twilio's knobs; None leaves Twilio's default.
    """

    mode: str
    status_callback: str
    timeout_s: int | None = None
    speech_threshold_ms: int | None = None
    speech_end_threshold_ms: int | None = None
    silence_timeout_ms: int | None = None


@dataclass(frozen=True, slots=True)
class CreateCallRequest:
    """What we ask Twilio to dial (protocols.md 1.2)."""

    to: str
    from_: str
    url: str
    status_callback: str
    timeout: int
    time_limit: int
    fallback_url: str | None = None
    machine_detection: MachineDetection | None = None


@dataclass(frozen=True, slots=True)
class ProviderCall:
    """Twilio's view of a call (protocols.md 1.3), the fields we use.

    ``start_time`` and ``end_time`` are Twilio's (UTC, whole seconds); None until the
    call has started or ended.
    """

    sid: str
    status: str
    duration: int | None = None
    price: str | None = None
    price_unit: str | None = None
    answered_by: str | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    #: When Twilio created the call (``date_created``: RFC 2822, whole seconds).
    date_created: datetime | None = None


class TelephonyProvider(Protocol):
    """Twilio's Calls resource."""

    async def create_call(self, request: CreateCallRequest) -> ProviderCall:
        """Place a call. Raises ProviderError (TwilioRefused for Twilio error codes)."""
        ...

    async def fetch_call(self, sid: str) -> ProviderCall:
        """Fetch a call's current state."""
        ...

    async def recent_calls(self, *, to: str, from_: str, limit: int) -> list[ProviderCall]:
        """Up to ``limit`` calls from ``from_`` to ``to``, as Twilio lists them.

        Twilio's REST API cannot be asked for "the call this create placed": its
        CreateCall has no idempotency key and its call resource does not return the
        ``Url``. This is the raw material for looking after an ambiguous create.
        """
        ...

    async def hang_up(self, sid: str) -> None:
        """End a live call (``Status=completed``); an already-ended call is not an error."""
        ...

    async def redirect(self, sid: str, *, twiml: str | None = None, url: str | None = None) -> None:
        """Replace a live call's TwiML (``Twiml`` or ``Url``)."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


@dataclass(frozen=True, slots=True)
class AgentConversation:
    """An agent conversation as ElevenLabs keeps it (protocols.md §4.10).

    Attributes:
        conversation_id: ElevenLabs' id of the conversation.
        status: ``initiated``, ``in-progress``, ``processing``, ``done`` or ``failed``.
        data: the conversation in the shape of the post-call webhook's ``data`` object
            (``transcript``, ``metadata``, ``analysis``,
            ``conversation_initiation_client_data`` …), whichever way it arrived.
    """

    conversation_id: str
    status: str
    data: Mapping[str, Any]


class ConversationHistory(Protocol):
    """ElevenLabs' Conversations API: what a conversation produced, on request."""

    async def fetch_conversation(self, conversation_id: str) -> AgentConversation:
        """The conversation's current state.

        Raises:
            NotFound: ElevenLabs has no such conversation.
            ProviderError: ElevenLabs refused or failed (``category`` says whether to retry).
            ProtocolError: the answer was not a conversation.
        """
        ...


@dataclass(frozen=True, slots=True)
class SpendHold:
    """A call's worst-case spend, booked in the spend ledger with the call's row.

    Attributes:
        day: the UTC day (days since the epoch) the spend is booked on.
        country_code: the destination's country calling code (``"1"``).
        reserved_micros: the reservation, in µUSD (:mod:`callbridge.domain.spend`).
    """

    day: int
    country_code: str
    reserved_micros: int


@dataclass(frozen=True, slots=True)
class NewCall:
    """A call to record before Twilio is asked (with its spend ledger line, if any)."""

    id: str
    to_number: str
    dialled_number: str
    mode: str
    context_name: str | None
    context_reason: str | None
    context_summary: str | None
    context_conversation_id: str | None
    stream_token_hash: str
    idempotency_key: str | None
    client_ip_hash: str | None
    created_at: datetime
    is_test: bool = False
    spend: SpendHold | None = None
    scheduled_for: datetime | None = None
    retry_on_no_answer: bool = False
    retry_of: str | None = None
    attempt: int = 1


@dataclass(frozen=True, slots=True)
class CallEvent:
    """One entry on a call's timeline."""

    call_id: str
    source: str
    status: str
    at: datetime
    sequence_number: int | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)
    id: int | None = None


@dataclass(frozen=True, slots=True)
class TranscriptTurn:
    """One turn of the phone conversation, honest about what the callee heard."""

    call_id: str
    role: str
    text: str
    at: datetime
    heard_text: str | None = None
    interrupted: bool = False
    event_id: int | None = None


@dataclass(frozen=True, slots=True)
class StatusUpdate:
    """Fields a status change may fill in; None leaves a field as it is."""

    status: CallStatus | None = None
    call_sid: str | None = None
    failure_code: str | None = None
    failure_reason: str | None = None
    provider_error_code: int | None = None
    answered_at: datetime | None = None
    ended_at: datetime | None = None
    duration_s: int | None = None
    price: str | None = None
    price_unit: str | None = None
    answered_by: str | None = None
    amd_duration_ms: int | None = None
    message_left: bool | None = None
    stream_sid: str | None = None
    agent_conversation_id: str | None = None
    consent: str | None = None
    analysis: str | None = None


class CallStore(Protocol):
    """Where calls, their timelines and transcripts live."""

    async def add_call(self, call: NewCall, *, event: CallEvent | None = None) -> Call:
        """Record a new call in status ``requested`` (and ``event``, in the same transaction).

        Raises:
            Conflict: when ``idempotency_key`` is already used (the first call is kept).
        """
        ...

    async def get_call(self, call_id: str) -> Call | None:
        """A call by our id."""
        ...

    async def get_call_by_sid(self, call_sid: str) -> Call | None:
        """A call by Twilio's CallSid."""
        ...

    async def get_by_idempotency_key(self, key: str) -> tuple[Call, str | None] | None:
        """The call recorded under an Idempotency-Key, with the first answer's JSON."""
        ...

    async def save_response(self, call_id: str, response_json: str) -> None:
        """Keep the first answer given for a call (for Idempotency-Key replays)."""
        ...

    async def update_call(
        self,
        call_id: str,
        changes: StatusUpdate,
        *,
        expect: CallStatus | None = None,
        event: CallEvent | None = None,
    ) -> Call:
        """Apply ``changes`` atomically; with ``expect``, only if the status is still that.

        ``event`` is appended to the timeline in the same transaction (a duplicate is
        skipped, as :meth:`add_event` does); it is not written if the update is refused.

        Raises:
            NotFound: no such call.
            Conflict: ``expect`` was given and the status had moved on.
        """
        ...

    async def add_event(self, event: CallEvent) -> bool:
        """Append a timeline event; False (and nothing written) if it was already there."""
        ...

    async def record_and_update(
        self, event: CallEvent, changes: StatusUpdate, *, expect: CallStatus
    ) -> tuple[bool, Call]:
        """Append ``event`` and apply ``changes`` to its call in one transaction (a status
        callback). Returns whether the event was new, and the call after the changes.

        Raises:
            NotFound: no such call.
            Conflict: the status is no longer ``expect`` (nothing is written).
        """
        ...

    async def apply_by_sid(
        self, call_sid: str, decide: Callable[[Call], tuple[CallEvent, StatusUpdate]]
    ) -> tuple[Call, bool, Call] | None:
        """A status callback in one transaction: read the call with ``call_sid`` (locked
        where the database can), append the event ``decide`` makes of it and apply its
        changes. Returns the call as read, whether the event was new, and the call
        after; None (nothing written) when no call has that CallSid.

        Raises:
            Conflict: the status moved between the read and the write (nothing is
                written; another process wrote it, where the read cannot lock).
        """
        ...

    async def events(self, call_id: str) -> Sequence[CallEvent]:
        """A call's timeline, oldest first."""
        ...

    async def claim_stream(
        self, call_id: str, call_sid: str, token_hash: str, stream_sid: str
    ) -> Call | None:
        """A media stream's ``start``, in one statement: if ``call_id`` is a live call
        with ``call_sid`` and this unused token, mark the token used, record the stream
        and return the call as it now is; None (nothing written) otherwise."""
        ...

    async def renew_stream_token(self, call_id: str, token_hash: str) -> None:
        """Give the call a fresh, unused stream token (a second stream: the agent leaving
        a voicemail); the old token stops working."""
        ...

    async def add_turn(self, turn: TranscriptTurn) -> None:
        """Append a transcript turn."""
        ...

    async def add_turns(self, turns: Sequence[TranscriptTurn]) -> None:
        """Append several transcript turns in one transaction."""
        ...

    async def turns(self, call_id: str) -> Sequence[TranscriptTurn]:
        """A call's transcript, oldest first."""
        ...

    async def recent_calls(
        self, *, limit: int = 50, status: str | None = None, since: datetime | None = None
    ) -> Sequence[Call]:
        """Calls, newest first."""
        ...

    async def ping(self) -> None:
        """Raise StoreError unless the database answers."""
        ...

    async def aclose(self) -> None:
        """Close the connection pool."""
        ...


class EventBus(Protocol):
    """Live status changes, fanned out to the pages that follow a call."""

    async def publish(self, call_id: str, payload: Mapping[str, Any]) -> None:
        """Tell every follower of ``call_id``."""
        ...

    async def subscribe(self, call_id: str) -> EventSubscription:
        """Follow ``call_id``'s changes from the moment this returns."""
        ...


class EventSubscription(Protocol):
    """A live follower: iterate for changes, then close."""

    def __aiter__(self) -> EventSubscription:
        """Itself."""
        ...

    async def __anext__(self) -> Mapping[str, Any]:
        """The next change (waits)."""
        ...

    async def aclose(self) -> None:
        """Stop following."""
        ...


class MediaSocket(Protocol):
    """The Twilio side of a media stream, as the bridge sees it (the web layer adapts it)."""

    async def recv(self) -> str | bytes | None:
        """The next message, or None once the peer closed."""
        ...

    async def send(self, message: str) -> None:
        """Send one text message (a closed socket is not an error)."""
        ...

    async def send_many(self, messages: Sequence[str]) -> None:
        """Send each of ``messages`` as its own text message, in order, written together
        where the server can (a closed socket is not an error)."""
        ...

    async def close(self, code: int = 1000) -> None:
        """Close (idempotent)."""
        ...


class DialingPermissionsProvider(Protocol):
    """Twilio's Voice Dialing Permissions (security.md B18), read-only."""

    async def list_countries(self) -> Sequence[CountryPermission]:
        """Every country the account lists. Raises ProviderError (TwilioRefused for codes)."""
        ...


class CallAnsweredObserver(Protocol):
    """Told when the TwiML that connects a call's media stream is served (the agent pre-warm)."""

    async def call_answered(self, call: Call) -> None:
        """``call`` was answered and is about to be connected to the agent."""
        ...


class MachineAnsweredObserver(Protocol):
    """Told when Twilio's AMD says a machine (or a fax) took the call."""

    async def machine_answered(self, call: Call) -> None:
        """Close whatever agent session was opened ahead for ``call`` (its minutes stop)."""
        ...


class CallEndedObserver(Protocol):
    """Told, without waiting, when Twilio reports a call over (the price fetch)."""

    def call_ended(self, call: Call) -> None:
        """``call`` reached a terminal status."""
        ...


class RefusalRecorder(Protocol):
    """Keeps each policy refusal for the operator's overview."""

    async def record_refusal(
        self, reason: str, *, number_hash: str | None = None, at: datetime | None = None
    ) -> bool:
        """Keep one refusal; a failure to keep it is logged and never refuses twice."""
        ...


# Alerts -------------------------------------------------------------------------------

AlertKind = Literal[
    "spend_cap",
    "country_daily",
    "prefix_daily",
    "blocked_by_provider",
    "kill_switch",
    "dialing_permissions",
]
Detail = str | int | float | bool | None


@dataclass(frozen=True, slots=True)
class Alert:
    """One notification.

    Attributes:
        kind: what happened, a stable name.
        summary: one sentence for a person.
        details: safe context (masked numbers, codes, counts).
        at: when it was raised.
        held_back: alerts of this kind not sent since the last notification.
    """

    kind: AlertKind
    summary: str
    details: Mapping[str, Detail] = field(default_factory=dict)
    at: datetime = field(default_factory=lambda: datetime.now(UTC))
    held_back: int = 0


class AlertSink(Protocol):
    """Where notifications go (a webhook adapter)."""

    async def deliver(self, alert: Alert) -> None:
        """Send one alert.

        Raises:
            CallbridgeError: it could not be delivered (the service retries).
        """
        ...


class QuotaStore(Protocol):
    """Counters for the quotas of security.md 6-12, shared by every process.

    Times are seconds since the epoch passed in as ``now`` (never read from a
    clock inside), so sliding windows can be tested by moving ``now``. Spend is in
    µUSD (:mod:`callbridge.domain.spend`), per UTC day (days since the epoch).

    An in-flight slot belongs to a *call*, not to the process that placed it: after
    :meth:`reserve`, :meth:`hold` puts the reservation's slots under the call's id,
    so any process can :meth:`release` them, and they expire on their own at the
    ``until`` given.
    """

    async def reserve(
        self,
        request: QuotaRequest,
        limits: QuotaLimits,
        now: float,
        *,
        require_spend: bool = False,
    ) -> Reservation:
        """Check all quotas and, only if all pass, record the attempt, atomically.

        Records: the attempt in the per-number, per-IP and per-block windows, the
        number among the IP's distinct numbers, an in-flight slot for the number and
        for the service (expiring after ``limits.in_flight_ttl_s`` unless held by a
        call), and ``limits.reservation_cents`` of today's spend.

        Args:
            request: who asks for what.
            limits: the quotas.
            now: the current time.
            require_spend: refuse to guess today's spend: raise
                :class:`~callbridge.errors.SpendUnknown` (recording nothing) when the
                store has no counter for today, instead of starting it at 0.

        Raises:
            PolicyRejected: from :func:`callbridge.domain.policy.quota_error` for the
                first failing rule (429 for requester and number rules, 503 for
                ``capacity`` and ``spend_cap``). A ``distinct_numbers`` refusal also
                blocks the IP for ``limits.ip_block_escalation_s``.
            SpendUnknown: ``require_spend`` and no counter for today.
        """
        ...

    async def hold(
        self,
        call_id: str,
        number_key: str,
        *,
        until: float,
        now: float,
        reservation_id: str | None = None,
        only_if_missing: bool = False,
    ) -> bool:
        """Hold an in-flight slot (the number's and the service's) for ``call_id`` until ``until``.

        Args:
            call_id: the call that holds it.
            number_key: the hashed number the call is to.
            until: when the slot frees itself if nobody releases it.
            now: the current time.
            reservation_id: the reservation whose slots become the call's; ``None``
                holds fresh ones (the audit re-holding for a live call).
            only_if_missing: change nothing if the call already holds a slot.

        Returns:
            Whether a slot was written.
        """
        ...

    async def release(self, call_id: str, *, now: float) -> bool:
        """Free the slots ``call_id`` holds; idempotent, from any process.

        Returns:
            Whether there was a slot to free.
        """
        ...

    async def held(self, now: float) -> dict[str, float]:
        """Every call holding a slot that has not expired: call id -> when it was held."""
        ...

    async def spend(self, day: int) -> int | None:
        """The day's booked spend in µUSD, or ``None`` when the store has no counter."""
        ...

    async def adjust_spend(self, day: int, delta: int) -> None:
        """Add ``delta`` µUSD to the day's spend, if the store has a counter for the day.

        Without a counter nothing is written: the next rebuild from the ledger counts it.
        The counter never goes below 0 (a larger refund leaves it at 0).
        """
        ...

    async def restore_spend(self, day: int, amount: int) -> bool:
        """Set the day's spend to ``amount`` µUSD unless a counter exists; True if it did."""
        ...

    async def flag_ip(self, ip: str, seconds: int, *, now: float) -> None:
        """Block an IP for ``seconds`` from ``now`` (never shortening a longer block)."""
        ...


# The agent ------------------------------------------------------------------------------


class AgentLink(Protocol):
    """One open conversation socket to the voice agent (ElevenLabs Agents)."""

    async def send(self, message: str) -> None:
        """Send one text message. Raises ProviderError when the socket is closed."""
        ...

    async def recv(self) -> str | bytes | None:
        """The next message, or None once the agent closed the conversation normally.

        Raises ProviderError when the connection dropped abnormally.
        """
        ...

    async def close(self, code: int = 1000) -> None:
        """Close the socket (idempotent)."""
        ...


class AgentConnector(Protocol):
    """Opens conversation sockets to the configured agent."""

    async def open(self) -> AgentLink:
        """Open a conversation socket. Raises ProviderError when the agent can't be reached."""
        ...


# TwiML ----------------------------------------------------------------------------------


class TwimlWriter(Protocol):
    """The TwiML documents a call is given (adapters/twilio/twiml.py writes them)."""

    def consent_prompt(self, action_url: str) -> str:
        """Greeting and disclosure, then "press 1" (or 9 to opt out); hang up on silence."""
        ...

    def connect_agent(self, call_id: str, token: str, *, greet: bool) -> str:
        """Connect the call's audio to our media stream; apologise and hang up after it."""
        ...

    def dial(self, number: str, *, greet: bool, line: str | None = None) -> str:
        """Say a line, then ``<Dial>`` ``number`` with our number as caller id."""
        ...

    def say_and_hang_up(self, text: str) -> str:
        """Say ``text`` and end the call."""
        ...

    def hang_up(self) -> str:
        """End the call, saying nothing."""
        ...

    def leave_message(self, text: str, done_url: str) -> str:
        """Say ``text`` (on an answering machine, after its beep), then ask ``done_url``
        (which learns the message was said to its end) for what follows."""
        ...

    def connect_voicemail_agent(self, call_id: str, token: str) -> str:
        """Connect the call to our media stream for the agent to leave a message; then
        hang up (no apology on a stranger's machine)."""
        ...


@dataclass(frozen=True, slots=True)
class SpendChange:
    """What settling a ledger line changed: the day it is booked on and by how much (µUSD)."""

    day: int
    delta: int


@dataclass(frozen=True, slots=True)
class DaySpend:
    """A UTC day's spend from the ledger, in µUSD.

    Attributes:
        settled: calls booked at their estimate or price.
        reserved: calls still booked at their worst-case reservation.
        calls: lines on the day.
    """

    settled: int = 0
    reserved: int = 0
    calls: int = 0

    @property
    def total(self) -> int:
        """Everything booked on the day."""
        return self.settled + self.reserved


class SpendLedger(Protocol):
    """Each call's spend: reserved (written with the call), estimated, then actual."""

    async def settle(
        self, call_id: str, *, estimated: int | None, actual: int | None, at: datetime
    ) -> SpendChange | None:
        """Record a call's estimate and/or price (``None``: leave as is), atomically.

        Returns:
            How the call's booked amount changed (``delta`` 0 when nothing did), or
            ``None`` when the call has no ledger line.
        """
        ...

    async def day_spend(self, day: int) -> DaySpend:
        """The day's spend (``day``: days since the epoch, UTC)."""
        ...


class Lease(Protocol):
    """A named lease that at most one owner holds at a time, and that expires on its own.

    A periodic job that many processes run (the reconcilers) works a pass only while
    it holds the job's lease, so two processes never work the same pass at once; a
    holder that dies loses the lease when its ``ttl_s`` runs out.
    """

    async def acquire(self, name: str, owner: str, ttl_s: float) -> bool:
        """Take the lease for ``ttl_s`` seconds, or extend it if ``owner`` holds it.

        Returns:
            True if ``owner`` holds the lease now; False if another owner does.

        Raises:
            StoreError: the store failed (the caller must then act as if it lost).
        """
        ...

    async def release(self, name: str, owner: str) -> None:
        """Give the lease up, if ``owner`` holds it (otherwise nothing happens).

        Raises:
            StoreError: the store failed (the lease then expires on its own).
        """
        ...


class Heartbeats(Protocol):
    """Which process still bridges a call's media stream: a beat that expires unless renewed.

    The process that bridges a stream beats for its call every few seconds; the
    reconciler asks which in-progress calls still have a live beat, and fetches the
    rest from Twilio (their process died with the stream).
    """

    async def beat(self, call_ids: Collection[str], ttl_s: float) -> None:
        """Mark each call as bridged by a live process for the next ``ttl_s`` seconds.

        Raises:
            StoreError: the store failed.
        """
        ...

    async def alive(self, call_ids: Collection[str]) -> set[str]:
        """The calls among ``call_ids`` whose beat has not expired.

        Raises:
            StoreError: the store failed.
        """
        ...


class SlotAudit(Protocol):
    """The quota store's in-flight slots, checked against the calls that are live."""

    async def audit_slots(self, live_call_ids: Collection[str]) -> int:
        """Release slots held by calls not in ``live_call_ids``; re-hold a slot for each
        live call that holds none. Returns how many it changed."""
        ...


@dataclass(frozen=True, slots=True)
class Claimed:
    """One scheduler pass's claim: calls to place now, calls recorded ``missed``."""

    to_place: list[Call] = field(default_factory=list)
    missed: list[Call] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Pending:
    """Scheduled calls waiting: for one number, and from one requester."""

    for_number: int
    from_requester: int


class ScheduleBook(Protocol):
    """The scheduled calls in the database (call me later): claims, counts, cancels."""

    async def has_work(self, now: datetime, *, retry_since: datetime, max_attempt: int) -> bool:
        """Whether a call is due at ``now``, or a retry is wanted (as
        :meth:`retry_candidates` finds them since ``retry_since``; ``max_attempt`` 0:
        none is looked for). A pass with nothing to do stops here, cheaply."""
        ...

    async def claim_due(self, now: datetime, *, grace: timedelta, limit: int = 50) -> Claimed:
        """Claim the calls due at ``now`` once across every process: those within
        ``grace`` of their time become ``requested``, older ones ``missed``."""
        ...

    async def pending(self, e164: str, requester_hash: str | None) -> Pending:
        """How many scheduled calls wait for ``e164``, and from ``requester_hash``."""
        ...

    async def cancel(self, call_id: str, now: datetime) -> list[Call]:
        """Cancel ``call_id`` and its retries while still scheduled; return those cancelled."""
        ...

    async def retry_candidates(self, since: datetime, *, max_attempt: int) -> Sequence[Call]:
        """Busy / no-answer calls since ``since`` whose visitor asked for a retry,
        at most ``max_attempt`` attempts deep, not yet retried."""
        ...

    async def hold_spend(self, call_id: str, spend: SpendHold, at: datetime) -> None:
        """Write a claimed call's spend ledger line (a scheduled call has none until it
        is placed); a call that has one already keeps it."""
        ...

    async def no_retry(self, call_id: str) -> None:
        """Take back a call's retry wish (it is never tried again)."""
        ...

    async def upcoming(self, until: datetime | None = None, *, limit: int = 200) -> list[Call]:
        """Scheduled calls (due before ``until``, if given), soonest first."""
        ...
