"""Job leases and stream heartbeats in the database, for deployments without Redis
(migration 0006).

A lease is one row per job name. Taking or renewing it is one atomic conditional
upsert (``INSERT … ON CONFLICT (name) DO UPDATE … WHERE`` the row is ours or has
expired, ``RETURNING`` the name), which SQLite (3.35+) and PostgreSQL both run as
a single statement: of any number of processes racing for a free lease, exactly one
sees a row come back.

A heartbeat is one row per call, its ``expires_at`` pushed forward by the process
that bridges the call's media stream.
"""

from __future__ import annotations

from collections.abc import Collection
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import DateTime, ForeignKey, String, bindparam, delete, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from callbridge.adapters.db.models import Base
from callbridge.adapters.db.transaction import connection, transaction
from callbridge.ports import Clock

#: How long a lapsed heartbeat row is kept (then :meth:`SqlHeartbeats.beat` deletes it).
_KEEP_LAPSED = timedelta(hours=1)
#: How often a beat also deletes the lapsed rows.
_SWEEP_EVERY = timedelta(minutes=5)


class LeaseRow(Base):
    """Who holds a job's lease, and until when."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class HeartbeatRow(Base):
    """The last word of the process bridging a call's stream: alive until ``expires_at``."""

    __tablename__ = "stream_heartbeats"

    call_id: Mapped[str] = mapped_column(
        ForeignKey("calls.id", ondelete="CASCADE"), primary_key=True
    )
    owner: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


def _insert(engine: AsyncEngine, table: Any) -> Any:
    """The dialect's ``INSERT`` (the one with ``on_conflict_do_update``)."""
    if engine.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


class SqlLease:
    """Implements :class:`callbridge.ports.Lease` in the ``leases`` table.

    Args:
        engine: the engine of the :class:`~callbridge.adapters.db.store.SqlCallStore`.
        clock: the time a lease expires by (processes sharing a database are expected
            to keep their clocks in step, as for every other time we store).
    """

    def __init__(self, engine: AsyncEngine, clock: Clock) -> None:
        self._engine = engine
        self._clock = clock
        # Built once, run on a bare connection: every job takes and gives up its lease
        # each pass, every few seconds, on the loop that pumps the media (see
        # SqlHeartbeats: building an upsert each time was most of a pass's cost).
        take = _insert(engine, LeaseRow).values(
            name=bindparam("name"), owner=bindparam("owner"), expires_at=bindparam("until")
        )
        self._take = take.on_conflict_do_update(
            index_elements=[LeaseRow.name],
            set_={"owner": take.excluded.owner, "expires_at": take.excluded.expires_at},
            where=or_(
                LeaseRow.owner == take.excluded.owner,
                LeaseRow.expires_at <= bindparam("now", type_=LeaseRow.expires_at.type),
            ),
        ).returning(LeaseRow.name)
        self._let_go = delete(LeaseRow).where(
            LeaseRow.name == bindparam("name"), LeaseRow.owner == bindparam("owner")
        )

    async def acquire(self, name: str, owner: str, ttl_s: float) -> bool:
        """See the port. Raises StoreError when the database fails."""
        now = self._clock.now()
        params = {
            "name": name,
            "owner": owner,
            "until": now + timedelta(seconds=ttl_s),
            "now": now,
        }
        async with connection(self._engine) as conn:
            taken = (await conn.execute(self._take, params)).scalar_one_or_none()
        return taken is not None

    async def release(self, name: str, owner: str) -> None:
        """See the port. Raises StoreError when the database fails."""
        async with connection(self._engine) as conn:
            await conn.execute(self._let_go, {"name": name, "owner": owner})


class SqlHeartbeats:
    """Implements :class:`callbridge.ports.Heartbeats` in the ``stream_heartbeats`` table.

    Args:
        engine: the engine of the :class:`~callbridge.adapters.db.store.SqlCallStore`.
        clock: the clock.
        owner: this process's id (kept in the row, for an operator's eyes).
    """

    def __init__(self, engine: AsyncEngine, clock: Clock, *, owner: str) -> None:
        self._engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._clock = clock
        self._owner = owner
        # Built once: the beat runs every few seconds on the loop that pumps the media,
        # and building an upsert (its ``excluded`` columns) and going through the ORM's
        # bulk insert cost 50-60 ms of CPU in one step, with 100 calls up (issue 12:
        # code this rare runs cold).
        upsert = _insert(engine, HeartbeatRow)
        self._upsert = upsert.on_conflict_do_update(
            index_elements=[HeartbeatRow.call_id],
            set_={"owner": upsert.excluded.owner, "expires_at": upsert.excluded.expires_at},
        )
        self._stale = delete(HeartbeatRow).where(
            HeartbeatRow.expires_at < bindparam("before", type_=HeartbeatRow.expires_at.type)
        )
        self._swept_at: datetime | None = None

    def _tx(self) -> AbstractAsyncContextManager[AsyncSession]:
        return transaction(self._sessions)

    async def beat(self, call_ids: Collection[str], ttl_s: float) -> None:
        """See the port. Raises StoreError when the database fails."""
        if not call_ids:
            return
        now = self._clock.now()
        until = now + timedelta(seconds=ttl_s)
        # One statement, many parameter sets (an "executemany") on a bare connection:
        # compiled once and cached. A multi-row VALUES is compiled afresh for each
        # distinct count of calls: 10-70 ms of CPU with 100 calls up.
        rows = [{"call_id": i, "owner": self._owner, "expires_at": until} for i in sorted(call_ids)]
        async with connection(self._engine) as conn:
            await conn.execute(self._upsert, rows)
            # A call's row outlives its stream; those lapsed an hour ago go, so the
            # table holds only the recent calls. Once a sweep interval, not every beat.
            swept = self._swept_at
            if swept is None or now - swept >= _SWEEP_EVERY:
                await conn.execute(self._stale, {"before": until - _KEEP_LAPSED})
                self._swept_at = now

    async def alive(self, call_ids: Collection[str]) -> set[str]:
        """See the port. Raises StoreError when the database fails."""
        if not call_ids:
            return set()
        stmt = select(HeartbeatRow.call_id).where(
            HeartbeatRow.call_id.in_(list(call_ids)),
            HeartbeatRow.expires_at > self._clock.now(),
        )
        async with self._tx() as session:
            return {str(i) for i in (await session.execute(stmt)).scalars()}
