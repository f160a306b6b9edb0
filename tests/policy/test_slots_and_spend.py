"""Quota state that any process can settle and that heals itself (issue 11, part 1).

PolicyAdmission on a real database (SQLite and PostgreSQL) and each quota store
(in memory and in a real Redis): slots held under the call id, the spend ledger
reserved -> estimated -> actual with the day counter equal to the ledger's sum,
the slot audit, and the counter rebuilt from the ledger after the store lost it.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from sqlalchemy import text

from callbridge.adapters.db.do_not_call import SqlDoNotCallList
from callbridge.adapters.db.migrate import upgrade
from callbridge.adapters.db.spend_ledger import SqlSpendLedger
from callbridge.adapters.db.store import SqlCallStore, make_engine
from callbridge.adapters.quota import MemoryQuotaStore, QuotaStore, RedisQuotaStore
from callbridge.bootstrap import SystemClock
from callbridge.domain.call import Call, CallStatus
from callbridge.domain.policy import NumberPolicy
from callbridge.domain.quotas import DAY, QuotaLimits, hashed
from callbridge.domain.spend import MICROS_PER_CENT
from callbridge.errors import Conflict, PolicyRejected, Unavailable
from callbridge.ports import NewCall, SlotAudit, StatusUpdate
from callbridge.services.admission import AUDIT_GRACE_S, PolicyAdmission
from callbridge.services.placing import Admitted
from tests.store.conftest import database_url, postgres_url  # noqa: F401 - fixtures
from tests.support.calls import new_call
from tests.support.redis import RedisServer

KEY = b"test-number-hashing-key"
RESERVED = 150 * MICROS_PER_CENT  # 10 minutes at 15 cents
LIMITS = QuotaLimits(
    per_number_hourly=100,
    per_number_daily=100,
    per_number_cooldown_s=1,
    per_ip_hourly=1000,
    per_ip_block_hourly=1000,
    distinct_numbers_per_ip_daily=1000,
    per_prefix_daily=1000,
    max_concurrent_calls=3,
    daily_spend_cap_cents=600,
)


@pytest_asyncio.fixture
async def calls(database_url: str) -> AsyncIterator[SqlCallStore]:  # noqa: F811
    """A migrated, empty call store."""
    await upgrade(database_url)
    store = SqlCallStore(make_engine(database_url))
    try:
        yield store
    finally:
        await store.aclose()


def admission_for(calls: SqlCallStore, quotas: QuotaStore) -> PolicyAdmission:
    """PolicyAdmission as bootstrap wires it, on these stores."""
    return PolicyAdmission(
        numbers=NumberPolicy(),
        quiet_hours=None,
        limits=LIMITS,
        quotas=quotas,
        dnc=SqlDoNotCallList(calls.engine),
        key=KEY,
        default_region="US",
        clock=SystemClock(),
        ledger=SqlSpendLedger(calls.engine),
        calls=calls,
        slot_ttl_s=690,
    )


async def place(admission: PolicyAdmission, calls: SqlCallStore, n: int) -> Call:
    """Admit, hold and record a call to +1 202 555 01nn, as PlacingService does."""
    admitted = await admission.admit(f"+1 202 555 01{n:02d}", f"198.51.100.{n}")
    call_id = "call_" + secrets.token_hex(10)
    await admission.bind(admitted, call_id)
    return await calls.add_call(admitted_call(call_id, admitted))


def admitted_call(call_id: str, admitted: Admitted) -> NewCall:
    return new_call(call_id, admitted.e164, spend=admitted.spend)


async def end(calls: SqlCallStore, call: Call, status: CallStatus, **fields: object) -> Call:
    return await calls.update_call(
        call.id,
        StatusUpdate(status=status, ended_at=datetime.now(UTC), **fields),  # type: ignore[arg-type]
    )


def today() -> int:
    return int(time.time() // DAY)


async def ledger_line(calls: SqlCallStore, call_id: str) -> tuple[int, int | None, int | None]:
    async with calls.engine.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT reserved_micros, estimated_micros, actual_micros "
                    "FROM spend_ledger WHERE call_id = :c"
                ),
                {"c": call_id},
            )
        ).one()
    return int(row[0]), row[1], row[2]


class TestSpendLedger:
    async def test_a_call_goes_reserved_then_estimated_then_actual(
        self, calls: SqlCallStore, store: QuotaStore
    ) -> None:
        """Recorded: booked at its reservation. Ended after 61 s: 2 billed minutes at the
        worst rate (15 c). Priced "-0.02800" USD: 2.8 cents exactly. The day's counter is
        the ledger's sum at every step."""
        admission = admission_for(calls, store)
        call = await place(admission, calls, 1)
        assert await ledger_line(calls, call.id) == (RESERVED, None, None)
        assert await store.spend(today()) == RESERVED == (await admission.spend_today()).total
        ended = await end(
            calls, call, CallStatus.COMPLETED, duration_s=61, answered_at=call.created_at
        )
        await admission.settle(ended)
        assert await ledger_line(calls, call.id) == (RESERVED, 30 * MICROS_PER_CENT, None)
        assert await store.spend(today()) == 30 * MICROS_PER_CENT
        priced = await calls.update_call(call.id, StatusUpdate(price="-0.02800", price_unit="USD"))
        await admission.settle(priced)
        assert await ledger_line(calls, call.id) == (RESERVED, 30 * MICROS_PER_CENT, 28_000)
        spend = await admission.spend_today()
        assert await store.spend(today()) == 28_000 == spend.settled == spend.total
        await admission.settle(priced)  # the same state again: nothing moves
        await admission.settle(ended)  # an older view (no price) never undoes the price
        assert await store.spend(today()) == 28_000
        assert await ledger_line(calls, call.id) == (RESERVED, 30 * MICROS_PER_CENT, 28_000)

    @pytest.mark.parametrize("status", [CallStatus.BUSY, CallStatus.NO_ANSWER, CallStatus.FAILED])
    async def test_a_call_that_never_connected_settles_to_zero(
        self, calls: SqlCallStore, store: QuotaStore, status: CallStatus
    ) -> None:
        """Busy, no answer, failed: booked at 0, the counter back to what it was, its line free."""
        admission = admission_for(calls, store)
        call = await place(admission, calls, 2)
        duration = {"duration_s": 0} if status is not CallStatus.FAILED else {}
        await admission.settle(await end(calls, call, status, **duration))
        assert await ledger_line(calls, call.id) == (RESERVED, 0, None)
        assert await store.spend(today()) == 0 == (await admission.spend_today()).total
        assert await store.held(time.time()) == {}

    async def test_more_calls_than_worst_cases_fit_under_the_cap_once_settled(
        self, calls: SqlCallStore, store: QuotaStore
    ) -> None:
        """With a 600-cent cap (four worst cases) twelve priced calls are all admitted, and
        the counter equals the ledger's sum (12 x 1.4 cents)."""
        admission = admission_for(calls, store)
        for n in range(12):
            call = await place(admission, calls, 10 + n)
            ended = await end(
                calls,
                call,
                CallStatus.COMPLETED,
                duration_s=30,
                answered_at=call.created_at,
                price="-0.01400",
                price_unit="USD",
            )
            await admission.settle(ended)
        spend = await admission.spend_today()
        assert (spend.calls, spend.settled, spend.reserved) == (12, 12 * 14_000, 0)
        assert await store.spend(today()) == spend.total

    async def test_a_call_never_recorded_gives_its_reservation_back(
        self, calls: SqlCallStore, store: QuotaStore
    ) -> None:
        """abandon() (the call's row could not be written) frees the slot and the spend."""
        admission = admission_for(calls, store)
        admitted = await admission.admit("+1 202 555 0130", "198.51.100.30")
        await admission.bind(admitted, "call_never")
        await admission.abandon(admitted, "call_never")
        assert await store.spend(today()) == 0
        assert await store.held(time.time()) == {}

    async def test_the_ledger_line_is_written_with_its_call_or_not_at_all(
        self, calls: SqlCallStore, store: QuotaStore
    ) -> None:
        """A call refused by the database (its Idempotency-Key taken) leaves no ledger line:
        the line and the call row are one transaction."""
        admission = admission_for(calls, store)
        admitted = await admission.admit("+1 202 555 0131", "198.51.100.31")
        first = replace(admitted_call("call_first", admitted), idempotency_key="key-1")
        await calls.add_call(first)
        with pytest.raises(Conflict):
            await calls.add_call(replace(first, id="call_second"))
        async with calls.engine.connect() as conn:
            ids = (await conn.execute(text("SELECT call_id FROM spend_ledger"))).scalars().all()
        assert ids == ["call_first"]


