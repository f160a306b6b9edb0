"""The background writer of the media path, on a real SQLite store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio
from sqlalchemy import text

from callbridge.adapters.db.migrate import upgrade
from callbridge.adapters.db.store import SqlCallStore, make_engine
from callbridge.metrics import Metrics
from callbridge.ports import CallEvent, NewCall, StatusUpdate, TranscriptTurn
from callbridge.services.writer import BackgroundWriter
from tests.support.calls import new_call

T0 = datetime(2026, 3, 2, 15, 4, 5, tzinfo=UTC)


def _call_1() -> NewCall:
    """The call every record here belongs to."""
    return new_call(stream_token_hash="h" * 64, client_ip_hash="ip" * 16, created_at=T0)


@pytest_asyncio.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlCallStore]:
    url = f"sqlite+aiosqlite:///{tmp_path}/w.db"
    await upgrade(url)
    store = SqlCallStore(make_engine(url))
    await store.add_call(_call_1())
    try:
        yield store
    finally:
        await store.aclose()


def _event(status: str, n: int = 0) -> CallEvent:
    return CallEvent(call_id="call_1", source="bridge", status=status, at=T0 + timedelta(seconds=n))


def _turn(n: int) -> TranscriptTurn:
    return TranscriptTurn(
        call_id="call_1", role="agent", text=f"turn {n}", at=T0 + timedelta(seconds=n)
    )


def _dropped(metrics: Metrics, kind: str, reason: str) -> float:
    value = metrics.registry.get_sample_value(
        "callbridge_writer_dropped_total", {"kind": kind, "reason": reason}
    )
    return value or 0.0


async def test_writes_arrive_in_one_flush(store: SqlCallStore) -> None:
    """Turns, events and a call's change, queued without waiting, are all stored by the
    time a flush returns, and nothing is left queued."""
    writer = BackgroundWriter(store=store, metrics=Metrics())
    writer.start()
    try:
        writer.call_update("call_1", StatusUpdate(agent_conversation_id="conv_1"))
        writer.event(_event("stream_started"))
        writer.turns([_turn(1), _turn(2)])
        assert writer.pending == 3
        assert await writer.flush(timeout_s=10)
        assert writer.pending == 0
    finally:
        await writer.aclose()
    call = await store.get_call("call_1")
    assert call is not None and call.agent_conversation_id == "conv_1"
    assert [t.text for t in await store.turns("call_1")] == ["turn 1", "turn 2"]
    assert [e.status for e in await store.events("call_1")] == ["stream_started"]


async def test_a_full_queue_drops_the_oldest_event_never_a_turn_first(
    store: SqlCallStore,
) -> None:
    """Past its capacity the writer drops the oldest non-critical item (an event), not a
    transcript turn, counts it, and never makes the caller wait."""
    metrics = Metrics()
    writer = BackgroundWriter(store=store, metrics=metrics, capacity=3)
    writer.turns([_turn(1)])
    writer.event(_event("first_agent_audio", 1))
    writer.event(_event("stream_stopped", 2))
    writer.turns([_turn(3)])  # full: the oldest event goes
    assert _dropped(metrics, "event", "full") == 1
    assert writer.pending == 3
    writer.start()
    try:
        assert await writer.flush(timeout_s=10)
    finally:
        await writer.aclose()
    assert [t.text for t in await store.turns("call_1")] == ["turn 1", "turn 3"]
    assert [e.status for e in await store.events("call_1")] == ["stream_stopped"]


async def test_a_database_that_refuses_then_answers_loses_nothing(
    store: SqlCallStore,
) -> None:
    """While another connection holds the database's write lock the writer keeps the
    records queued (a flush times out, the caller never waits longer); once the lock is
    gone they are written once each, and none is dropped."""
    metrics = Metrics()
    writer = BackgroundWriter(store=store, metrics=metrics)
    other = make_engine(str(store.engine.url))
    writer.start()
    try:
        async with other.connect() as locker:
            await locker.execute(text("BEGIN IMMEDIATE"))  # SQLite: one writer, this one
            writer.turns([_turn(1)])
            writer.event(_event("stream_stopped"))
            assert not await writer.flush(timeout_s=0.5)
            assert writer.pending > 0
            await locker.execute(text("ROLLBACK"))
        assert await writer.flush(timeout_s=60)
    finally:
        await writer.aclose()
        await other.dispose()
    assert [t.text for t in await store.turns("call_1")] == ["turn 1"]
    assert [e.status for e in await store.events("call_1")] == ["stream_stopped"]
    assert _dropped(metrics, "turns", "failed") == 0


@pytest.mark.postgres
async def test_a_hung_write_is_abandoned_then_written_once(postgres_url: str) -> None:
    """A write that hangs (another transaction holds the turns table's lock, so PostgreSQL
    makes the insert wait for as long as it is held) is abandoned after the writer's
    timeout, counted, and retried: once the lock is gone every record is written exactly
    once and none is dropped."""
    await upgrade(postgres_url)
    store = SqlCallStore(make_engine(postgres_url))
    await store.add_call(_call_1())
    metrics = Metrics()
    writer = BackgroundWriter(store=store, metrics=metrics, write_timeout_s=0.3)
    locker = await asyncpg.connect(postgres_url.replace("postgresql+asyncpg://", "postgresql://"))
    writer.start()
    try:
        lock = locker.transaction()
        await lock.start()
        await locker.execute("LOCK TABLE transcript_turns IN ACCESS EXCLUSIVE MODE")
        writer.turns([_turn(1)])
        writer.event(_event("stream_stopped"))
        for _ in range(200):  # until the first try has been given up (0.3 s and a pause)
            if _timeouts(metrics) >= 1:
                break
            await asyncio.sleep(0.05)
        assert _timeouts(metrics) >= 1
        assert writer.pending == 2
        await lock.rollback()
        assert await writer.flush(timeout_s=30)
    finally:
        await writer.aclose()
        await locker.close()
        await store.aclose()
    store = SqlCallStore(make_engine(postgres_url))
    try:
        assert [t.text for t in await store.turns("call_1")] == ["turn 1"]
        assert [e.status for e in await store.events("call_1")] == ["stream_stopped"]
    finally:
        await store.aclose()
    assert _dropped(metrics, "turns", "failed") == 0


def _timeouts(metrics: Metrics) -> float:
    return metrics.registry.get_sample_value("callbridge_writer_timeouts_total") or 0.0
