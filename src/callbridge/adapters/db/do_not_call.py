"""The do-not-call list in SQL: check and add on the request path, remove and list for
the operator (``callbridge dnc``, ``/admin/dnc``).

Numbers are stored only as keyed hashes (:func:`callbridge.domain.quotas.hashed`) with
a masked form for people; the plain number is never stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from callbridge.adapters.db.models import DoNotCallAuditRow, DoNotCallRow
from callbridge.adapters.db.store import utc_aware
from callbridge.adapters.db.transaction import connection, transaction

__all__ = ["DoNotCallChange", "DoNotCallEntry", "SqlDoNotCallList"]


@dataclass(frozen=True, slots=True)
class DoNotCallEntry:
    """One entry: the hashed and the masked number, who added it and when."""

    number_hash: str
    masked: str
    source: str
    added_at: datetime


@dataclass(frozen=True, slots=True)
class DoNotCallChange:
    """One audited change by a person: ``added`` or ``removed``, the masked number, by whom."""

    at: datetime
    action: str
    masked: str
    by: str


class SqlDoNotCallList:
    """The do-not-call list (a :class:`~callbridge.services.admission.DoNotCallList`).

    Every method raises :class:`~callbridge.errors.StoreError` if the database fails.

    Args:
        engine: the engine of the :class:`~callbridge.adapters.db.store.SqlCallStore`.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)

    def _tx(self) -> AbstractAsyncContextManager[AsyncSession]:
        return transaction(self._sessions)

    async def is_do_not_call(self, number_hash: str) -> bool:
        """Whether a (hashed) number is on the list (a Core read: every call request asks)."""
        stmt = select(DoNotCallRow.number_hash).where(DoNotCallRow.number_hash == number_hash)
        async with connection(self._engine) as conn:
            return (await conn.execute(stmt)).first() is not None

    async def add_do_not_call(self, number_hash: str, masked: str, source: str) -> None:
        """Put a (hashed) number on the list; adding it twice is harmless."""
        async with self._tx() as session:
            if await session.get(DoNotCallRow, number_hash) is None:
                session.add(
                    DoNotCallRow(
                        number_hash=number_hash,
                        masked=masked,
                        source=source,
                        added_at=datetime.now(UTC),
                    )
                )

    async def remove_do_not_call(self, number_hash: str) -> bool:
        """Take a (hashed) number off the list; True if it was on it."""
        async with self._tx() as session:
            result = await session.execute(
                delete(DoNotCallRow).where(DoNotCallRow.number_hash == number_hash)
            )
        return bool(getattr(result, "rowcount", 0))

    async def change_by_person(self, action: str, number_hash: str, masked: str, by: str) -> bool:
        """Add (``action="added"``) or remove (``"removed"``) a number for a person, with
        an audit record of who did it, in one transaction.

        Returns:
            Whether the list changed (adding a listed number, or removing an absent one,
            changes nothing and leaves no record).
        """
        async with self._tx() as session:
            present = await session.get(DoNotCallRow, number_hash) is not None
            now = datetime.now(UTC)
            if action == "added" and not present:
                session.add(
                    DoNotCallRow(
                        number_hash=number_hash, masked=masked, source="operator", added_at=now
                    )
                )
            elif action == "removed" and present:
                await session.execute(
                    delete(DoNotCallRow).where(DoNotCallRow.number_hash == number_hash)
                )
            else:
                return False
            session.add(
                DoNotCallAuditRow(
                    at=now, action=action, masked=masked, number_hash=number_hash, by=by[:40]
                )
            )
        return True

    async def changes(self, *, limit: int = 50) -> Sequence[DoNotCallChange]:
        """The audited changes, newest first."""
        stmt = (
            select(DoNotCallAuditRow)
            .order_by(DoNotCallAuditRow.at.desc(), DoNotCallAuditRow.id.desc())
            .limit(limit)
        )
        async with self._tx() as session:
            rows = (await session.execute(stmt)).scalars().all()
        return [
            DoNotCallChange(at=utc_aware(r.at), action=r.action, masked=r.masked, by=r.by)
            for r in rows
        ]

    async def entries(self, *, limit: int = 1000) -> Sequence[DoNotCallEntry]:
        """The entries, newest first."""
        stmt = select(DoNotCallRow).order_by(DoNotCallRow.added_at.desc()).limit(limit)
        async with self._tx() as session:
            rows = (await session.execute(stmt)).scalars().all()
        return [
            DoNotCallEntry(
                number_hash=row.number_hash,
                masked=row.masked,
                source=row.source,
                added_at=utc_aware(row.added_at),
            )
            for row in rows
        ]