class TestSlotAudit:
    async def test_the_audit_frees_orphans_and_re_holds_live_calls(
        self, calls: SqlCallStore, store: QuotaStore
    ) -> None:
        """A slot whose call is not live is freed (once past the grace); a live call whose
        slot is gone gets one again; a second pass changes nothing."""
        admission = admission_for(calls, store)
        audit: SlotAudit = admission
        live = await place(admission, calls, 40)
        orphan = await place(admission, calls, 41)
        lost = await place(admission, calls, 42)
        await store.release(lost.id, now=time.time())  # the store lost it
        # Too new to judge: nothing freed within the grace period.
        assert await audit.audit_slots([live.id, lost.id]) == 1  # re-held: lost
        assert set(await store.held(time.time())) == {live.id, orphan.id, lost.id}
        later = time.time() + AUDIT_GRACE_S + 1
        # The orphan's slot, as if held before the grace period began.
        await store.hold(
            orphan.id,
            hashed(orphan.to_number, KEY),
            until=later + 600,
            now=time.time() - AUDIT_GRACE_S - 1,
        )
        assert await audit.audit_slots([live.id, lost.id]) == 1  # freed: orphan
        assert set(await store.held(time.time())) == {live.id, lost.id}
        assert await audit.audit_slots([live.id, lost.id]) == 0

    async def test_a_call_that_ended_or_is_unknown_is_not_held_again(
        self, calls: SqlCallStore, store: QuotaStore
    ) -> None:
        """A listed id whose row is terminal, or has no row, gets no slot."""
        admission = admission_for(calls, store)
        call = await place(admission, calls, 43)
        await admission.settle(await end(calls, call, CallStatus.BUSY, duration_s=0))
        assert await admission.audit_slots([call.id, "call_nobody"]) == 0
        assert await store.held(time.time()) == {}


