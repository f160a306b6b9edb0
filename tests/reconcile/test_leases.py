"""Job leases and stream heartbeats hold the same contract in Redis, SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from sqlalchemy import text

from callbridge.adapters.db.leases import SqlHeartbeats, SqlLease
from callbridge.adapters.db.migrate import upgrade
from callbridge.adapters.db.store import SqlCallStore, make_engine
from callbridge.adapters.redis_shared import RedisHeartbeats, RedisLease
from callbridge.ports import Heartbeats, Lease
from tests.reconcile.conftest import ManualClock
from tests.support.calls import new_call
from tests.support.wait import wait_until


@dataclass
class Kit:
    """Leases (one per simulated process: own connections) and heartbeats on one store."""

    lease: Callable[[], Lease]
    heartbeats: Heartbeats
    #: Let ``seconds`` pass for the store's expiry (moves the clock, or waits in Redis).
    elapse: Callable[[float], object]
    ttl: float


async def _add_calls(store: SqlCallStore, *ids: str) -> None:
    for call_id in ids:
        await store.add_call(new_call(call_id, "+12025550160"))


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgresql", marks=pytest.mark.postgres),
        pytest.param("redis", marks=pytest.mark.redis),
    ]
)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """Each store a lease can live in, and its URL."""
    if request.param == "sqlite":
        return "sqlite", f"sqlite+aiosqlite:///{tmp_path}/leases.db"
    fixture = "redis_url" if request.param == "redis" else "postgres_url"
    return request.param, str(request.getfixturevalue(fixture))


@pytest.fixture
async def kit(backend: tuple[str, str]) -> AsyncIterator[Kit]:
    """Leases and heartbeats on one store."""
    kind, url = backend
    if kind == "redis":
        clients: list[aioredis.Redis] = []
        prefix = f"callbridge:test-{uuid.uuid4().hex[:10]}:"

        def redis_lease() -> Lease:
            clients.append(aioredis.Redis.from_url(url))
            return RedisLease(clients[-1], prefix=prefix + "lease:")

        main = aioredis.Redis.from_url(url)
        beats = RedisHeartbeats(main, owner="p1", prefix=prefix + "hb:")

        async def wait(seconds: float) -> None:
            await asyncio.sleep(seconds)

        try:
            yield Kit(lease=redis_lease, heartbeats=beats, elapse=wait, ttl=0.3)
        finally:
            for client in [*clients, main]:
                await client.aclose()
        return
    db_url = url
    await upgrade(db_url)
    clock = ManualClock()
    store = SqlCallStore(make_engine(db_url))
    await _add_calls(store, "call_a", "call_b", "call_c")
    engines = [store.engine]

    def sql_lease() -> Lease:
        engines.append(make_engine(db_url))
        return SqlLease(engines[-1], clock)

    try:
        yield Kit(
            lease=sql_lease,
            heartbeats=SqlHeartbeats(store.engine, clock, owner="p1"),
            elapse=clock.advance,
            ttl=30.0,
        )
    finally:
        for engine in engines:
            await engine.dispose()


async def _elapse(kit: Kit, seconds: float) -> None:
    result = kit.elapse(seconds)
    if asyncio.iscoroutine(result):
        await result


async def test_one_owner_holds_a_lease_until_it_lets_go(kit: Kit) -> None:
    """The first owner takes the lease and may renew it; another owner is refused
    until the holder releases it; a release by someone else changes nothing."""
    first, second = kit.lease(), kit.lease()
    assert await first.acquire("reconciler", "p1", kit.ttl)
    assert not await second.acquire("reconciler", "p2", kit.ttl)
    assert await first.acquire("reconciler", "p1", kit.ttl)  # renewal
    await second.release("reconciler", "p2")
    assert not await second.acquire("reconciler", "p2", kit.ttl)
    assert await second.acquire("other-job", "p2", kit.ttl)  # leases are per name
    await first.release("reconciler", "p1")
    assert await second.acquire("reconciler", "p2", kit.ttl)


async def test_a_lease_whose_holder_stopped_renewing_passes_to_another(kit: Kit) -> None:
    """A holder that dies (no renewal, no release) loses the lease once its time runs out."""
    first, second = kit.lease(), kit.lease()
    assert await first.acquire("reconciler", "dead", kit.ttl)
    await _elapse(kit, kit.ttl * 2)
    assert await second.acquire("reconciler", "p2", kit.ttl)
    assert not await first.acquire("reconciler", "dead", kit.ttl)


async def test_of_many_processes_racing_for_a_free_lease_exactly_one_wins(kit: Kit) -> None:
    """Twelve owners, each on its own connection, ask at once: one gets the lease."""
    leases = [kit.lease() for _ in range(12)]
    won = await asyncio.gather(
        *(lease.acquire("race", f"p{i}", kit.ttl) for i, lease in enumerate(leases))
    )
    assert sum(won) == 1


async def test_a_heartbeat_vouches_for_its_calls_until_it_expires(kit: Kit) -> None:
    """Beaten calls are alive, others not; renewed beats stay alive; unrenewed ones expire."""
    hb = kit.heartbeats
    assert await hb.alive(["call_a", "call_b"]) == set()
    await hb.beat(["call_a", "call_b"], kit.ttl)
    assert await hb.alive(["call_a", "call_b", "call_c"]) == {"call_a", "call_b"}
    await _elapse(kit, kit.ttl * 0.6)
    await hb.beat(["call_a"], kit.ttl)
    await _elapse(kit, kit.ttl * 0.6)
    await wait_until(lambda: hb.alive(["call_a", "call_b"]), timeout=5)
    assert await hb.alive(["call_a", "call_b"]) == {"call_a"}
    assert await hb.alive([]) == set()


async def test_lapsed_heartbeat_rows_do_not_pile_up(tmp_path: Path) -> None:
    """In the database, a row whose beat lapsed over an hour ago is deleted by a later beat
    (one row per streamed call would otherwise grow without end)."""
    url = f"sqlite+aiosqlite:///{tmp_path}/beats.db"
    await upgrade(url)
    clock = ManualClock()
    store = SqlCallStore(make_engine(url))
    try:
        await _add_calls(store, "call_old", "call_new")
        beats = SqlHeartbeats(store.engine, clock, owner="p1")
        await beats.beat(["call_old"], 30)
        clock.advance(2 * 3600)
        await beats.beat(["call_new"], 30)
        async with store.engine.connect() as conn:
            rows = (await conn.execute(text("SELECT call_id FROM stream_heartbeats"))).all()
        assert [r for (r,) in rows] == ["call_new"]
    finally:
        await store.aclose()
