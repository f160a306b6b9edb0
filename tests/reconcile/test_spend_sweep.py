"""The reconciler settles the spend of ended calls whose settlement failed or never ran.

A price stored and the settlement lost after it (the quota store failed, the process
died) leaves the call priced and its ledger line at the estimate: the price sweep no
longer sees it, so the settlement sweep must. On the sandbox's own composition root,
with each database and each quota store (in memory, and a real Redis of the test's own).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text

from callbridge.adapters.db.spend_ledger import SqlSpendLedger
from callbridge.adapters.db.store import ReconcileQueries
from callbridge.domain.call import Call, CallStatus
from callbridge.domain.quotas import DAY
from callbridge.ports import QuotaStore, StatusUpdate
from callbridge.services.reconcile import Reconciler
from tests.support.app import Sandbox, running_sandbox
from tests.support.calls import new_call
from tests.support.redis import RedisServer

QUIET = {"CALLBRIDGE_RECONCILE_INTERVAL_SECONDS": "3600"}


@pytest.fixture(
    params=[
        ("sqlite", "memory"),
        pytest.param(("postgresql", "redis"), marks=[pytest.mark.postgres, pytest.mark.redis]),
    ],
    ids=["sqlite-memory", "postgresql-redis"],
)
def backends(request: pytest.FixtureRequest) -> tuple[str | None, str]:
    """The database (None: SQLite) and the quota store: SQLite and memory, or PostgreSQL
    and Redis."""
    database, quotas = request.param
    url = None if database == "sqlite" else str(request.getfixturevalue("postgres_url"))
    return url, quotas


@pytest.fixture
async def sandbox(backends: tuple[str | None, str], tmp_path: Path) -> AsyncIterator[Sandbox]:
    """The app on those backends; Redis is a server of the test's own."""
    url, quotas = backends
    env = dict(QUIET)
    redis = RedisServer(tmp_path) if quotas == "redis" else None
    if redis is not None:
        redis.start()
        env["REDIS_URL"] = redis.url
    try:
        async with running_sandbox(env, tmp_path=tmp_path, database_url=url) as sb:
            yield sb
    finally:
        if redis is not None:
            redis.stop()


def _reconciler(sb: Sandbox) -> Reconciler:
    """A reconciler of its own (no lease: the container's start-up pass may still run)."""
    c = sb.container
    return Reconciler(
        reads=ReconcileQueries(c.store),
        store=c.store,
        telephony=c.telephony,
        lifecycle=c.lifecycle,
        prices=c.jobs.prices,
        clock=c.clock,
        time_limit_s=600,
        slots=c.admission,
    )


async def _recorded(sb: Sandbox, n: int) -> Call:
    """A call admitted, held and recorded as PlacingService does (to +1 202 555 01nn)."""
    c = sb.container
    admitted = await c.admission.admit(f"+1 202 555 01{n:02d}", f"198.51.100.{n}")
    call_id = "call_" + secrets.token_hex(10)
    await c.admission.bind(admitted, call_id)
    return await c.store.add_call(new_call(call_id, admitted.e164, spend=admitted.spend))


async def _line(sb: Sandbox, call_id: str) -> tuple[int | None, int | None, bool]:
    async with sb.container.store.engine.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT estimated_micros, actual_micros, settled_at FROM spend_ledger "
                    "WHERE call_id = :c"
                ),
                {"c": call_id},
            )
        ).one()
    return row[0], row[1], row[2] is not None


def _quotas(sb: Sandbox) -> QuotaStore:
    return sb.container.admission._quotas  # the container does not expose the store


async def test_a_priced_call_whose_settlement_was_lost_is_settled_by_the_next_pass(
    sandbox: Sandbox,
) -> None:
    """One call's price was stored and its settlement lost; another ended and was never
    settled. The next pass books the first at its price and the second at 0, and the
    day counter ends equal to the ledger's total; a second pass changes nothing."""
    sb = sandbox
    priced, busy = await _recorded(sb, 80), await _recorded(sb, 81)
    now = datetime.now(UTC)
    await sb.container.store.update_call(
        priced.id,
        StatusUpdate(
            status=CallStatus.COMPLETED, answered_at=now, ended_at=now, duration_s=30,
            price="-0.01400", price_unit="USD",
        ),
    )  # fmt: skip
    await sb.container.store.update_call(
        busy.id, StatusUpdate(status=CallStatus.BUSY, ended_at=now, duration_s=0)
    )
    assert (await _line(sb, priced.id))[1:] == (None, False)
    reconciler = _reconciler(sb)
    # This pass, or the container's start-up pass running beside it, settles them.
    await reconciler.run_once()
    assert (await _line(sb, priced.id))[1:] == (14_000, True)
    assert await _line(sb, busy.id) == (0, None, True)
    day = int(time.time() // DAY)
    spend = await sb.container.admission.spend_today()
    assert (spend.settled, spend.reserved) == (14_000, 0)
    assert await _quotas(sb).spend(day) == 14_000
    assert await reconciler.run_once() == 0
    assert await _quotas(sb).spend(day) == 14_000


async def test_a_counter_that_missed_its_settlement_heals_within_two_passes(
    sandbox: Sandbox,
) -> None:
    """The ledger booked a call's price but the day counter never moved (the quota store
    failed after the ledger committed): within two passes the counter equals the ledger."""
    sb = sandbox
    call = await _recorded(sb, 82)
    now = datetime.now(UTC)
    await sb.container.store.update_call(
        call.id,
        StatusUpdate(
            status=CallStatus.COMPLETED, answered_at=now, ended_at=now, duration_s=30,
            price="-0.01400", price_unit="USD",
        ),
    )  # fmt: skip
    await SqlSpendLedger(sb.container.store.engine).settle(
        call.id, estimated=None, actual=14_000, at=now
    )
    day = int(time.time() // DAY)
    assert await _quotas(sb).spend(day) != 14_000
    reconciler = _reconciler(sb)
    await reconciler.run_once()
    await reconciler.run_once()
    assert await _quotas(sb).spend(day) == 14_000
    assert (await sb.container.admission.spend_today()).total == 14_000
