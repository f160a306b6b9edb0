"""The scheduler: places call-me-later calls at their time, and retries the unanswered.

One pass (:meth:`Scheduler.run_due`) does three things, each safe with any number of
processes running passes on one database:

1. **Claim** the calls due now (:meth:`~callbridge.ports.ScheduleBook.claim_due`: once,
   across every process). One still within ``grace`` of its time is placed through
   :meth:`~callbridge.services.placing.PlacingService.place_claimed`, which runs the
   policy again (a number put on the do-not-call list in between is never dialled).
   One later than that (every process was down) is recorded ``missed`` and the
   visitor's page is told.
2. **Retry** the calls that ended ``busy`` or ``no-answer`` whose visitor asked for it:
   a new call, linked to the first, ``retry_after`` after the end, at most
   ``retry_max`` times. Never after a decline (see :func:`declined`), and never to a
   number that opted out since (the policy refuses it when the retry is placed).
3. Nothing else: the clock is injected (:class:`~callbridge.ports.Clock`), so tests
   run passes at any instant without waiting.

A pass first asks, in one cheap query (:meth:`~callbridge.ports.ScheduleBook.has_work`),
whether anything is due or wants a retry, and stops there when not: that idle pass runs
every few seconds in every control process, on the loop that also pumps the media in
``--role all`` (issue 12).

The background loop runs a pass every ``poll_s`` seconds and survives every error: it
logs it, counts it (``callbridge_job_errors_total{job="scheduler"}``) and backs off
(doubling, up to a minute) before the next pass.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog

from callbridge.domain.call import Call
from callbridge.errors import StoreError
from callbridge.metrics import Metrics
from callbridge.ports import CallEvent, CallStore, Clock, EventBus, ScheduleBook
from callbridge.services.lifecycle import public_event
from callbridge.services.placing import PlacingService
from callbridge.tasks import cancel_and_wait, run_forever

_log = structlog.get_logger(__name__)

#: How far back a busy / no-answer call is still retried.
_RETRY_WINDOW = timedelta(days=1)

#: SIP 603 Decline: the callee pressed "decline". Twilio reports it as ``busy`` (its
#: docs: "busy — the caller received a busy signal"; a declined mobile call gives a
#: busy or a no-answer depending on the carrier) and puts the SIP code in the completed
#: callback's ``SipResponseCode``, which the sandbox's ``reject`` callee sends too.
#: Unconfirmed: whether every carrier's decline reaches Twilio as 603 (some send 486
#: Busy Here, which is indistinguishable from a busy line). The rule, then: a 603 (or
#: 600 Busy Everywhere, which phones also send for "decline") is a decline and never
#: retried; a busy or no-answer with any other code, or none, is retried.
DECLINE_SIP_CODES = frozenset({"600", "603"})


def declined(events: Sequence[CallEvent]) -> bool:
    """Whether a call's timeline shows that the callee declined it (SIP 600/603)."""
    return any(
        event.source == "twilio" and str(event.detail.get("SipResponseCode")) in DECLINE_SIP_CODES
        for event in events
    )


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    """How the scheduler runs."""

    grace: timedelta = timedelta(minutes=15)
    retry_max: int = 1
    poll_s: float = 5.0
    max_backoff_s: float = 60.0


@dataclass(frozen=True, slots=True)
class SchedulerPass:
    """What one pass did."""

    placed: int = 0
    refused: int = 0
    missed: int = 0
    retries: int = 0


