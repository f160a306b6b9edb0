"""The reconciler: no call is left unfinished, and prices arrive even when Twilio is late.

It is the safety net under every other path, so it never stops: a pass that fails
(database, Redis or Twilio down) is logged, counted and retried later, backing off
(:func:`~callbridge.tasks.run_forever`). Each pass runs only while this process holds
the job's lease (:class:`~callbridge.services.job_lease.JobLease`), so of several
processes on one database only one works a given pass. A pass:

- **stranded calls**: a call in progress whose media stream started, with no live
  stream heartbeat (:class:`~callbridge.ports.Heartbeats`; the bridging process
  renews it every few seconds) and no activity for ``stranded_grace_s``, lost the
  process that bridged it. It is fetched from Twilio at once, so a call whose process
  was killed is settled within about a minute of its real end;
- **stale calls** (security.md E.37): a call still not terminal ``TimeLimit`` + 5
  minutes after it was created (a callback was lost, or it never streamed) is fetched
  from Twilio and brought up to date; one that never reached Twilio (no CallSid) is
  recorded as failed;
- **prices**: Twilio fills a call's price some time after it ends, so recently
  completed calls without a price are fetched (at most every ``price_interval_s``:
  the passes come often, and a call Twilio never prices would be asked about each time);
- **slots**: the admission's concurrency slots are audited against the calls live in
  the database (:class:`~callbridge.ports.SlotAudit`), when one is given;
- **spend**: an ended call of the last day whose spend ledger line is short of what its
  row knows (never settled, or priced while the line has no price: the settlement
  failed after the price was stored, so the price sweep no longer sees the call) is
  settled again through the lifecycle's idempotent path. A failure there does not stop
  the sweep; the first one is raised at its end, so the pass is counted as failed.

A settled call's end time, duration and price are Twilio's (the Call resource's
``end_time``, ``duration``, ``price``), not the time the pass ran.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Sequence
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Protocol

import structlog

from callbridge.domain.call import Call, CallStatus
from callbridge.errors import NotFound, ProviderError, StoreError
from callbridge.ports import (
    CallStore,
    Clock,
    Heartbeats,
    ProviderCall,
    SlotAudit,
    StatusUpdate,
    TelephonyProvider,
)
from callbridge.services.job_lease import JobLease
from callbridge.services.lifecycle import CallLifecycle
from callbridge.tasks import ErrorCounter, cancel_and_wait, run_forever

_log = structlog.get_logger(__name__)

_TWILIO_LIVE = frozenset({"queued", "initiated", "ringing", "in-progress"})


class ReconcileReads(Protocol):
    """The reads the reconciler needs."""

    async def unfinished_before(self, before: datetime, limit: int = 200) -> Sequence[Call]:
        """Calls not terminal, created before ``before``."""
        ...

    async def unpriced_since(self, since: datetime, limit: int = 200) -> Sequence[Call]:
        """Completed calls since ``since`` without a price."""
        ...

    async def unsettled_since(self, since: datetime, limit: int = 200) -> Sequence[Call]:
        """Ended calls since ``since`` whose spend ledger line is short of the call's truth."""
        ...

    async def streamed_idle_since(self, before: datetime, limit: int = 200) -> Sequence[Call]:
        """Calls in progress whose stream started, with no activity since ``before``."""
        ...

    async def live_call_ids(self) -> Collection[str]:
        """The ids of every call not in a terminal status."""
        ...


class SpendSettlement(Protocol):
    """Books an ended call's spend at the truth stored (the admission)."""

    async def settle(self, call: Call) -> None:
        """Book ``call``'s spend at its price, else its estimate; free its slots."""
        ...


