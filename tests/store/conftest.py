"""Store fixtures: a freshly migrated database on SQLite and on PostgreSQL.

PostgreSQL comes from ``DATABASE_URL_TEST_PG`` (for example
``postgresql+asyncpg://postgres@127.0.0.1:54329/postgres``, as ``.ci/run`` starts
it); each test gets a database of its own, created and dropped around it. Without
that variable the PostgreSQL cases are skipped, except in CI (``CI`` set), where
they fail: nothing is skipped in CI.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio

from callbridge.adapters.db.migrate import upgrade
from callbridge.adapters.db.store import SqlCallStore, make_engine
from tests.support.need import missing

PG_ENV = "DATABASE_URL_TEST_PG"


def postgres_server_url() -> str:
    """The PostgreSQL server to test against; skip (or fail in CI) when none is given."""
    url = os.environ.get(PG_ENV)
    if not url:
        missing(f"{PG_ENV} is not set: no PostgreSQL to test the store against")
    return url


def _dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


@pytest_asyncio.fixture
async def postgres_url() -> AsyncIterator[str]:
    """A fresh, empty PostgreSQL database (its SQLAlchemy URL), dropped afterwards."""
    server = postgres_server_url()
    name = "cb_test_" + secrets.token_hex(6)
    admin = await asyncpg.connect(_dsn(server))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    base, _, _ = server.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        admin = await asyncpg.connect(_dsn(server))
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database URL of each kind (the PostgreSQL one from :func:`postgres_url`)."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path}/store.db"
    return str(request.getfixturevalue("postgres_url"))


@pytest_asyncio.fixture
async def store(database_url: str) -> AsyncIterator[SqlCallStore]:
    """A migrated, empty store."""
    await upgrade(database_url)
    store = SqlCallStore(make_engine(database_url))
    try:
        yield store
    finally:
        await store.aclose()
