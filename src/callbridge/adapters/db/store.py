"""The SQLAlchemy (async) implementation of :class:`callbridge.ports.CallStore`.

SQLite (aiosqlite, WAL) for one process and PostgreSQL (asyncpg) for many; the
same code serves both. Every write is one transaction; database errors become
:class:`~callbridge.errors.StoreError` here and nowhere else.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from functools import partial
from types import SimpleNamespace
from typing import Any, cast, overload

from sqlalchemy import (
    Row,
    Select,
    Table,
    and_,
    bindparam,
    event,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from callbridge.adapters.db import sqlite_loop
from callbridge.adapters.db.models import CallRow, EventRow, SpendLedgerRow, TurnRow
from callbridge.adapters.db.spend_ledger import day_date
from callbridge.adapters.db.transaction import connection, transaction
from callbridge.domain.call import TERMINAL, Call, CallMode, CallStatus, ChatContext
from callbridge.errors import Conflict, NotFound
from callbridge.ports import CallEvent, NewCall, StatusUpdate, TranscriptTurn


@overload
def utc_aware(value: datetime) -> datetime: ...
@overload
def utc_aware(value: None) -> None: ...
def utc_aware(value: datetime | None) -> datetime | None:
    """A datetime read back from the database, as UTC (SQLite hands back naive ones;
    everything we store is UTC)."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


# The tables themselves, for Core statements (``__table__`` is typed as a FromClause).
_CALLS = cast(Table, CallRow.__table__)
_EVENTS = cast(Table, EventRow.__table__)
_TURNS = cast(Table, TurnRow.__table__)
#: The statuses a call never leaves, as stored.
_TERMINAL_VALUES = sorted(status.value for status in TERMINAL)
_LEDGER = cast(Table, SpendLedgerRow.__table__)
#: Every column of a call, as a fresh row has them before anything is set.
_EMPTY_CALL: dict[str, Any] = {c.name: None for c in _CALLS.columns}


def _to_call(row: CallRow | Row[Any] | Any) -> Call:
    """A call from its row: an ORM object, a Core row or anything with its columns."""
    created = utc_aware(row.created_at)
    return Call(
        id=row.id,
        to_number=row.to_number,
        dialled_number=row.dialled_number,
        mode=CallMode(row.mode),
        status=CallStatus(row.status),
        created_at=created,
        context=ChatContext(
            visitor_name=row.context_name,
            reason=row.context_reason,
            summary=row.context_summary,
            conversation_id=row.context_conversation_id,
        ),
        call_sid=row.call_sid,
        failure_code=row.failure_code,
        failure_reason=row.failure_reason,
        provider_error_code=row.provider_error_code,
        answered_at=utc_aware(row.answered_at),
        ended_at=utc_aware(row.ended_at),
        duration_s=row.duration_s,
        price=row.price,
        price_unit=row.price_unit,
        answered_by=row.answered_by,
        amd_duration_ms=row.amd_duration_ms,
        message_left=row.message_left,
        stream_sid=row.stream_sid,
        agent_conversation_id=row.agent_conversation_id,
        consent=row.consent,
        analysis=row.analysis,
        is_test=bool(row.is_test),
        scheduled_for=utc_aware(row.scheduled_for),
        retry_on_no_answer=bool(row.retry_on_no_answer),
        retry_of=row.retry_of,
        attempt=row.attempt or 1,
        client_ip_hash=row.client_ip_hash,
    )