class Prices:
    """Fetches a finished call's price from Twilio, stores it and settles the call's spend.

    Built before the lifecycle, which tells it (as its
    :class:`~callbridge.ports.CallEndedObserver`) when a call ends; the
    :class:`Reconciler` uses it for the calls whose price is still missing.
    """

    def __init__(
        self,
        *,
        store: CallStore,
        telephony: TelephonyProvider,
        spend: SpendSettlement,
        delay_s: float = 2.0,
    ) -> None:
        self._store = store
        self._telephony = telephony
        self._spend = spend
        self._delay_s = delay_s
        self._pending: set[asyncio.Task[None]] = set()

    async def fetch(self, call: Call) -> int:
        """Store ``call``'s price if Twilio has it; returns how many calls it changed."""
        if call.call_sid is None:
            return 0
        try:
            remote = await self._telephony.fetch_call(call.call_sid)
        except (NotFound, ProviderError):
            return 0
        return await self.record(call, remote)

    async def record(self, call: Call, remote: ProviderCall) -> int:
        """Store the price of Twilio's record ``remote`` of ``call``, if it has one."""
        if remote.price is None:
            return 0
        priced = await self._store.update_call(
            call.id, StatusUpdate(price=remote.price, price_unit=remote.price_unit)
        )
        await self._spend.settle(priced)
        return 1

    def call_ended(self, call: Call) -> None:
        """Fetch a finished call's price shortly (Twilio bills just after the end)."""
        if call.call_sid is None or call.status not in (
            CallStatus.COMPLETED,
            CallStatus.VOICEMAIL,  # a machine's minutes are billed too
        ):
            return

        async def fetch_later() -> None:
            await asyncio.sleep(self._delay_s)
            try:
                await self.fetch(call)
            except Exception as exc:  # the reconciler's pass fetches it later
                _log.warning("price_fetch_failed", call_id=call.id, error_type=type(exc).__name__)

        task = asyncio.get_running_loop().create_task(fetch_later())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def aclose(self) -> None:
        """Drop the fetches still waiting."""
        for pending in list(self._pending):
            pending.cancel()