class TestRebuild:
    async def test_a_lost_counter_is_rebuilt_from_the_ledger(
        self, calls: SqlCallStore, store: QuotaStore
    ) -> None:
        """The store loses everything mid-day (a new MemoryQuotaStore, or FLUSHALL): the next
        admission rebuilds today's counter from the ledger (settled + still reserved) before
        reserving, so the cap still holds; the audit re-holds the live call's slot."""
        admission = admission_for(calls, store)
        first = await place(admission, calls, 50)
        await admission.settle(
            await end(calls, first, CallStatus.COMPLETED, duration_s=30, price="-0.01400")
        )
        live = await place(admission, calls, 51)  # still reserved
        lost = await wiped(store)
        admission = admission_for(calls, lost)
        assert await lost.spend(today()) is None
        assert await admission.audit_slots([live.id]) == 1
        assert await lost.spend(today()) == 14_000 + RESERVED
        assert set(await lost.held(time.time())) == {live.id}
        third = await place(admission, calls, 52)
        assert await lost.spend(today()) == 14_000 + 2 * RESERVED
        assert (await admission.spend_today()).total == 14_000 + 2 * RESERVED
        assert third.id in await lost.held(time.time())

    async def test_the_first_admission_after_a_loss_rebuilds_the_counter(
        self, calls: SqlCallStore, store: QuotaStore
    ) -> None:
        """Without an audit in between, admit() itself finds the counter missing, rebuilds
        it from the ledger and books on top: four reservations fill a 600-cent cap."""
        admission = admission_for(calls, store)
        for n in range(3):
            await place(admission, calls, 60 + n)
        lost = await wiped(store)
        admission = admission_for(calls, lost)
        await place(admission, calls, 63)
        assert await lost.spend(today()) == 4 * RESERVED
        with pytest.raises(PolicyRejected) as refused:
            await place(admission, calls, 64)
        assert refused.value.reason == "spend_cap"


