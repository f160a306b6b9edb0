"""One database transaction, with the store's error translation, for every SQL adapter.

A database outage does not always arrive as a :class:`~sqlalchemy.exc.SQLAlchemyError`:
while a pooled connection is checked out (or opened anew) the driver's own errors
come through as they are: ``ConnectionRefusedError`` and other ``OSError`` s,
``TimeoutError``, and asyncpg's ``CannotConnectNowError`` ("the database system is
starting up") or ``ConnectionDoesNotExistError``. :func:`database_errors` turns every
one of them into :class:`~callbridge.errors.Unavailable`, and any other database
failure into :class:`~callbridge.errors.StoreError`, so nothing above the adapters
sees a vendor type and every outage answers 503.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information
from sqlalchemy.exc import (
    DBAPIError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from callbridge.errors import StoreError, Unavailable

__all__ = ["connection", "database_errors", "transaction"]


# Raised by the driver itself, outside SQLAlchemy's wrapping: only while connecting.
_DRIVER_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError)


def _unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` says the database could not be reached (rather than refused a query)."""
    if isinstance(exc, OSError | PoolTimeout | OperationalError | InterfaceError):
        return True  # TimeoutError and ConnectionError are OSErrors
    if isinstance(exc, DBAPIError):
        return bool(exc.connection_invalidated) or _lost_server(exc.orig)
    return isinstance(exc, _DRIVER_ERRORS)


def _lost_server(error: BaseException | None) -> bool:
    """Whether a driver error's SQLSTATE says the server went away: class 08 (connection
    exception) or 57P (shutting down, crashed, not accepting connections yet).

    ``pg_ctl stop -m fast`` ends every open session with 57P01 ("terminating connection
    due to administrator command"), which SQLAlchemy does not count as a disconnect:
    a request that met it answered 503 at once instead of riding the outage out, and
    Twilio's retries of a status callback ran out before the database was back (the
    soak saw it). The code is on the SQLAlchemy adapter's error (``sqlstate``) and on
    asyncpg's own exceptions.
    """
    code = getattr(error, "sqlstate", None)
    return isinstance(code, str) and (code.startswith("08") or code.startswith("57P"))


@contextmanager
def database_errors() -> Iterator[None]:
    """Translate any database failure raised in the block (IntegrityError excepted).

    Raises:
        IntegrityError: a constraint refused a write, as it was.
        Unavailable: the database could not be reached (down, restarting, timed out).
        StoreError: any other database failure, named by its type only (no SQL,
            no parameters: they may hold personal data).
    """
    try:
        yield
    except IntegrityError:
        raise
    except (SQLAlchemyError, OSError, *_DRIVER_ERRORS) as exc:
        if _unreachable(exc):
            raise Unavailable(
                f"the database is unreachable: {type(exc).__name__}",
                dependency="database",
            ) from exc
        raise StoreError(
            f"the database failed: {type(exc).__name__}",
            dependency="database",
        ) from exc


@asynccontextmanager
async def transaction(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """A session in a transaction: committed when the block ends, rolled back if it raises.

    The connection is checked out, the statements run and the commit happens inside
    one translation, so an outage at any of these steps is an
    :class:`~callbridge.errors.Unavailable` and a failed commit leaves nothing written.

    Raises:
        IntegrityError: a constraint refused a write (callers turn a duplicate key
            into an answer: "already claimed", "already recorded").
        Unavailable: the database could not be reached.
        StoreError: any other database failure.
    """
    with database_errors():
        async with sessions() as session, session.begin():
            yield session


@asynccontextmanager
async def connection(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection in a transaction, for Core statements: no ORM session, no identity
    map and no unit of work, which the hot paths (a call's set-up, its callbacks) do
    not need. Committed when the block ends, rolled back if it raises; errors are
    translated as in :func:`transaction`.

    Raises:
        IntegrityError: a constraint refused a write.
        Unavailable: the database could not be reached.
        StoreError: any other database failure.
    """
    with database_errors():
        async with engine.begin() as conn:
            # The checkout (and, on SQLite, the statement after it: see sqlite_loop) runs
            # without suspending; a yield between them keeps each one step of the loop,
            # so media frames go through in between. A background job's first statement,
            # cold every few seconds, was one 9-13 ms step with 100 calls up.
            await asyncio.sleep(0)
            yield conn