def make_engine(url: str, *, echo: bool = False) -> AsyncEngine:
    """Create the engine for ``url``; SQLite gets WAL, a busy timeout and foreign keys."""
    if url.startswith("sqlite"):
        # One connection: SQLite takes one writer at a time anyway, and queueing for the
        # pool is FIFO and immediate, where a second writer would sleep in SQLite's
        # busy handler (up to 100 ms a try) while holding a request up. A status callback
        # waits behind at most the bounded set-ups' short transactions (services/overload).
        # Quick calls run on the loop's thread, with no busy timeout there; a statement
        # that meets another process's lock waits in aiosqlite's thread (sqlite_loop).
        database = make_url(url).database or ":memory:"

        engine = create_async_engine(
            url,
            echo=echo,
            async_creator=partial(sqlite_loop.connect, database),
            pool_size=1,
            max_overflow=0,
        )

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=0")
            cursor.close()

        return engine
    # 30 connections at most; call set-ups hold one at a time and are bounded below that
    # (CALLBRIDGE_MAX_SETUPS_IN_FLIGHT, 16), so status callbacks always find one free.
    # pool_pre_ping: a connection that died with a database restart is replaced at
    # checkout, so the process recovers without one. The connect timeout bounds how
    # long a request waits for a server that accepts TCP but does not answer (asyncpg's
    # default is 60 s); the request then gets its 503 (Unavailable).
    return create_async_engine(
        url,
        echo=echo,
        pool_pre_ping=True,
        pool_size=10,
        max_overflow=20,
        pool_timeout=10,
        connect_args={"timeout": 5},
    )


