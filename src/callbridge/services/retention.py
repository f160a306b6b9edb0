"""Retention (security.md F.46): once a day, clear transcripts and chat context older than N days.

``CALLBRIDGE_RETENTION_DAYS`` unset means keep everything. The first purge runs a
minute after start-up (so a restart never delays it by a day), then every 24 hours.
Several processes may purge at once: the purge is idempotent. A failed purge (the
database is down) is logged, counted and retried within minutes, backing off
(:func:`~callbridge.tasks.run_forever`); the loop never dies of it.
"""

from __future__ import annotations

import asyncio

from callbridge.adapters.db.queries import PurgeResult
from callbridge.services.operator import OperatorService
from callbridge.tasks import ErrorCounter, cancel_and_wait, run_forever

DAY_S = 24 * 3600.0


class RetentionTask:
    """The daily purge, started and stopped with the container."""

    def __init__(
        self,
        operator: OperatorService,
        days: int | None,
        *,
        interval_s: float = DAY_S,
        first_delay_s: float = 60.0,
        retry_cap_s: float = 600.0,
        errors: ErrorCounter | None = None,
    ) -> None:
        self._operator = operator
        self.days = days
        self._interval = interval_s
        self._first_delay = first_delay_s
        self._retry_cap = retry_cap_s
        self._errors = errors
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        """Whether the daily loop is running."""
        return self._task is not None and not self._task.done()

    async def run_once(self) -> PurgeResult | None:
        """Purge now (None when retention is off)."""
        if self.days is None:
            return None
        return await self._operator.purge(self.days)

    async def start(self) -> None:
        """Start the daily loop (nothing when retention is off)."""
        if self.days is None or self.running:
            return
        self._task = asyncio.create_task(
            run_forever(
                "retention",
                self.run_once,
                interval_s=self._interval,
                backoff_cap_s=self._retry_cap,
                first_delay_s=self._first_delay,
                errors=self._errors,
            ),
            name="callbridge-retention",
        )

    async def aclose(self) -> None:
        """Stop the loop."""
        task, self._task = self._task, None
        await cancel_and_wait(task)
