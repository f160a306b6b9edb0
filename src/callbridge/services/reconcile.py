"""The reconciler: no call is left unfinished, and prices arrive even when Twilio is late.

security.md E.37: a call still not terminal ``TimeLimit`` + 5 minutes after it was
created (a process died mid-call, a callback was lost) is fetched from Twilio and
brought up to date; one that never reached Twilio (``requested`` for that long) is
recorded as failed. Twilio fills a call's price some time after it ends, so recently
completed calls without a price are fetched too. Runs at start-up and then every
``interval_s``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Protocol

import structlog

from callbridge.domain.call import Call, CallStatus
from callbridge.errors import NotFound, ProviderError
from callbridge.ports import CallStore, Clock, StatusUpdate, TelephonyProvider
from callbridge.services.lifecycle import CallLifecycle
from callbridge.tasks import cancel_and_wait

_log = structlog.get_logger(__name__)


class ReconcileReads(Protocol):
    """The reads the reconciler needs."""

    async def unfinished_before(self, before: datetime, limit: int = 200) -> Sequence[Call]:
        """Calls not terminal, created before ``before``."""
        ...

    async def unpriced_since(self, since: datetime, limit: int = 200) -> Sequence[Call]:
        """Completed calls since ``since`` without a price."""
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
        if remote.price is None:
            return 0
        priced = await self._store.update_call(
            call.id, StatusUpdate(price=remote.price, price_unit=remote.price_unit)
        )
        await self._spend.settle(priced)
        return 1

    def call_ended(self, call: Call) -> None:
        """Fetch a finished call's price shortly (Twilio bills just after the end)."""
        if call.call_sid is None or call.status is not CallStatus.COMPLETED:
            return

        async def fetch_later() -> None:
            await asyncio.sleep(self._delay_s)
            await self.fetch(call)

        task = asyncio.get_running_loop().create_task(fetch_later())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def aclose(self) -> None:
        """Drop the fetches still waiting."""
        for pending in list(self._pending):
            pending.cancel()


class Reconciler:
    """Brings stale calls and missing prices up to date from Twilio."""

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
        interval_s: float = 60.0,
    ) -> None:
        self._reads = reads
        self._store = store
        self._telephony = telephony
        self._lifecycle = lifecycle
        self._prices = prices
        self._clock = clock
        self._grace = timedelta(seconds=time_limit_s + 300)
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    async def run_once(self) -> int:
        """One pass; returns how many calls it changed."""
        now = self._clock.now()
        changed = 0
        for call in await self._reads.unfinished_before(now - self._grace):
            changed += await self._settle(call)
        for call in await self._reads.unpriced_since(now - timedelta(days=1)):
            changed += await self._prices.fetch(call)
        if changed:
            _log.info("reconciled", calls=changed)
        return changed

    async def _settle(self, call: Call) -> int:
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
        if remote.status in ("queued", "ringing", "in-progress"):
            return 0  # Twilio still has it live; TimeLimit will end it
        params = {"CallSid": call.call_sid, "CallStatus": remote.status}
        if remote.duration is not None:
            params["CallDuration"] = str(remote.duration)
        await self._lifecycle.apply_status(params)
        await self._prices.fetch(call)
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

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
            except ProviderError as exc:  # pragma: no cover - logged and retried next pass
                _log.warning("reconcile_failed", error=exc.message)
            await asyncio.sleep(self._interval_s)

    def start(self) -> None:
        """Run in the background until :meth:`aclose`."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def aclose(self) -> None:
        """Stop the background loop and the price fetches still waiting."""
        await self._prices.aclose()
        task, self._task = self._task, None
        await cancel_and_wait(task)