class SqlCallStore:
    """Calls, events and transcripts in SQLite or PostgreSQL."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)

    @property
    def engine(self) -> AsyncEngine:
        """The engine (for migrations and health checks)."""
        return self._engine

    def _tx(self) -> AbstractAsyncContextManager[AsyncSession]:
        return transaction(self._sessions)

    def _conn(self) -> AbstractAsyncContextManager[AsyncConnection]:
        return connection(self._engine)

    async def add_call(self, call: NewCall, *, event: CallEvent | None = None) -> Call:
        values: dict[str, Any] = {
            "id": call.id,
            "to_number": call.to_number,
            "dialled_number": call.dialled_number,
            "mode": call.mode,
            "status": (
                CallStatus.SCHEDULED if call.scheduled_for is not None else CallStatus.REQUESTED
            ).value,
            "context_name": call.context_name,
            "context_reason": call.context_reason,
            "context_summary": call.context_summary,
            "context_conversation_id": call.context_conversation_id,
            "created_at": call.created_at,
            "stream_token_hash": call.stream_token_hash,
            "stream_token_used": False,
            "idempotency_key": call.idempotency_key,
            "client_ip_hash": call.client_ip_hash,
            "is_test": call.is_test,
            "scheduled_for": call.scheduled_for,
            "retry_on_no_answer": call.retry_on_no_answer,
            "retry_of": call.retry_of,
            "attempt": call.attempt,
        }
        try:
            async with self._conn() as conn:
                await conn.execute(insert(_CALLS), values)
                if call.spend is not None:
                    # The ledger line goes in with the call, or neither does.
                    await conn.execute(
                        insert(_LEDGER),
                        {
                            "call_id": call.id,
                            "day": day_date(call.spend.day),
                            "country_code": call.spend.country_code,
                            "reserved_micros": call.spend.reserved_micros,
                            "updated_at": call.created_at,
                        },
                    )
                if event is not None:
                    await self._insert_event(conn, event)
        except IntegrityError as exc:
            raise Conflict("a call with this idempotency key already exists") from exc
        return _to_call(SimpleNamespace(**(_EMPTY_CALL | values)))

    async def get_call(self, call_id: str) -> Call | None:
        async with self._conn() as conn:
            row = (await conn.execute(select(_CALLS).where(_CALLS.c.id == call_id))).first()
            return _to_call(row) if row else None

    async def get_call_by_sid(self, call_sid: str) -> Call | None:
        async with self._conn() as conn:
            stmt = select(_CALLS).where(_CALLS.c.call_sid == call_sid)
            row = (await conn.execute(stmt)).first()
            return _to_call(row) if row else None

    async def get_by_idempotency_key(self, key: str) -> tuple[Call, str | None] | None:
        async with self._conn() as conn:
            stmt = select(_CALLS).where(_CALLS.c.idempotency_key == key)
            row = (await conn.execute(stmt)).first()
            return (_to_call(row), row.response_json) if row else None

    async def save_response(self, call_id: str, response_json: str) -> None:
        async with self._conn() as conn:
            await conn.execute(
                update(_CALLS)
                .where(_CALLS.c.id == call_id, _CALLS.c.response_json.is_(None))
                .values(response_json=response_json)
            )

    async def update_call(
        self,
        call_id: str,
        changes: StatusUpdate,
        *,
        expect: CallStatus | None = None,
        event: CallEvent | None = None,
    ) -> Call:
        async with self._conn() as conn:
            if event is not None:
                await self._insert_event(conn, event)
            return await self._update(conn, call_id, changes, expect)

    async def record_and_update(
        self, event_: CallEvent, changes: StatusUpdate, *, expect: CallStatus
    ) -> tuple[bool, Call]:
        async with self._conn() as conn:
            fresh = await self._insert_event(conn, event_)
            return fresh, await self._update(conn, event_.call_id, changes, expect)

    async def apply_by_sid(
        self, call_sid: str, decide: Callable[[Call], tuple[CallEvent, StatusUpdate]]
    ) -> tuple[Call, bool, Call] | None:
        async with self._conn() as conn:
            stmt = select(_CALLS).where(_CALLS.c.call_sid == call_sid).with_for_update()
            row = (await conn.execute(stmt)).first()
            if row is None:
                return None
            call = _to_call(row)
            event_, changes = decide(call)
            fresh = await self._insert_event(conn, event_)
            return call, fresh, await self._update(conn, call.id, changes, call.status)

    async def _update(
        self,
        conn: AsyncConnection,
        call_id: str,
        changes: StatusUpdate,
        expect: CallStatus | None,
    ) -> Call:
        """One ``UPDATE … RETURNING``: the status check, the write and the read at once
        (the row is locked by the update itself, on both databases)."""
        values: dict[str, Any] = {}
        for f in fields(changes):
            value = getattr(changes, f.name)
            if value is not None:
                values[f.name] = value.value if isinstance(value, CallStatus) else value
        where = [_CALLS.c.id == call_id]
        if expect is not None:
            where.append(_CALLS.c.status == expect.value)
        if values:
            stmt = update(_CALLS).where(*where).values(values).returning(*_CALLS.columns)
            row = (await conn.execute(stmt)).first()
        else:
            row = (await conn.execute(select(_CALLS).where(*where))).first()
        if row is not None:
            return _to_call(row)
        status = (
            await conn.execute(select(_CALLS.c.status).where(_CALLS.c.id == call_id))
        ).scalar_one_or_none()
        if status is None:
            raise NotFound(f"no call {call_id}")
        assert expect is not None
        raise Conflict(f"call {call_id} is {status}, not {expect.value}")

    def _insert_once(self) -> Any:
        """An INSERT of a timeline event that skips a duplicate (same source, status and
        SequenceNumber) instead of failing, so it can share a transaction."""
        if self._engine.dialect.name == "postgresql":
            return postgresql.insert(_EVENTS).on_conflict_do_nothing()
        return sqlite.insert(_EVENTS).on_conflict_do_nothing()

    async def _insert_event(self, conn: AsyncConnection, event_: CallEvent) -> bool:
        """Append ``event_`` in ``conn``'s transaction; False if it was already there."""
        dedupe = (
            f"{event_.source}:{event_.status}:{event_.sequence_number}"
            if event_.sequence_number is not None
            else None
        )
        result = await conn.execute(
            self._insert_once(),
            {
                "call_id": event_.call_id,
                "source": event_.source,
                "status": event_.status,
                "sequence_number": event_.sequence_number,
                "dedupe_key": dedupe,
                "at": event_.at,
                "detail": (
                    json.dumps(dict(event_.detail), sort_keys=True) if event_.detail else None
                ),
            },
        )
        return bool(getattr(result, "rowcount", 0) == 1)

    async def add_event(self, event_: CallEvent) -> bool:
        try:
            async with self._conn() as conn:
                return await self._insert_event(conn, event_)
        except IntegrityError:
            return False  # no such call (the foreign key)

    async def events(self, call_id: str) -> Sequence[CallEvent]:
        async with self._tx() as session:
            rows = (
                await session.execute(
                    select(EventRow).where(EventRow.call_id == call_id).order_by(EventRow.id)
                )
            ).scalars()
            return [
                CallEvent(
                    id=r.id,
                    call_id=r.call_id,
                    source=r.source,
                    status=r.status,
                    sequence_number=r.sequence_number,
                    at=utc_aware(r.at),
                    detail=json.loads(r.detail) if r.detail else {},
                )
                for r in rows
            ]

    async def claim_stream(
        self, call_id: str, call_sid: str, token_hash: str, stream_sid: str
    ) -> Call | None:
        async with self._conn() as conn:
            row = (
                await conn.execute(
                    update(_CALLS)
                    .where(
                        _CALLS.c.id == call_id,
                        _CALLS.c.call_sid == call_sid,
                        _CALLS.c.stream_token_hash == token_hash,
                        _CALLS.c.stream_token_used.is_(False),
                        _CALLS.c.status.not_in(_TERMINAL_VALUES),
                    )
                    .values(stream_token_used=True, stream_sid=stream_sid)
                    .returning(*_CALLS.c)
                )
            ).first()
            return _to_call(row) if row else None

    async def renew_stream_token(self, call_id: str, token_hash: str) -> None:
        async with self._conn() as conn:
            await conn.execute(
                update(_CALLS)
                .where(_CALLS.c.id == call_id)
                .values(stream_token_hash=token_hash, stream_token_used=False)
            )

    async def add_turn(self, turn: TranscriptTurn) -> None:
        await self.add_turns([turn])

    async def add_turns(self, turns: Sequence[TranscriptTurn]) -> None:
        if not turns:
            return
        async with self._conn() as conn:
            await conn.execute(
                insert(_TURNS),
                [
                    {
                        "call_id": turn.call_id,
                        "role": turn.role,
                        "text": turn.text,
                        "heard_text": turn.heard_text,
                        "interrupted": turn.interrupted,
                        "event_id": turn.event_id,
                        "at": turn.at,
                    }
                    for turn in turns
                ],
            )

    async def turns(self, call_id: str) -> Sequence[TranscriptTurn]:
        async with self._tx() as session:
            rows = (
                await session.execute(
                    select(TurnRow)
                    .where(TurnRow.call_id == call_id)
                    .order_by(TurnRow.at, TurnRow.id)
                )
            ).scalars()
            return [
                TranscriptTurn(
                    call_id=r.call_id,
                    role=r.role,
                    text=r.text,
                    heard_text=r.heard_text,
                    interrupted=r.interrupted,
                    event_id=r.event_id,
                    at=utc_aware(r.at),
                )
                for r in rows
            ]

    async def recent_calls(
        self, *, limit: int = 50, status: str | None = None, since: datetime | None = None
    ) -> Sequence[Call]:
        stmt = select(CallRow).order_by(CallRow.created_at.desc()).limit(limit)
        if status:
            stmt = stmt.where(CallRow.status == status)
        if since:
            stmt = stmt.where(CallRow.created_at >= since)
        async with self._tx() as session:
            return [_to_call(r) for r in (await session.execute(stmt)).scalars()]

    async def ping(self) -> None:
        async with self._tx() as session:
            await session.execute(text("SELECT 1"))

    async def aclose(self) -> None:
        await self._engine.dispose()


