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
  not a burst, and new set-ups are shed until an interval passes without it.

Anything else answers 503 ``overloaded`` with ``Retry-After`` at once. Status
callbacks, TwiML fetches and media streams never pass through the gate.
"""

from __future__ import annotations

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
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """A gate that is open until set-ups pile up.

        Args:
            max_in_flight: set-ups allowed at once; 0 turns the gate off.
            target_s: the longest the fastest set-up of an interval may take.
            interval_s: the interval over which the fastest set-up is taken.
            retry_after_s: the ``Retry-After`` of a shed request.
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
        self._slow = False

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
            reason = "in_flight" if self._in_flight >= self._max else "queue_delay"
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
        the interval just closed missed the target. One slow set-up alone (Twilio
        retrying a 429) is no queue, and an interval that ended long ago says nothing
        about now.
        """
        elapsed = now - self._window_start
        if elapsed < self._interval:
            return
        self._slow = (
            elapsed < 2 * self._interval
            and self._window_count >= 2
            and self._window_min is not None
            and self._window_min > self._target
        )
        self._window_min = None
        self._window_count = 0
        self._window_start = now