class Reconciler:
    """Brings stranded and stale calls and missing prices up to date from Twilio.

    Args:
        reads: the reconciler's queries.
        store: the call store.
        telephony: Twilio's Calls resource.
        lifecycle: the status-callback path (a settled call goes through it).
        prices: the price fetches (shared with the lifecycle's end-of-call observer).
        clock: the clock.
        time_limit_s: the calls' ``TimeLimit`` (a call older than it + 5 min is stale).
        interval_s: seconds between passes.
        lease: the job's lease (None: this process alone works the passes).
        heartbeats: the stream owners' heartbeats (None: only the stale rule applies).
        stranded_grace_s: how long a streamed call without a heartbeat must have been
            quiet before it is fetched (covers a stream that just started).
        slots: the admission's slot audit, run each pass with the live calls' ids.
        errors: where failed passes are counted.
        backoff_cap_s: the longest wait after failed passes in a row.
        price_interval_s: the least time between two sweeps for missing prices.
    """

    def __init__(
        self,
        *,
        reads: ReconcileReads,
        store: CallStore,
        telephony: TelephonyProvider,
        lifecycle: CallLifecycle,
        prices: Prices,
        clock: Clock,
        time_limit_s: int,
        interval_s: float = 15.0,
        lease: JobLease | None = None,
        heartbeats: Heartbeats | None = None,
        stranded_grace_s: float = 45.0,
        slots: SlotAudit | None = None,
        errors: ErrorCounter | None = None,
        backoff_cap_s: float = 300.0,
        price_interval_s: float = 60.0,
    ) -> None:
        self._reads = reads
        self._store = store
        self._telephony = telephony
        self._lifecycle = lifecycle
        self._prices = prices
        self._clock = clock
        self._grace = timedelta(seconds=time_limit_s + 300)
        self._interval_s = interval_s
        self._lease = lease
        self._heartbeats = heartbeats
        self._stranded_grace = timedelta(seconds=stranded_grace_s)
        self._slots = slots
        self._errors = errors
        self._backoff_cap_s = backoff_cap_s
        self._price_interval_s = price_interval_s
        self._priced_at: float | None = None
        self._task: asyncio.Task[None] | None = None

    async def run_once(self) -> int:
        """One pass, if this process holds the lease; returns how many calls it changed.

        Raises:
            StoreError: the database or the lease's store failed (the pass stops).
        """
        if self._lease is not None and not await self._lease.hold():
            return 0
        try:
            changed = await self._pass()
        finally:
            if self._lease is not None:
                await self._lease.let_go()
        if changed:
            _log.info("reconciled", calls=changed)
        return changed

    async def _pass(self) -> int:
        now = self._clock.now()
        changed = 0
        seen: set[str] = set()
        for call in await self._stranded(now):
            seen.add(call.id)
            if not await self._still_ours():
                return changed
            changed += await self._settle(call, stranded=True)
        for call in await self._reads.unfinished_before(now - self._grace):
            if call.id in seen:
                continue
            if not await self._still_ours():
                return changed
            changed += await self._settle(call)
        await self._audit_slots()
        if self._prices_due():
            for call in await self._reads.unpriced_since(now - timedelta(days=1)):
                if not await self._still_ours():
                    return changed
                changed += await self._prices.fetch(call)
            self._priced_at = self._clock.monotonic()
        return changed + await self._settle_spend(now)

    async def _settle_spend(self, now: datetime) -> int:
        """Settle again the ended calls whose ledger line is short of their row's truth."""
        settled = 0
        failed: StoreError | None = None
        for call in await self._reads.unsettled_since(now - timedelta(days=1)):
            if not await self._still_ours():
                break
            try:
                await self._lifecycle.settle_spend(call)
            except StoreError as exc:
                _log.warning("spend_settle_failed", call_id=call.id, error_type=type(exc).__name__)
                failed = failed or exc
            else:
                settled += 1
        if settled:
            _log.info("spend_resettled", calls=settled)
        if failed is not None:
            raise failed
        return settled

    def _prices_due(self) -> bool:
        last = self._priced_at
        return last is None or self._clock.monotonic() - last >= self._price_interval_s

    async def _still_ours(self) -> bool:
        """Renew the lease before the next call (a long pass must not outlive it)."""
        return self._lease is None or await self._lease.hold()

    async def _stranded(self, now: datetime) -> list[Call]:
        """Streamed calls in progress whose bridging process stopped beating."""
        if self._heartbeats is None:
            return []
        quiet = await self._reads.streamed_idle_since(now - self._stranded_grace)
        if not quiet:
            return []
        alive = await self._heartbeats.alive([call.id for call in quiet])
        return [call for call in quiet if call.id not in alive]

    async def _audit_slots(self) -> None:
        """Hand the live calls to the slot audit (it frees slots of calls that ended)."""
        if self._slots is None:
            return
        released = await self._slots.audit_slots(await self._reads.live_call_ids())
        if released:
            _log.info("slots_audited", released=released)

    async def _settle(self, call: Call, *, stranded: bool = False) -> int:
        if call.call_sid is None:
            await self._fail(
                call, "interrupted", "The call could not be placed. (interrupted before Twilio)"
            )
            return 1
        try:
            remote = await self._telephony.fetch_call(call.call_sid)
        except NotFound:
            await self._fail(
                call, "lost", "The call's outcome is unknown. (Twilio has no such call)"
            )
            return 1
        except ProviderError as exc:
            _log.warning("reconcile_fetch_failed", call_id=call.id, error=exc.message)
            return 0
        if remote.status in _TWILIO_LIVE:
            return 0  # Twilio still has it live; its final callback or TimeLimit ends it
        await self._lifecycle.apply_status(_status_params(call.call_sid, remote))
        if stranded:
            _log.info("stranded_call_settled", call_id=call.id, status=remote.status)
        await self._prices.record(call, remote)
        return 1

    async def _fail(self, call: Call, code: str, reason: str) -> None:
        failed = await self._store.update_call(
            call.id,
            StatusUpdate(
                status=CallStatus.FAILED,
                failure_code=code,
                failure_reason=reason,
                ended_at=self._clock.now(),
            ),
        )
        await self._lifecycle.settle_spend(failed)

    def start(self) -> None:
        """Run in the background until :meth:`aclose`, surviving every error."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                run_forever(
                    "reconciler",
                    self.run_once,
                    interval_s=self._interval_s,
                    backoff_cap_s=self._backoff_cap_s,
                    errors=self._errors,
                ),
                name="callbridge-reconciler",
            )

    @property
    def running(self) -> bool:
        """Whether the background loop is running."""
        return self._task is not None and not self._task.done()

    async def aclose(self) -> None:
        """Stop the background loop and the price fetches still waiting."""
        await self._prices.aclose()
        task, self._task = self._task, None
        await cancel_and_wait(task)


def _status_params(call_sid: str, remote: ProviderCall) -> dict[str, str]:
    """Twilio's record of an ended call as its final status callback would carry it.

    ``Timestamp`` is the call's ``end_time`` (RFC 2822, as Twilio writes it), so the
    lifecycle stores Twilio's end and not the time of this pass. Twilio documents
    ``end_time`` as empty for a call that did not complete successfully; then the start
    plus the duration is the end, and failing that our clock is (the lifecycle's rule
    for a callback without ``Timestamp``).
    """
    params = {"CallSid": call_sid, "CallStatus": remote.status}
    if remote.duration is not None:
        params["CallDuration"] = str(remote.duration)
    end = remote.end_time
    if end is None and remote.start_time is not None and remote.duration is not None:
        end = remote.start_time + timedelta(seconds=remote.duration)
    if end is not None:
        params["Timestamp"] = format_datetime(end.astimezone(UTC), usegmt=True)
    if remote.answered_by:
        params["AnsweredBy"] = remote.answered_by
    return params