class Scheduler:
    """Places due scheduled calls and records retries; one pass or a background loop."""

    def __init__(
        self,
        *,
        config: SchedulerConfig,
        book: ScheduleBook,
        placing: PlacingService,
        store: CallStore,
        events: EventBus,
        clock: Clock,
        metrics: Metrics | None = None,
        draining: Callable[[], bool] | None = None,
    ) -> None:
        self._config = config
        self._draining = draining
        self._book = book
        self._placing = placing
        self._store = store
        self._events = events
        self._clock = clock
        self._metrics = metrics
        self._task: asyncio.Task[None] | None = None

    async def run_due(self, now: datetime | None = None) -> SchedulerPass:
        """One pass at ``now`` (the clock's time by default).

        A draining process (SIGTERM) claims nothing: the other processes, or this one's
        successor within the grace window, place the due calls.
        """
        if self._draining is not None and self._draining():
            return SchedulerPass()
        now = now or self._clock.now()
        if not await self._book.has_work(
            now, retry_since=now - _RETRY_WINDOW, max_attempt=self._config.retry_max
        ):
            return SchedulerPass()
        claimed = await self._book.claim_due(now, grace=self._config.grace)
        for call in claimed.missed:
            await self._missed(call, now)
        placed = refused = 0
        for call in claimed.to_place:
            if await self._placing.place_claimed(call):
                placed += 1
            else:
                refused += 1
        retries = await self._retries(now)
        result = SchedulerPass(placed, refused, len(claimed.missed), retries)
        if result != SchedulerPass():
            _log.info("scheduler_pass", **_counts(result))
        return result

    async def _missed(self, call: Call, now: datetime) -> None:
        assert call.scheduled_for is not None
        late_s = int((now - call.scheduled_for).total_seconds())
        if self._metrics is not None:
            self._metrics.scheduled_calls.labels(event="missed").inc()
        await self._event(call, "missed", {"late_s": late_s})
        _log.warning("scheduled_call_missed", call_id=call.id, late_s=late_s)

    async def _retries(self, now: datetime) -> int:
        if self._config.retry_max < 1:
            return 0
        made = 0
        candidates = await self._book.retry_candidates(
            now - _RETRY_WINDOW, max_attempt=self._config.retry_max
        )
        for call in candidates:
            if declined(await self._store.events(call.id)):
                await self._book.no_retry(call.id)
                await self._event(call, "retry_skipped", {"why": "declined"}, publish=False)
                continue
            if await self._placing.schedule_retry(call) is not None:
                made += 1
        return made

    async def _event(
        self, call: Call, status: str, detail: Mapping[str, Any], *, publish: bool = True
    ) -> None:
        now = self._clock.now()
        await self._store.add_event(
            CallEvent(call_id=call.id, source="scheduler", status=status, at=now, detail=detail)
        )
        if publish:
            try:
                await self._events.publish(call.id, public_event(call, now))
            except StoreError as exc:
                _log.warning("live_event_not_published", status=status, error=exc.message)

    async def cancel(self, call_id: str, *, by: str) -> list[Call]:
        """Cancel a scheduled call and its pending retries (the capability is checked
        by the caller); records who (``visitor``, ``operator:<who>``) and tells each
        one's followers. Returns the calls cancelled."""
        cancelled = await self._book.cancel(call_id, self._clock.now())
        for call in cancelled:
            await self._event(call, "cancelled", {"by": by})
            if self._metrics is not None:
                self._metrics.scheduled_calls.labels(event="cancelled").inc()
        return cancelled

    async def upcoming(self, within: timedelta | None = None) -> list[Call]:
        """Scheduled calls, soonest first (due within ``within`` from now, if given)."""
        until = self._clock.now() + within if within is not None else None
        return await self._book.upcoming(until)

    def start(self) -> None:
        """Run passes in the background until :meth:`aclose` (never dying of an error:
        :func:`~callbridge.tasks.run_forever` logs, counts and backs off)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                run_forever(
                    "scheduler",
                    self.run_due,
                    interval_s=self._config.poll_s,
                    backoff_cap_s=self._config.max_backoff_s,
                    errors=self._metrics,
                )
            )

    async def aclose(self) -> None:
        """Stop the background loop."""
        task, self._task = self._task, None
        await cancel_and_wait(task)


def _counts(result: SchedulerPass) -> dict[str, int]:
    return {
        "placed": result.placed,
        "refused": result.refused,
        "missed": result.missed,
        "retries": result.retries,
    }
