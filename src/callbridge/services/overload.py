"""Shed call set-ups the server cannot do in time, before any database work.

A burst of call requests must not queue: every queued set-up holds the database pool
(SQLite has one connection) and the event loop ahead of Twilio's status callbacks, and
a callback that waits past Twilio's timeout is lost, leaving a finished call
``in-progress``. So :class:`SetupGate` admits a set-up only when

* fewer than ``max_in_flight`` set-ups are under way in this process (set-ups stay
  below the database pool's size, so callbacks and TwiML fetches always find a
  connection), and
* set-ups are not standing in a queue: as in CoDel (Nichols and Jacobson, "Controlling
  Queue Delay", ACM Queue 2012), if even the *fastest* set-up that finished in the
  last ``interval_s`` took longer than ``target_s``, the delay is a standing queue,
  not a burst, and new set-ups are shed until an interval passes without it;
* the event loop is not standing behind: a ticker measures how late the loop wakes
  it (every ``tick_s``); when even the least late tick of an interval was later than
  ``loop_target_s``, the process is past what it can carry (live media streams and
  callbacks wait on that loop), and a new call would only add to it.

Anything else answers 503 ``overloaded`` with ``Retry-After`` at once. Status
callbacks, TwiML fetches and media streams never pass through the gate.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import structlog

from callbridge.errors import Overloaded
from callbridge.metrics import Metrics

_log = structlog.get_logger(__name__)

#: A set-up is policy, a few short transactions and one Twilio request (a few hundred
#: milliseconds at Twilio's usual speed): two seconds for the fastest one means a queue.
DEFAULT_TARGET_S = 2.0
DEFAULT_INTERVAL_S = 1.0
#: Media frames are 20 ms apart: a loop that is always 100 ms late already garbles audio.
DEFAULT_LOOP_TARGET_S = 0.1
DEFAULT_TICK_S = 0.05
#: Long enough for the set-ups in flight to finish, short enough for a visitor to retry.
DEFAULT_RETRY_AFTER_S = 5
_MESSAGE = "We're receiving a lot of call requests right now. Please try again in a few seconds."


class SetupGate:
    """In-process admission for call set-ups: a bound in flight and a queue-delay check."""

    def __init__(
        self,
        *,
        max_in_flight: int,
        target_s: float = DEFAULT_TARGET_S,
        interval_s: float = DEFAULT_INTERVAL_S,
        retry_after_s: int = DEFAULT_RETRY_AFTER_S,
        loop_target_s: float = DEFAULT_LOOP_TARGET_S,
        tick_s: float = DEFAULT_TICK_S,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """A gate that is open until set-ups pile up.

        Args:
            max_in_flight: set-ups allowed at once; 0 turns the gate off.
            target_s: the longest the fastest set-up of an interval may take.
            interval_s: the interval over which the fastest set-up is taken.
            retry_after_s: the ``Retry-After`` of a shed request.
            loop_target_s: the most the event loop may be late at every tick of an
                interval (measured only between :meth:`start` and :meth:`aclose`).
            tick_s: how often the loop's lateness is measured.
            metrics: counts shed requests (``callbridge_setups_shed_total``).
            clock: monotonic seconds (tests pass their own).
        """
        self._max = max_in_flight
        self._target = target_s
        self._interval = interval_s
        self._retry_after = retry_after_s
        self._metrics = metrics
        self._clock = clock
        self._in_flight = 0
        self._window_start = clock()
        self._window_min: float | None = None
        self._window_count = 0
        self._loop_target = loop_target_s
        self._tick = tick_s
        self._lag_min: float | None = None
        self._lag_count = 0
        self._slow = False
        self._reason = "queue_delay"
        self._ticker: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start measuring the event loop's lateness (call from the running loop)."""
        if self._max > 0 and self._ticker is None:
            self._ticker = asyncio.get_running_loop().create_task(self._watch_loop())

    async def aclose(self) -> None:
        """Stop measuring."""
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None

    async def _watch_loop(self) -> None:
        while True:  # real time: the loop's lateness is a fact of this process, not a model
            before = time.monotonic()
            await asyncio.sleep(self._tick)
            self.observe_loop_lag(max(0.0, time.monotonic() - before - self._tick))

    def observe_loop_lag(self, late_s: float) -> None:
        """Record how late the event loop ran a tick."""
        self._roll(self._clock())
        if self._metrics is not None:
            self._metrics.event_loop_lag.set(late_s)
        if self._lag_min is None or late_s < self._lag_min:
            self._lag_min = late_s
        self._lag_count += 1

    @property
    def in_flight(self) -> int:
        """Set-ups under way now."""
        return self._in_flight

    @asynccontextmanager
    async def setup(self) -> AsyncIterator[None]:
        """Hold a place for one set-up while the block runs.

        Raises:
            Overloaded: too many set-ups in flight, or set-ups are queueing.
        """
        if self._max <= 0:
            yield
            return
        now = self._clock()
        self._roll(now)
        if self._in_flight >= self._max or self._slow:
            reason = "in_flight" if self._in_flight >= self._max else self._reason
            if self._metrics is not None:
                self._metrics.setups_shed.labels(reason=reason).inc()
            _log.warning("setup_shed", reason=reason, in_flight=self._in_flight)
            raise Overloaded(_MESSAGE, retry_after=self._retry_after)
        self._in_flight += 1
        try:
            yield
        finally:
            self._in_flight -= 1
            self._observe(self._clock() - now)

    def _observe(self, took_s: float) -> None:
        self._roll(self._clock())
        if self._window_min is None or took_s < self._window_min:
            self._window_min = took_s
        self._window_count += 1

    def _roll(self, now: float) -> None:
        """Close the interval if it is over.

        Set-ups are queueing when the fastest of at least two set-ups that finished in
        the interval just closed missed the target, and the loop is behind when the
        least late of at least two ticks was later than its target. One slow set-up
        alone (Twilio retrying a 429) is no queue, and an interval that ended long ago
        says nothing about now.
        """
        elapsed = now - self._window_start
        if elapsed < self._interval:
            return
        recent = elapsed < 2 * self._interval
        queueing = recent and _above(self._window_min, self._window_count, self._target)
        behind = recent and _above(self._lag_min, self._lag_count, self._loop_target)
        self._slow = queueing or behind
        self._reason = "queue_delay" if queueing else "loop_lag"
        self._window_min = self._lag_min = None
        self._window_count = self._lag_count = 0
        self._window_start = now


def _above(least: float | None, count: int, target: float) -> bool:
    """Whether at least two samples were taken and even the least was above ``target``."""
    return count >= 2 and least is not None and least > target
