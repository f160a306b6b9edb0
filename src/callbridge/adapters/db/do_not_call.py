"""The do-not-call list's operator side: remove and list entries (``callbridge dnc``).

Numbers are stored only as keyed hashes (:func:`callbridge.domain.policy.hashed`)
with a masked form for people; :class:`~callbridge.adapters.db.store.SqlCallStore`
checks and adds entries on the request path, this module does the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import delete, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from callbridge.adapters.db.models import DoNotCallRow
from callbridge.errors import StoreError


@dataclass(frozen=True, slots=True)
class DoNotCallEntry:
    """One entry: the masked number, who added it and when."""

    number_hash: str
    masked: str
    source: str
    added_at: datetime


async def remove_do_not_call(engine: AsyncEngine, number_hash: str) -> bool:
    """Take a (hashed) number off the list; True if it was on it.

    Raises:
        StoreError: the database failed.
    """
    try:
        async with engine.begin() as conn:
            result = await conn.execute(
                delete(DoNotCallRow).where(DoNotCallRow.number_hash == number_hash)
            )
    except SQLAlchemyError as exc:
        raise StoreError(f"the database failed: {type(exc).__name__}") from exc
    return bool(getattr(result, "rowcount", 0))


async def list_do_not_call(engine: AsyncEngine, *, limit: int = 1000) -> Sequence[DoNotCallEntry]:
    """The entries, newest first (numbers masked; the plain number is never stored).

    Raises:
        StoreError: the database failed.
    """
    stmt = (
        select(
            DoNotCallRow.number_hash,
            DoNotCallRow.masked,
            DoNotCallRow.source,
            DoNotCallRow.added_at,
        )
        .order_by(DoNotCallRow.added_at.desc())
        .limit(limit)
    )
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
    except SQLAlchemyError as exc:
        raise StoreError(f"the database failed: {type(exc).__name__}") from exc
    return [
        DoNotCallEntry(
            number_hash=row.number_hash,
            masked=row.masked,
            source=row.source,
            added_at=row.added_at if row.added_at.tzinfo else row.added_at.replace(tzinfo=UTC),
        )
        for row in rows
    ]