@dataclass(frozen=True, slots=True)
class _ReconcileReads:
    """The reconciler's statements (see :func:`_reconcile_reads`)."""

    unfinished: Select[Any]
    unpriced: Select[Any]
    unsettled: Select[Any]
    idle: Select[Any]
    live: Select[Any]


def _reconcile_reads() -> _ReconcileReads:
    """The reconciler's statements, built once with bind parameters (see ReconcileQueries)."""
    c = _CALLS.c
    stamp = c.created_at.type
    limit: Any = bindparam("limit")
    # Neither live nor overdue: the ended calls, and those the scheduler still holds.
    ended_or_waiting = [s.value for s in TERMINAL | {CallStatus.SCHEDULED}]
    # A scheduled call waits by design (the scheduler owns it); one that was claimed
    # counts from its time, not from when it was asked for days before.
    unfinished = (
        select(_CALLS)
        .where(
            func.coalesce(c.scheduled_for, c.created_at) < bindparam("before", type_=stamp),
            c.status.not_in(ended_or_waiting),
        )
        .order_by(c.created_at)
        .limit(limit)
    )
    unpriced = (
        select(_CALLS)
        .where(
            c.created_at >= bindparam("since", type_=stamp),
            c.status.in_([CallStatus.COMPLETED.value, CallStatus.VOICEMAIL.value]),
            c.price.is_(None),
            c.call_sid.is_not(None),
        )
        .order_by(c.created_at)
        .limit(limit)
    )
    line = _LEDGER.c
    usd = func.upper(func.coalesce(c.price_unit, "USD")) == "USD"
    unsettled = (
        select(_CALLS)
        .join(_LEDGER, line.call_id == c.id)
        .where(
            c.created_at >= bindparam("since", type_=stamp),
            c.status.in_(_TERMINAL_VALUES),
            or_(
                line.settled_at.is_(None),
                (c.price.is_not(None) & usd & line.actual_micros.is_(None)),
            ),
        )
        .order_by(c.created_at)
        .limit(limit)
    )
    before = bindparam("before", type_=stamp)
    last_event = select(func.max(_EVENTS.c.at)).where(_EVENTS.c.call_id == c.id).scalar_subquery()
    idle = (
        select(_CALLS)
        .where(
            c.status == CallStatus.IN_PROGRESS.value,
            c.stream_sid.is_not(None),
            c.created_at < before,
            or_(last_event.is_(None), last_event < before),
        )
        .order_by(c.created_at)
        .limit(limit)
    )
    # A scheduled call is not live: it holds no slot until it is placed, and one the
    # scheduler has claimed (``requested``, no CallSid yet) gets its slot from the
    # admission that runs as it is placed, not from the slot audit.
    claimed_unplaced = and_(
        c.status == CallStatus.REQUESTED.value,
        c.scheduled_for.is_not(None),
        c.call_sid.is_(None),
    )
    live = select(c.id).where(
        c.status.not_in(ended_or_waiting),
        ~claimed_unplaced,
    )
    return _ReconcileReads(unfinished, unpriced, unsettled, idle, live)


