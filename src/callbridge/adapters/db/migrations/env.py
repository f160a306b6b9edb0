"""Alembic environment: runs migrations on callbridge's async engine."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection

from callbridge.adapters.db.models import Base
from callbridge.adapters.db.store import make_engine

config = context.config
target_metadata = Base.metadata

#: The PostgreSQL advisory lock every callbridge process takes around its upgrade
#: (an arbitrary fixed bigint: "cbmigrat" in ASCII).
MIGRATION_LOCK_KEY = 0x63626D6967726174


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async(url: str) -> None:
    engine = make_engine(url)
    try:
        async with engine.connect() as connection:
            if connection.dialect.name == "postgresql":
                # Processes started at once on an empty database would each see no
                # alembic_version and each create the tables; the loser crashed with a
                # UniqueViolation. The transaction-scoped lock, taken on the connection
                # that migrates, makes them take turns: the next one reads the version
                # the first committed and has nothing to do. It is released by the
                # commit (or the rollback), so a crash cannot leave it held.
                # https://www.postgresql.org/docs/current/explicit-locking.html#ADVISORY-LOCKS
                await connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
                )
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    """Upgrade the database named by the ``sqlalchemy.url`` option."""
    url = config.get_main_option("sqlalchemy.url")
    assert url, "sqlalchemy.url must be set by callbridge.adapters.db.migrate"
    asyncio.run(_run_async(url))


if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
