"""SIGTERM drain (security.md E.36): stop taking calls, let live ones finish, end the rest kindly.

:meth:`Drainer.drain` runs while the server still serves HTTP, because Twilio's status
callbacks and TwiML fetches for the calls in progress must keep arriving:

1. readiness fails at once (:attr:`Drainer.draining`: ``/readyz`` answers 503,
   ``POST /api/call/outbound`` 503 and new media streams are closed with 1013);
2. calls in progress go on for up to ``CALLBRIDGE_DRAIN_SECONDS``;
3. the calls still live then are ended through Twilio's REST API: an answered call
   is redirected to a spoken goodbye and a hang-up, a call still ringing is hung up;
4. it waits (briefly) for their final status callbacks, then returns, and the
   server shuts down (see :func:`callbridge.cli_operator.serve_draining`).

Which calls are "in progress" is the caller's ``live_calls`` (:class:`OwnLiveCalls`):
with one process, every live call; behind a load balancer (``REDIS_URL``), only the calls
whose media this process bridges, so that restarting one server never ends another
server's calls.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

import structlog

from callbridge.domain.call import Call, CallStatus
from callbridge.errors import PolicyRejected, ProviderError
from callbridge.ports import CallEvent, CallStore, Clock, TelephonyProvider

_log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class DrainConfig:
    """How long each step may take, in seconds.

    Attributes:
        grace_s: how long calls in progress may go on (``CALLBRIDGE_DRAIN_SECONDS``).
        goodbye_wait_s: how long to wait for ended calls' final callbacks afterwards.
        poll_s: how often to look at the calls in progress.
    """

    grace_s: float
    goodbye_wait_s: float = 15.0
    poll_s: float = 0.5


@dataclass(slots=True)
class DrainReport:
    """What the drain did."""

    finished_in_grace: int = 0
    ended: list[str] = field(default_factory=list)
    still_live: list[str] = field(default_factory=list)


class LiveCallReads(Protocol):
    """The read :class:`OwnLiveCalls` needs."""

    async def live_calls(self, *, since: datetime) -> Sequence[Call]:
        """Calls not yet terminal, created since ``since``."""
        ...


class OwnLiveCalls:
    """The calls a drain waits for: every live call, or behind a load balancer only ours.

    Args:
        reads: the store's read of live calls.
        clock: the clock.
        lookback_s: how far back a call can have started and still be live.
        shared: whether other processes serve the same calls (``REDIS_URL`` is set).
        bridged_call_ids: the calls whose media this process is bridging right now.
    """

    def __init__(
        self,
        *,
        reads: LiveCallReads,
        clock: Clock,
        lookback_s: float,
        shared: bool,
        bridged_call_ids: Callable[[], set[str]],
    ) -> None:
        self._reads = reads
        self._clock = clock
        self._lookback = timedelta(seconds=lookback_s)
        self._shared = shared
        self._bridged_call_ids = bridged_call_ids

    async def __call__(self) -> Sequence[Call]:
        calls = await self._reads.live_calls(since=self._clock.now() - self._lookback)
        if not self._shared:
            return calls  # one process: every live call is ours
        # Behind a load balancer, a call belongs to the process bridging its media; one
        # still ringing will be streamed to whichever server is up when it is answered.
        mine = self._bridged_call_ids()
        return [call for call in calls if call.id in mine]


class Drainer:
    """Drains one process: see the module docstring."""

    def __init__(
        self,
        *,
        config: DrainConfig,
        begin: Callable[[], None] | None = None,
        live_calls: Callable[[], Awaitable[Sequence[Call]]],
        telephony: TelephonyProvider,
        goodbye_twiml: str,
        store: CallStore,
        clock: Clock,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._config = config
        self._begin = begin
        self._live_calls = live_calls
        self._telephony = telephony
        self._goodbye = goodbye_twiml
        self._store = store
        self._clock = clock
        self._monotonic = clock.monotonic
        self._sleep = sleep
        self.started = False

    @property
    def draining(self) -> bool:
        """Whether the drain has begun (readiness fails and new calls are refused)."""
        return self.started

    async def _wait_until_quiet(self, seconds: float) -> Sequence[Call]:
        """Poll the live calls until none is left or ``seconds`` passed; return those left."""
        deadline = self._monotonic() + seconds
        while True:
            live = await self._live_calls()
            if not live or self._monotonic() >= deadline:
                return live
            await self._sleep(min(self._config.poll_s, max(0.0, deadline - self._monotonic())))

    async def _end(self, call: Call) -> bool:
        assert call.call_sid is not None
        answered = call.status is CallStatus.IN_PROGRESS
        try:
            if answered:
                await self._telephony.redirect(call.call_sid, twiml=self._goodbye)
            else:
                await self._telephony.hang_up(call.call_sid)
        except ProviderError as exc:
            # Most often the call ended on its own meanwhile; nothing else to do.
            _log.warning("drain_end_failed", call_id=call.id, error=exc.message)
            return False
        _log.info("drain_call_ended", call_id=call.id, status=call.status.value)
        await self._store.add_event(
            CallEvent(
                call_id=call.id,
                source="callbridge",
                status="drain_goodbye" if answered else "drain_hung_up",
                at=self._clock.now(),
            )
        )
        return True

    async def drain(self) -> DrainReport:
        """Run the drain once (a second call returns at once with an empty report)."""
        report = DrainReport()
        if self.started:
            return report
        self.started = True
        if self._begin is not None:
            self._begin()
        before = await self._live_calls()
        _log.info("drain_started", live_calls=len(before), grace_s=self._config.grace_s)
        left = await self._wait_until_quiet(self._config.grace_s) if before else []
        report.finished_in_grace = len({c.id for c in before} - {c.id for c in left})
        for call in left:
            if await self._end(call):
                report.ended.append(call.id)
        if left:
            remaining = await self._wait_until_quiet(self._config.goodbye_wait_s)
            report.still_live = [c.id for c in remaining]
        _log.info(
            "drain_finished",
            finished_in_grace=report.finished_in_grace,
            ended=len(report.ended),
            still_live=len(report.still_live),
        )
        return report


class Draining(PolicyRejected):
    """The server is shutting down and takes no new calls (503, try again shortly)."""

    code = "draining"

    def __init__(self) -> None:
        super().__init__(
            "This server is restarting. Please try again in a moment.",
            reason="draining",
            http_status=503,
            retry_after=30,
        )


def refuse_if_draining(draining: bool) -> None:
    """Raise :class:`Draining` while the server drains (the call-request route's first line).

    Raises:
        Draining: ``draining`` is true.
    """
    if draining:
        raise Draining()
