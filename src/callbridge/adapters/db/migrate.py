"""Apply Alembic migrations (``callbridge db upgrade``, and at start-up)."""

from __future__ import annotations

import asyncio
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import make_url
from sqlalchemy.exc import InterfaceError, OperationalError

from callbridge.errors import ConfigError

_HERE = Path(__file__).resolve().parent / "migrations"


def alembic_config(url: str) -> Config:
    """An Alembic configuration for ``url`` with callbridge's migration scripts."""
    config = Config()
    config.set_main_option("script_location", str(_HERE))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade_sync(url: str, revision: str = "head") -> None:
    """Upgrade the database at ``url`` to ``revision`` (blocking).

    Raises:
        ConfigError: the database cannot be reached or opened; the message says why
            in one sentence and never repeats the URL (it may hold a password).
    """
    _check_sqlite_folder(url)
    try:
        with _sqlite_migration_lock(url):
            command.upgrade(alembic_config(url), revision)
    except (OperationalError, InterfaceError, OSError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        hint = (
            " Check that its folder exists and callbridge may write there."
            if url.startswith("sqlite")
            else " Check that the server is running and the address and password are right."
        )
        raise ConfigError(
            f"The database in DATABASE_URL can't be opened ({reason}).{hint}"
        ) from exc


async def upgrade(url: str, revision: str = "head") -> None:
    """Upgrade without blocking the event loop (Alembic runs its own loop in a thread)."""
    await asyncio.to_thread(upgrade_sync, url, revision)


def _check_sqlite_folder(url: str) -> None:
    """Refuse an in-memory SQLite database, or a file in a folder that does not exist,
    before any driver runs.

    (aiosqlite's worker thread, failing to open such a file inside Alembic's short-lived
    event loop, may report to that loop after it closed.)
    """
    parsed = make_url(url)
    if not parsed.drivername.startswith("sqlite"):
        return
    if parsed.database in (None, "", ":memory:") or "mode=memory" in url:
        raise ConfigError(
            "DATABASE_URL names an in-memory SQLite database, which the migrations and the"
            " server would each see empty: name a file, e.g. sqlite+aiosqlite:///./callbridge.db."
        )
    folder = Path(parsed.database).expanduser().resolve().parent
    if not folder.is_dir():
        raise ConfigError(
            f"The database in DATABASE_URL can't be opened (no folder {folder})."
            " Check that its folder exists and callbridge may write there."
        )


@contextmanager
def _sqlite_migration_lock(url: str) -> Iterator[None]:
    """Serialise upgrades of one SQLite file across processes (PostgreSQL's are serialised
    by an advisory lock in ``migrations/env.py``).

    SQLite serves one process in production, but ``callbridge db upgrade`` may run
    beside a starting server, and tests start several: without a lock both would see
    no ``alembic_version`` and create the same tables. The lock is an exclusive
    ``flock`` on a file beside the database (``<db>.migrate-lock``), never on the
    database file itself: closing any descriptor of that file would drop the POSIX
    locks SQLite holds on it in this process. The kernel releases a ``flock`` when
    its holder dies, so a crashed upgrade never blocks the next one.
    """
    parsed = make_url(url)
    if not parsed.drivername.startswith("sqlite") or not parsed.database:
        yield
        return
    lock_path = (
        Path(parsed.database)
        .expanduser()
        .resolve()
        .with_name(Path(parsed.database).name + ".migrate-lock")
    )
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the flock
