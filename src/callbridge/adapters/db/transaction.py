"""One database transaction, with the store's error translation, for every SQL adapter."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from callbridge.errors import StoreError

__all__ = ["transaction"]


@asynccontextmanager
async def transaction(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """A session in a transaction: committed when the block ends, rolled back if it raises.

    Raises:
        IntegrityError: a constraint refused a write (callers turn a duplicate key
            into an answer: "already claimed", "already recorded").
        StoreError: any other database failure, named by its type only (no SQL,
            no parameters: they may hold personal data).
    """
    try:
        async with sessions() as session, session.begin():
            yield session
    except IntegrityError:
        raise
    except SQLAlchemyError as exc:
        raise StoreError(f"the database failed: {type(exc).__name__}") from exc