class TestSettlingThroughFailures:
    @pytest.mark.redis
    async def test_a_redis_outage_at_release_does_not_stop_the_ledger_settling(
        self, calls: SqlCallStore, tmp_path: Path
    ) -> None:
        """Redis dies before a priced call is settled: settle() still books the price in the
        ledger (the slot frees itself), then raises Unavailable so the caller counts it.
        Redis back (empty), the audit rebuilds the counter at the ledger's truth."""
        redis = RedisServer(tmp_path)
        redis.start()
        client = aioredis.Redis.from_url(redis.url)
        try:
            store = RedisQuotaStore(client)
            admission = admission_for(calls, store)
            call = await place(admission, calls, 70)
            priced = await end(calls, call, CallStatus.COMPLETED, duration_s=30, price="-0.01400")
            redis.stop()
            with pytest.raises(Unavailable):
                await admission.settle(priced)
            assert await ledger_line(calls, call.id) == (RESERVED, 15 * MICROS_PER_CENT, 14_000)
            redis.start()
            await admission.audit_slots([])
            assert await store.spend(today()) == 14_000 == (await admission.spend_today()).total
        finally:
            await client.aclose()
            redis.stop()

    async def test_a_counter_the_ledger_moved_past_heals_on_the_second_audit(
        self, calls: SqlCallStore, store: QuotaStore
    ) -> None:
        """The ledger settled a call but the counter never moved (the quota store failed,
        or the process died, in between): settling again finds nothing to move. The first
        audit sees the drift and waits; the second sees the same and heals it."""
        admission = admission_for(calls, store)
        call = await place(admission, calls, 71)
        priced = await end(calls, call, CallStatus.COMPLETED, duration_s=30, price="-0.01400")
        # Another process settled the line and died before moving the counter.
        await SqlSpendLedger(calls.engine).settle(
            call.id, estimated=None, actual=14_000, at=datetime.now(UTC)
        )
        await admission.settle(priced)
        assert await store.spend(today()) == RESERVED  # settling again did not heal it
        await admission.audit_slots([])
        assert await store.spend(today()) == RESERVED  # seen once: maybe in flight
        await admission.audit_slots([])
        assert await store.spend(today()) == 14_000 == (await admission.spend_today()).total
        await admission.audit_slots([])
        assert await store.spend(today()) == 14_000

    async def test_a_reservation_in_flight_is_not_taken_for_drift(
        self, calls: SqlCallStore, store: QuotaStore
    ) -> None:
        """A reservation is in the counter before its call's row (and ledger line) commits:
        an audit in between sees a difference, but the next one sees the line and the
        counter agree, and nothing was corrected."""
        admission = admission_for(calls, store)
        admitted = await admission.admit("+1 202 555 0172", "198.51.100.72")
        await admission.bind(admitted, "call_in_flight")
        await admission.audit_slots(["call_in_flight"])
        assert await store.spend(today()) == RESERVED
        await calls.add_call(admitted_call("call_in_flight", admitted))
        await admission.audit_slots(["call_in_flight"])
        await admission.audit_slots(["call_in_flight"])
        assert await store.spend(today()) == RESERVED == (await admission.spend_today()).total

    async def test_the_counter_never_goes_below_zero(self, store: QuotaStore) -> None:
        """A refund larger than the day's counter leaves it at 0."""
        assert await store.restore_spend(today(), 5_000)
        await store.adjust_spend(today(), -RESERVED)
        assert await store.spend(today()) == 0


async def wiped(store: QuotaStore) -> QuotaStore:
    """The store after it lost its data: a fresh memory store, or Redis with every key of
    the store deleted (FLUSHALL, limited to this test's prefix)."""
    if isinstance(store, MemoryQuotaStore):
        return MemoryQuotaStore()
    client, prefix = store._client, store._prefix  # type: ignore[attr-defined]
    keys = [key async for key in client.scan_iter(match=prefix + "*")]
    await client.delete(*keys)
    return store
