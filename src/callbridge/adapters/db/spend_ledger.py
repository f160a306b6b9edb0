"""The spend ledger in SQL: one line per call, settled under a row lock.

Lines are written by :meth:`callbridge.adapters.db.store.SqlCallStore.add_call` in the
call's own transaction; this adapter settles them and sums a day. Days are stored as
dates (UTC) and handled as days since the epoch, like the quota store's.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime, timedelta
from typing import Any, cast

from sqlalchemy import Row, Table, case, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from callbridge.adapters.db.models import SpendLedgerRow
from callbridge.adapters.db.transaction import connection, transaction
from callbridge.domain.spend import LedgerAmounts
from callbridge.ports import DaySpend, SpendChange

_EPOCH = date(1970, 1, 1)
_LINES = cast(Table, SpendLedgerRow.__table__)


def _amount_names(values: dict[str, object]) -> dict[str, Any]:
    """Column changes as :class:`LedgerAmounts` field changes."""
    names = {"estimated_micros": "estimated", "actual_micros": "actual"}
    return {names[k]: v for k, v in values.items() if k in names}


def day_date(day: int) -> date:
    """A day since the epoch as its UTC date."""
    return _EPOCH + timedelta(days=day)


def date_day(value: date) -> int:
    """A UTC date as days since the epoch."""
    return (value - _EPOCH).days


def amounts(row: SpendLedgerRow | Row[Any]) -> LedgerAmounts:
    """A ledger row's amounts (an ORM object or a Core row)."""
    return LedgerAmounts(
        reserved=row.reserved_micros, estimated=row.estimated_micros, actual=row.actual_micros
    )


class SqlSpendLedger:
    """Implements :class:`callbridge.ports.SpendLedger` on SQLite or PostgreSQL."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)

    async def settle(
        self, call_id: str, *, estimated: int | None, actual: int | None, at: datetime
    ) -> SpendChange | None:
        """Record the estimate and/or the price under a row lock (see the port).

        A price, once known, is kept: a later settle without one does not undo it.

        Raises:
            StoreError: the database failed.
        """
        line = _LINES
        async with connection(self._engine) as conn:
            stmt = select(line).where(line.c.call_id == call_id).with_for_update()
            row = (await conn.execute(stmt)).first()
            if row is None:
                return None
            before = amounts(row).booked
            values: dict[str, object] = {}
            if estimated is not None and estimated != row.estimated_micros:
                values["estimated_micros"] = estimated
            if actual is not None and actual != row.actual_micros:
                values["actual_micros"] = actual
            after = replace(amounts(row), **_amount_names(values))
            if values:
                values["updated_at"] = at
                if row.settled_at is None:
                    values["settled_at"] = at
                await conn.execute(update(line).where(line.c.call_id == call_id).values(values))
            return SpendChange(day=date_day(row.day), delta=after.booked - before)

    async def day_spend(self, day: int) -> DaySpend:
        """The day's lines summed: settled, still reserved (see the port).

        Raises:
            StoreError: the database failed.
        """
        line = SpendLedgerRow
        settled = func.coalesce(line.actual_micros, line.estimated_micros)
        unsettled = case((settled.is_(None), line.reserved_micros), else_=0)
        stmt = select(
            func.coalesce(func.sum(settled), 0),
            func.coalesce(func.sum(unsettled), 0),
            func.count(),
        ).where(line.day == day_date(day))
        async with transaction(self._sessions) as session:
            row = (await session.execute(stmt)).one()
        return DaySpend(settled=int(row[0]), reserved=int(row[1]), calls=int(row[2]))
