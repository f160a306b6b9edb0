"""The abuse policy's door for call requests: number policy, quiet hours, do-not-call, quotas.

Order matters and is the promise of security.md: the number is screened (E.164,
country, type, short codes, emergency) and checked against quiet hours and the
do-not-call list before any quota is spent; quotas are reserved atomically (in
process, or in Redis shared by every process) before anything is recorded; the
slots are released when the call ends. A do-not-call refusal looks exactly like a
per-number quota refusal, so nobody can learn who opted out: it is decided by the
quota store as a per-number rule, after the requester's own limits, and counts as
a request for that number (security.md 9, 14, 20). A tripped kill switch refuses
every request first (security.md 13).

Quota state that any process can settle, and that heals itself:

- A call's in-flight slot belongs to the call: :meth:`PolicyAdmission.bind` holds it in
  the quota store under the call id until the call's time limit (plus ring time and a
  margin), so whichever process learns that the call ended releases it, and a slot
  nobody releases frees itself.
- Spend is settled to the truth through the spend ledger (a database table written
  with the call): :meth:`PolicyAdmission.settle` books an ended call at its estimate,
  then at Twilio's price, and moves the quota store's day counter by the difference.
- The database is the truth, the quota store a fast copy. When the store has lost
  today's counter (Redis flushed or restarted without persistence, or this process
  restarted with the in-memory store), the next admission rebuilds it from the ledger
  before reserving; :meth:`PolicyAdmission.audit_slots` (run by the reconciler) frees
  slots of calls that are over and re-holds slots of live calls that lost theirs.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import replace
from datetime import datetime
from typing import Protocol

import structlog

from callbridge.domain.call import Call
from callbridge.domain.phone import PhoneNumber, normalise
from callbridge.domain.policy import NumberPolicy, QuietHours
from callbridge.domain.privacy import mask_number
from callbridge.domain.quotas import (
    DAY,
    QuotaLimits,
    QuotaRequest,
    Reservation,
    hashed,
    number_range,
    number_unavailable,
)
from callbridge.domain.spend import (
    WorstRates,
    cents_to_micros,
    estimate_micros,
    price_micros,
)
from callbridge.errors import (
    CallbridgeError,
    InvalidNumber,
    PolicyRejected,
    SpendUnknown,
    StoreError,
)
from callbridge.metrics import Metrics
from callbridge.ports import (
    Clock,
    DaySpend,
    QuotaStore,
    RefusalRecorder,
    SpendHold,
    SpendLedger,
)
from callbridge.services.alerts import Alerts
from callbridge.services.killswitch import KillSwitch
from callbridge.services.placing import Admitted
from callbridge.services.tokens import keyed_hash
from callbridge.settings import Settings

_log = structlog.get_logger(__name__)


class DoNotCallList(Protocol):
    """Numbers (as keyed hashes) that asked never to be called again."""

    async def is_do_not_call(self, number_hash: str) -> bool:
        """Whether the hashed number is on the list."""
        ...

    async def add_do_not_call(self, number_hash: str, masked: str, source: str) -> None:
        """Put the hashed number on the list."""
        ...


class CallReader(Protocol):
    """The one read the slot audit needs."""

    async def get_call(self, call_id: str) -> Call | None:
        """A call by our id."""
        ...


#: A slot held this recently is never released by the audit: its call may not be in the
#: caller's list of live calls yet (the call's row is written just after the hold).
AUDIT_GRACE_S = 60.0


class PolicyAdmission:
    """Implements :class:`callbridge.services.placing.Admission` and
    :class:`callbridge.ports.SlotAudit`.

    Args:
        slot_ttl_s: how long a call's slot lives if nobody releases it, from the call's
            creation: its time limit, ring timeout and a margin.
        ledger: the spend ledger (settling and rebuilding).
        calls: reads calls (the audit re-holds a live call's slot from its row).
        rates: the worst per-minute rate of each destination (for estimates).
    """

    def __init__(
        self,
        *,
        numbers: NumberPolicy,
        quiet_hours: QuietHours | None,
        limits: QuotaLimits,
        quotas: QuotaStore,
        dnc: DoNotCallList,
        key: bytes,
        default_region: str,
        clock: Clock,
        ledger: SpendLedger,
        calls: CallReader,
        slot_ttl_s: int,
        rates: WorstRates | None = None,
        metrics: Metrics | None = None,
        killswitch: KillSwitch | None = None,
        alerts: Alerts | None = None,
        refusals: RefusalRecorder | None = None,
    ) -> None:
        self._numbers = numbers
        self.quiet_hours = quiet_hours
        self.limits = limits
        self._quotas = quotas
        self._dnc = dnc
        self._key = key
        self._region = default_region
        self._clock = clock
        self.metrics = metrics
        self.killswitch = killswitch
        self.alerts = alerts
        self.refusals = refusals
        self._ledger = ledger
        self._calls = calls
        self._slot_ttl_s = slot_ttl_s
        self._rates = rates or WorstRates(default_cents=limits.max_rate_cents_per_minute)
        #: The day counter and the ledger's day as the previous audit saw them.
        self._spend_seen: tuple[int, int, DaySpend] | None = None

    async def admit(self, raw_number: str, client_ip: str | None) -> Admitted:
        """Screen the number and reserve its quotas.

        Raises:
            InvalidNumber: not a valid phone number.
            PolicyRejected: refused by the kill switch, the number policy, quiet hours,
                the do-not-call list or a quota.
        """
        number = None
        try:
            if self.killswitch is not None:
                await self.killswitch.check()
            number = self._numbers.screen(raw_number, self._region)
            if self.quiet_hours is not None:
                self.quiet_hours.check(number, self._clock.now())
            opted_out = await self._dnc.is_do_not_call(hashed(number.e164, self._key))
            request = QuotaRequest.for_number(
                number, client_ip or "unknown", self._key, do_not_call=opted_out
            )
            now = time.time()
            try:
                reservation = await self._quotas.reserve(
                    request, self.limits, now, require_spend=True
                )
            except SpendUnknown:
                await self._restore_spend(int(now // DAY))
                reservation = await self._quotas.reserve(
                    request, self.limits, now, require_spend=True
                )
        except PolicyRejected as exc:
            await self._refused(exc, number)
            raise
        return Admitted(
            e164=number.e164,
            client_ip_hash=keyed_hash(self._key, client_ip) if client_ip else None,
            reservation=reservation,
            spend=SpendHold(
                day=reservation.spend_day,
                country_code=str(number.country_code),
                reserved_micros=cents_to_micros(reservation.reserved_cents),
            ),
        )

    async def admit_later(self, raw_number: str, client_ip: str | None, at: datetime) -> Admitted:
        """Screen the number for a call at ``at``; reserve nothing (quotas count when
        the call is placed, where :meth:`admit` runs again).

        Raises:
            InvalidNumber: not a valid phone number.
            PolicyRejected: refused by the kill switch, the number policy, quiet hours at
                ``at`` (OutsideCallingHours, with the next allowed times) or the
                do-not-call list (which looks like any per-number refusal).
        """
        number = None
        try:
            if self.killswitch is not None:
                await self.killswitch.check()
            number = self._numbers.screen(raw_number, self._region)
            if self.quiet_hours is not None:
                self.quiet_hours.check(number, self._clock.now(), at=at)
            if await self._dnc.is_do_not_call(hashed(number.e164, self._key)):
                raise number_unavailable("do_not_call", self.limits)
        except PolicyRejected as exc:
            await self._refused(exc, number)
            raise
        return Admitted(
            e164=number.e164,
            client_ip_hash=keyed_hash(self._key, client_ip) if client_ip else None,
        )

    def earliest_allowed(self, e164: str, after: datetime) -> datetime:
        """The first time at or after ``after`` that the callee's quiet hours allow (a
        retry due at 21:05 waits for the morning rather than being refused then)."""
        if self.quiet_hours is None:
            return after
        try:
            number = self._numbers.screen(e164, self._region)
        except CallbridgeError:
            return after  # refused with its reason when it is placed
        slots = self.quiet_hours.next_allowed(number, after, 1)
        return slots[0].utc if slots else after

    async def _refused(self, exc: PolicyRejected, number: PhoneNumber | None) -> None:
        if self.metrics is not None:
            self.metrics.policy_refusals.labels(reason=exc.reason).inc()
        _log.info("call_refused", reason=exc.reason)
        if self.alerts is not None and number is not None:
            _alert_refusal(self.alerts, exc.reason, number)
        if self.refusals is not None:
            await self.refusals.record_refusal(
                exc.reason,
                number_hash=hashed(number.e164, self._key) if number is not None else None,
            )

    async def bind(self, admitted: Admitted, call_id: str) -> None:
        """Make the admission's in-flight slots ``call_id``'s, in the shared quota store."""
        reservation = admitted.reservation
        if isinstance(reservation, Reservation):
            now = time.time()
            await self._quotas.hold(
                call_id,
                reservation.number_key,
                until=now + self._slot_ttl_s,
                now=now,
                reservation_id=reservation.id,
            )

    async def abandon(self, admitted: Admitted, call_id: str) -> None:
        """Undo an admission whose call was never recorded: free its slots, refund its spend."""
        await self.release(call_id)
        if admitted.spend is not None:
            await self._quotas.adjust_spend(admitted.spend.day, -admitted.spend.reserved_micros)

    async def release(self, call_id: str) -> bool:
        """Free a call's slots, from any process (idempotent; unknown ids are ignored)."""
        return await self._quotas.release(call_id, now=time.time())

    async def settle(self, call: Call) -> None:
        """Book an ended call's spend at the truth known now, and free its slots.

        The amount comes from the stored call: Twilio's price if it has one, else the
        estimate from its duration (0 for a call that never connected), and the ledger
        keeps the reservation until the call ends. The quota store's day counter moves by
        the difference from what was booked before, after the ledger is committed (a crash
        in between leaves the counter high, never low, until the audit heals it). Settling
        the same call twice changes nothing. A call not yet over is left alone.

        The slots are freed first, but a quota store that fails there does not stop the
        ledger from settling (the slot expires on its own and the audit frees it); the
        failure is raised afterwards, so the caller's job counts it.

        Raises:
            StoreError: the database, or the quota store (freeing the slot or moving the
                counter), failed.
        """
        if not call.status.is_terminal:
            return
        try:
            await self.release(call.id)
        except StoreError as exc:
            # The ledger is settled all the same: the slot expires on its own and the
            # audit frees it, while a price left at its estimate would stay there.
            release_failed: StoreError | None = exc
        else:
            release_failed = None
        change = await self._ledger.settle(
            call.id,
            estimated=estimate_micros(
                _billed_seconds(call), self._country_of(call.dialled_number), self._rates
            ),
            actual=price_micros(call.price, call.price_unit),
            at=self._clock.now(),
        )
        if change is not None and change.delta:
            await self._quotas.adjust_spend(change.day, change.delta)
        if release_failed is not None:
            raise release_failed

    async def audit_slots(self, live_call_ids: Collection[str]) -> int:
        """Release slots held by calls not in ``live_call_ids``; re-hold a slot for each live call that holds none. Returns how many it changed.

        A slot held within :data:`AUDIT_GRACE_S` is kept (its call may be too new for
        the list). A live call is re-held from its row, until its creation plus the slot
        lifetime; one past that is left to the reconciler. Today's spend counter is
        rebuilt from the ledger too, should the quota store have lost it, and healed when
        it drifted from it (:meth:`_heal_spend`).
        """  # noqa: E501 - the first line is the agreed docstring of SlotAudit
        now = time.time()
        live = set(live_call_ids)
        held = await self._quotas.held(now)
        changed = 0
        for call_id, held_at in held.items():
            if call_id not in live and held_at <= now - AUDIT_GRACE_S:
                changed += await self._quotas.release(call_id, now=now)
        for call_id in live.difference(held):
            call = await self._calls.get_call(call_id)
            if call is None or call.status.is_terminal:
                continue
            until = call.created_at.timestamp() + self._slot_ttl_s
            if until <= now:
                continue
            changed += await self._quotas.hold(
                call_id,
                hashed(call.to_number, self._key),
                until=until,
                now=now,
                only_if_missing=True,
            )
        if changed:
            _log.info("slots_audited", changed=changed, held=len(held), live=len(live))
        day = int(now // DAY)
        await self._restore_spend(day)
        await self._heal_spend(day)
        return changed

    async def spend_today(self) -> DaySpend:
        """Today's spend from the ledger (settled, and still reserved), in µUSD."""
        return await self._ledger.day_spend(int(time.time() // DAY))

    async def _restore_spend(self, day: int) -> None:
        """Rebuild the quota store's counter for ``day`` from the ledger, if it has none."""
        if await self._quotas.spend(day) is not None:
            return
        total = (await self._ledger.day_spend(day)).total
        if await self._quotas.restore_spend(day, total):
            # Normal at a day's first call and after a restart with the in-memory store;
            # with Redis at any other time it means Redis lost its data.
            _log.info("spend_counter_rebuilt", day=day, micros=total)

    async def _heal_spend(self, day: int) -> None:
        """Bring the quota store's day counter back to the ledger's total once it drifted.

        The counter is moved apart from the ledger's commits, so it can drift: a Redis
        failure after the ledger settled a call (the counter keeps the old amount, and
        settling again finds nothing to move), or a process dying between a reservation
        and its call's row. The ledger is the truth, so the counter is corrected to it.

        A difference alone proves nothing: a reservation is in the counter a few
        milliseconds before its ledger line commits, and a settlement in the ledger a few
        milliseconds before the counter moves. So the counter is corrected only when two
        audits in a row (a reconciler pass apart) saw the very same counter *and* the very
        same ledger day (settled, reserved, line count), differing: whatever was in flight
        at the first look would have changed one of them by the second. The correction is
        an increment by the drift (never a plain write), so a reservation made meanwhile is
        kept; the counter never goes below 0.

        Limits: while the day's spend changes between every two passes (constant traffic)
        the heal waits for the first quiet interval; an operation stalled for a whole pass
        between the counter and the ledger (a hung process) is taken for drift, and the
        drift it then leaves when it completes is healed in turn. Only today's counter is
        healed (yesterday's no longer admits anything). The previous look is this object's,
        so after the reconciler's lease moves to another process it takes two passes there.
        """
        counter = await self._quotas.spend(day)
        if counter is None:
            self._spend_seen = None
            return
        ledger = await self._ledger.day_spend(day)
        seen = (day, counter, ledger)
        previous, self._spend_seen = self._spend_seen, seen
        drift = counter - ledger.total
        if drift == 0 or previous != seen:
            return
        await self._quotas.adjust_spend(day, -min(drift, counter))
        self._spend_seen = None
        _log.warning("spend_counter_healed", day=day, drift_micros=drift, micros=ledger.total)

    def _country_of(self, e164: str) -> str:
        try:
            return str(normalise(e164, self._region).country_code)
        except InvalidNumber:
            return ""  # estimated at the default (highest) rate

    async def add_do_not_call(self, e164: str) -> None:
        """Put a number on the do-not-call list (the callee pressed 9, or the operator)."""
        await self._dnc.add_do_not_call(hashed(e164, self._key), mask_number(e164), "callee")


def _billed_seconds(call: Call) -> int | None:
    """How long Twilio bills the call for: its duration, else answer to end, else 0."""
    if call.duration_s is not None:
        return call.duration_s
    if call.answered_at is not None and call.ended_at is not None:
        return max(0, round((call.ended_at - call.answered_at).total_seconds()))
    return 0


def _alert_refusal(alerts: Alerts, reason: str, number: PhoneNumber) -> None:
    """Alert on the refusals a person should look at: spend and destination spikes."""
    code = f"+{number.country_code}"
    if reason == "spend_cap":
        alerts.raise_alert("spend_cap", "The daily spend cap is reached: calls are refused.")
    elif reason == "country_daily":
        alerts.raise_alert(
            "country_daily", f"Calls to {code} reached their daily limit.", country_code=code
        )
    elif reason == "prefix_daily":
        # The range without its last four digits is shown, never a whole number.
        block = number_range(number.e164) + "xxxx"
        alerts.raise_alert(
            "prefix_daily", f"Calls into {block} reached their daily limit.", number_range=block
        )


def relaxed_for_sandbox(limits: QuotaLimits) -> QuotaLimits:
    """Sandbox defaults: a person trying the demo may call the same number again at once."""
    return replace(
        limits,
        per_number_hourly=max(limits.per_number_hourly, 60),
        per_number_daily=max(limits.per_number_daily, 500),
        per_number_cooldown_s=1,
        per_ip_hourly=max(limits.per_ip_hourly, 600),
        per_ip_block_hourly=max(limits.per_ip_block_hourly, 600),
        distinct_numbers_per_ip_daily=max(limits.distinct_numbers_per_ip_daily, 100),
        per_country_daily=max(limits.per_country_daily, 5000),
        per_prefix_daily=max(limits.per_prefix_daily, 500),
    )


#: The settings :func:`relaxed_for_sandbox` relaxes; setting any of them keeps them all.
SANDBOX_RELAXED_SETTINGS = frozenset(
    {
        "per_number_hourly",
        "per_number_daily",
        "per_number_cooldown",
        "per_ip_hourly",
        "per_ip_block_hourly",
        "distinct_numbers_per_ip_daily",
        "per_country_daily",
        "per_prefix_daily",
    }
)


def limits_in_force(settings: Settings, *, sandbox: bool) -> QuotaLimits:
    """The quota limits admission enforces: the settings', relaxed in the sandbox unless
    the operator set one of the per-number or per-IP limits. The one place both the
    policy (:func:`callbridge.bootstrap.build`) and the settings page read them from."""
    limits = QuotaLimits(
        per_number_hourly=settings.per_number_hourly,
        per_number_daily=settings.per_number_daily,
        per_number_cooldown_s=max(1, settings.per_number_cooldown),
        per_ip_hourly=settings.per_ip_hourly,
        per_ip_block_hourly=settings.per_ip_block_hourly,
        distinct_numbers_per_ip_daily=settings.distinct_numbers_per_ip_daily,
        per_country_daily=settings.per_country_daily,
        per_prefix_daily=settings.per_prefix_daily,
        max_concurrent_calls=settings.max_concurrent_calls,
        daily_spend_cap_cents=settings.daily_spend_cap_cents,
        time_limit_minutes=max(1, -(-settings.time_limit // 60)),
        max_rate_cents_per_minute=settings.max_rate_cents_per_minute,
    )
    if sandbox and not SANDBOX_RELAXED_SETTINGS & settings.model_fields_set:
        limits = relaxed_for_sandbox(limits)
    return limits
