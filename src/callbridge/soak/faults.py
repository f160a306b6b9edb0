"""Faults injected while the traffic runs, and how long each took to recover from.

Three faults, each once, at the profile's moments: ``kill -9`` of one server (once it
bridges a call, waiting up to :attr:`FaultInjector.MID_CALL_WAIT_S`; it is started
again after ``restart_after_s``), PostgreSQL stopped for
``outage_s`` and Redis stopped for ``outage_s``. A fault's *recovery time* is from the
moment the fault is lifted (the server restarted, the database or Redis started again)
until every server answers ``GET /readyz`` with 200 again, polled every 0.2 s.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import httpx

from callbridge.soak.processes import Child, Postgres, Redis


@dataclass(slots=True)
class FaultRecord:
    """One injected fault.

    Attributes:
        name: ``kill -9 server-a``, ``postgresql stopped``, ``redis stopped``.
        started: when it was injected (epoch seconds).
        lifted: when it was lifted (epoch seconds), or 0 if it never was.
        recovered: when every server was ready again (epoch seconds), or 0.
        note: what else was seen (e.g. calls live on the killed server).
        skipped: why it was not injected, if it was not.
    """

    name: str
    started: float = 0.0
    lifted: float = 0.0
    recovered: float = 0.0
    note: str = ""
    skipped: str = ""

    @property
    def down_s(self) -> float | None:
        """How long the fault lasted."""
        return self.lifted - self.started if self.lifted else None

    @property
    def recovery_s(self) -> float | None:
        """From the fault's end until every server was ready."""
        return self.recovered - self.lifted if self.recovered and self.lifted else None


class FaultInjector:
    """Injects the profile's faults into the running stack.

    Args:
        servers: the callbridge servers (the first is the one killed).
        postgres: the cluster to stop, or ``None`` when an external database is used.
        redis: the Redis to stop, or ``None`` when an external Redis is used.
        live_calls: returns how many calls the first server bridges now (for the note).
    """

    #: How long the kill waits for the server to bridge a call, so it dies mid-call.
    MID_CALL_WAIT_S = 20.0

    def __init__(
        self,
        servers: Sequence[Child],
        postgres: Postgres | None,
        redis: Redis | None,
        live_calls: Callable[[Child], Awaitable[int | None]],
    ) -> None:
        self._servers = list(servers)
        self._postgres = postgres
        self._redis = redis
        self._live_calls = live_calls
        self.records: list[FaultRecord] = []

    async def run(
        self,
        started: float,
        *,
        kill_at: float,
        restart_after_s: float,
        postgres_at: float,
        redis_at: float,
        outage_s: float,
    ) -> None:
        """Inject each fault at its time after ``started`` (epoch seconds), in time order."""
        plan: list[tuple[float, Callable[[], Awaitable[FaultRecord]]]] = [
            (kill_at, lambda: self._kill(restart_after_s)),
            (postgres_at, lambda: self._stop_postgres(outage_s)),
            (redis_at, lambda: self._stop_redis(outage_s)),
        ]
        for at, inject in sorted(plan, key=lambda p: p[0]):
            delay = started + at - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            self.records.append(await inject())

    async def _kill(self, restart_after_s: float) -> FaultRecord:
        server = self._servers[0]
        record = FaultRecord(f"kill -9 {server.name}")
        # Mid-call: wait (a little) for the server to bridge a call before killing it.
        deadline = time.time() + self.MID_CALL_WAIT_S
        live = await self._live_calls(server)
        while not live and time.time() < deadline:
            await asyncio.sleep(0.5)
            live = await self._live_calls(server)
        record.started = time.time()
        server.kill()
        record.note = f"it was bridging {live} call(s)" if live is not None else ""
        await asyncio.sleep(restart_after_s)
        server.spawn()
        record.lifted = time.time()
        record.recovered = await self._all_ready()
        return record

    async def _stop_postgres(self, outage_s: float) -> FaultRecord:
        record = FaultRecord("postgresql stopped")
        if self._postgres is None:
            record.skipped = "an external database was given"
            return record
        record.started = time.time()
        await asyncio.to_thread(self._postgres.stop, "fast")
        await asyncio.sleep(max(0.0, record.started + outage_s - time.time()))
        await asyncio.to_thread(self._postgres.start)
        record.lifted = time.time()
        record.recovered = await self._all_ready()
        return record

    async def _stop_redis(self, outage_s: float) -> FaultRecord:
        record = FaultRecord("redis stopped")
        if self._redis is None:
            record.skipped = "an external Redis was given"
            return record
        record.started = time.time()
        await asyncio.to_thread(self._redis.stop, 10.0, 15)  # SIGTERM: a clean shutdown
        await asyncio.sleep(max(0.0, record.started + outage_s - time.time()))
        await self._redis.start()
        record.lifted = time.time()
        record.recovered = await self._all_ready()
        return record

    async def _all_ready(self, within: float = 120.0) -> float:
        """When every server answered ``/readyz`` with 200 (0 if not ``within`` seconds)."""
        deadline = time.time() + within
        pending = list(self._servers)
        async with httpx.AsyncClient(timeout=2.0) as http:
            while pending and time.time() < deadline:
                pending = [s for s in pending if not await s.is_ready(http)]
                if pending:
                    await asyncio.sleep(0.2)
        return 0.0 if pending else time.time()