class ReconcileQueries:
    """The reconciler's reads (kept apart from the hot-path store methods).

    Each is a Core statement built once, run on a bare connection: the reconciler's
    pass runs every few seconds in every control process, on the loop that pumps the
    media in ``--role all``. Built afresh through the ORM each time, a pass was one
    20-35 ms stall of that loop with 100 calls up (issue 12: code this rare runs cold).
    """

    _READS = _reconcile_reads()

    def __init__(self, store: SqlCallStore) -> None:
        self._store = store

    async def _calls(self, stmt: Select[Any], **params: Any) -> Sequence[Call]:
        async with self._store._conn() as conn:
            return [_to_call(r) for r in await conn.execute(stmt, params)]

    async def unfinished_before(self, before: datetime, limit: int = 200) -> Sequence[Call]:
        """Calls not in a terminal status that were created before ``before``."""
        return await self._calls(self._READS.unfinished, before=before, limit=limit)

    async def unpriced_since(self, since: datetime, limit: int = 200) -> Sequence[Call]:
        """Answered calls (completed, voicemail) since ``since`` Twilio had not yet priced."""
        return await self._calls(self._READS.unpriced, since=since, limit=limit)

    async def unsettled_since(self, since: datetime, limit: int = 200) -> Sequence[Call]:
        """Ended calls since ``since`` whose spend ledger line is short of the truth stored:
        never settled, or the call has a price (in USD, the only unit the ledger books)
        that the line does not carry yet."""
        return await self._calls(self._READS.unsettled, since=since, limit=limit)

    async def streamed_idle_since(self, before: datetime, limit: int = 200) -> Sequence[Call]:
        """Calls in progress whose media stream started, created before ``before``, and
        with no timeline event (callback, stream event) since ``before``, oldest first."""
        return await self._calls(self._READS.idle, before=before, limit=limit)

    async def live_call_ids(self) -> Collection[str]:
        """The ids of every call not in a terminal status (nor scheduled, nor claimed
        by the scheduler and not placed yet)."""
        async with self._store._conn() as conn:
            return {str(i) for i in (await conn.execute(self._READS.live)).scalars()}
