"""Retention (security.md F.46): once a day, clear transcripts and chat context older than N days.

``CALLBRIDGE_RETENTION_DAYS`` unset means keep everything. The first purge runs a
minute after start-up (so a restart never delays it by a day), then every 24 hours.
Several processes may purge at once: the purge is idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from callbridge.adapters.db.queries import PurgeResult
from callbridge.errors import StoreError
from callbridge.services.operator import OperatorService

_log = structlog.get_logger(__name__)

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
    ) -> None:
        self._operator = operator
        self.days = days
        self._interval = interval_s
        self._first_delay = first_delay_s
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

    async def _loop(self) -> None:
        delay = self._first_delay
        while True:
            await asyncio.sleep(delay)
            delay = self._interval
            try:
                await self.run_once()
            except StoreError as exc:
                _log.warning("retention_failed", error=exc.message)

    async def start(self) -> None:
        """Start the daily loop (nothing when retention is off)."""
        if self.days is None or self.running:
            return
        self._task = asyncio.create_task(self._loop(), name="callbridge-retention")

    async def aclose(self) -> None:
        """Stop the loop."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
