"""Operator alerts: things a person should look at now (security.md 8, 12, 13, 19).

Every alert is an ``alert`` log line at error level and a count in
``callbridge_alerts_total{kind}``. With ``CALLBRIDGE_ALERT_WEBHOOK_URL`` set it is
also sent to an :class:`AlertSink` (a chat or paging webhook), from a background
task so that raising an alert never slows the request that noticed the trouble.

A burst of one kind (every request refused by the spend cap, say) sends one
notification per ``repeat_s`` seconds; the next one says how many were held back.
A full queue drops the notification, never the log line or the count. Summaries
and details must never hold a phone number or a secret: callers pass masked
values only.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Final

import structlog

from callbridge.errors import CallbridgeError
from callbridge.metrics import Metrics
from callbridge.ports import Alert, AlertKind, AlertSink, Detail
from callbridge.tasks import cancel_and_wait

__all__ = ["Alert", "AlertKind", "AlertSink", "Alerts"]

_log = structlog.get_logger(__name__)

_ATTEMPTS: Final = 3
_BACKOFF_S: Final = 1.0
_STOP_GRACE_S: Final = 2.0


class Alerts:
    """Raise alerts; deliver them to a sink, if any, from one background task.

    Args:
        sink: where notifications go; ``None`` logs and counts only.
        metrics: the app's metrics.
        repeat_s: the least time between two notifications of one kind.
        queue_size: notifications waiting at most; more are dropped (and counted).
        clock: a monotonic clock in seconds.
        backoff_s: the wait before the first retry of a failed delivery (doubling).
    """

    def __init__(
        self,
        *,
        sink: AlertSink | None,
        metrics: Metrics | None = None,
        repeat_s: float = 300.0,
        queue_size: int = 100,
        clock: Callable[[], float] = time.monotonic,
        backoff_s: float = _BACKOFF_S,
    ) -> None:
        self._sink = sink
        self._metrics = metrics
        self._repeat_s = repeat_s
        self._clock = clock
        self._backoff_s = backoff_s
        self._queue: asyncio.Queue[Alert] = asyncio.Queue(maxsize=queue_size)
        self._last_sent: dict[str, float] = {}
        self._held_back: dict[str, int] = {}
        self._worker: asyncio.Task[None] | None = None

    def raise_alert(self, kind: AlertKind, summary: str, **details: Detail) -> None:
        """Log, count and (maybe) notify; never blocks and never raises."""
        _log.error("alert", kind=kind, summary=summary, **details)
        if self._metrics is not None:
            self._metrics.alerts.labels(kind=kind).inc()
        if self._sink is None:
            return
        now = self._clock()
        last = self._last_sent.get(kind)
        if last is not None and now - last < self._repeat_s:
            self._held_back[kind] = self._held_back.get(kind, 0) + 1
            return
        alert = Alert(kind, summary, dict(details), held_back=self._held_back.pop(kind, 0))
        try:
            self._queue.put_nowait(alert)
        except asyncio.QueueFull:
            self._count("dropped")
            return
        self._last_sent[kind] = now

    async def start(self) -> None:
        """Start delivering (a no-op without a sink)."""
        if self._sink is not None and self._worker is None:
            self._worker = asyncio.create_task(self._deliver_forever(), name="alerts")

    async def stop(self) -> None:
        """Give queued notifications a moment to go out, then stop."""
        if self._worker is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), _STOP_GRACE_S)
        await cancel_and_wait(self._worker)
        self._worker = None

    async def _deliver_forever(self) -> None:
        assert self._sink is not None
        while True:
            alert = await self._queue.get()
            try:
                await self._deliver(self._sink, alert)
            finally:
                self._queue.task_done()

    async def _deliver(self, sink: AlertSink, alert: Alert) -> None:
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                await sink.deliver(alert)
            except CallbridgeError as exc:
                _log.warning(
                    "alert_delivery_failed", kind=alert.kind, attempt=attempt, error=str(exc)
                )
                if attempt < _ATTEMPTS:
                    await asyncio.sleep(self._backoff_s * 2 ** (attempt - 1))
            else:
                self._count("sent")
                return
        self._count("failed")

    def _count(self, outcome: str) -> None:
        if self._metrics is not None:
            self._metrics.alert_deliveries.labels(outcome=outcome).inc()
