"""SQLite for the async engine without a thread hop per call: quick calls run on the loop.

aiosqlite runs every call (making a cursor, executing, fetching, closing the cursor,
committing) in its own thread and hands the result back through the event loop:
four or more thread hops per statement. Each hop needs the GIL back from the loop's
thread, which keeps it for up to the switch interval (5 ms) while it is busy pumping
media. Measured in one ``--role all`` process, 100 calls arriving 20 a second: the
loop spent ~30% of its samples waiting in aiosqlite, and a hop costs 30-90 µs of CPU
where the SQLite call itself takes 1-2 µs (a ``SELECT`` of one row, WAL, on this
machine).

:class:`LoopSqliteConnection` keeps aiosqlite's interface (what SQLAlchemy's
``sqlite+aiosqlite`` dialect drives) and its thread, but runs a call on the loop's
own thread when it cannot wait:

- the connection has a busy timeout of 0 on the loop: a statement that meets
  another process's write lock (a CLI command, a second process on the same file)
  fails at once with ``SQLITE_BUSY``, and is run again in aiosqlite's thread with
  the usual 30 s busy timeout, so the loop never sleeps in SQLite's busy handler
  (a statement refused with ``SQLITE_BUSY`` did nothing, so running it again is
  safe);
- ``COMMIT`` runs on the loop too, and WAL's automatic checkpoint is off on this
  connection: every :data:`CHECKPOINT_EVERY` commits a ``RESTART`` checkpoint (which
  writes and syncs the database file, then lets the WAL start over) runs in
  aiosqlite's thread, on a connection of its own there, beside the loop rather than
  inside a commit. While it is pending, a write on the loop meets ``SQLITE_BUSY`` and
  waits behind it in the thread, as above. (A ``PASSIVE`` one never completes while
  writes keep coming, and the WAL would only grow.) Sending every commit
  to the thread instead would cost ~20 hops per call set-up, each holding the pool's
  one connection while the thread waits for the GIL (up to 5 ms under load).

In WAL mode with ``synchronous=NORMAL`` the calls left on the loop touch memory and
the WAL only (no sync): microseconds, less than the hop they replace.

A call on the loop never suspends its caller, so each one ends with a bare yield
(``asyncio.sleep(0)``): a request's statements then run in the loop's turns, between
media frames, as they did when each one waited for the thread. Without it a status
callback that ends a call ran as one 10-20 ms step of the loop with 100 calls up (the
loop's callbacks timed with ``time.thread_time``, ``callbridge bench --calls 100``).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from functools import partial
from typing import Any, Final

import aiosqlite
import structlog

__all__ = ["BUSY_TIMEOUT_MS", "CHECKPOINT_EVERY", "LoopSqliteConnection", "connect"]

_log = structlog.get_logger(__name__)

#: How long a statement sent to the thread waits for another process's lock.
BUSY_TIMEOUT_MS: Final = 30_000
#: Commits between two checkpoints in the thread (SQLite's own default is every
#: 1000 WAL pages; a call's set-up commits ~20 transactions of a few pages each).
CHECKPOINT_EVERY: Final = 200


def _busy(exc: sqlite3.OperationalError) -> bool:
    return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_BUSY


class LoopSqliteConnection(aiosqlite.Connection):
    """An aiosqlite connection whose calls run on the event loop's thread when they can."""

    def __init__(self, connector: Callable[[], sqlite3.Connection], database: str) -> None:
        super().__init__(connector, iter_chunk_size=64)
        # aiosqlite 0.22 made its worker thread non-daemon, and the worker only returns
        # once the connection is closed: one connection that is never closed (a task
        # cancelled mid-checkout at shutdown, an engine nobody disposed) then holds the
        # process at exit for ever, after everything else has finished. SQLAlchemy marks
        # the threads of the connections it makes itself daemon for this reason; ours
        # come through ``async_creator``, so we do it here. An exit that skips the close
        # loses nothing committed: SQLite's WAL is safe against a process stopping at any
        # point, and an open transaction is rolled back when the file is next opened.
        self._thread.daemon = True
        self._database = database
        self._commits = 0
        self._checkpointer: sqlite3.Connection | None = None
        #: Calls sent to the thread and not finished there (even if their caller was
        #: cancelled): while there are any, every call goes to the thread after them,
        #: in order, so the loop never waits on the connection's mutex.
        self._thread_calls = 0
        self._thread_calls_lock = threading.Lock()

    async def _execute(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not self._running or not self._connection:
            raise ValueError("Connection closed")
        if self._thread_calls:
            return await self._in_thread(fn, *args, **kwargs)
        try:
            result = fn(*args, **kwargs)
        except sqlite3.OperationalError as exc:
            if not _busy(exc):
                raise
            result = await self._in_thread(self._waiting, partial(fn, *args, **kwargs))
        if getattr(fn, "__name__", "") == "commit":
            self._commits += 1
            if self._commits % CHECKPOINT_EVERY == 0 and self._database != ":memory:":
                self._tx.put_nowait((None, self._checkpoint))  # not awaited
        # Let the loop run what is ready (media frames) before the caller goes on. A
        # call on the loop returns without suspending, so without this a request and
        # all its statements ran as one step of the loop: 10-20 ms of CPU for a status
        # callback that ends a call, measured with 100 calls up, while no frame moved.
        await asyncio.sleep(0)
        return result

    async def _in_thread(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        with self._thread_calls_lock:
            self._thread_calls += 1

        def run() -> Any:
            try:
                return fn(*args, **kwargs)
            finally:
                with self._thread_calls_lock:
                    self._thread_calls -= 1

        future = asyncio.get_running_loop().create_future()
        self._tx.put_nowait((future, run))
        return await future

    def _waiting(self, call: Callable[[], Any]) -> Any:
        """``call`` with the busy timeout (in the thread), then back to none."""
        conn = self._conn
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        try:
            return call()
        finally:
            conn.execute("PRAGMA busy_timeout=0")

    def _checkpoint(self) -> None:
        """A checkpoint that restarts the WAL, in the thread (waiting up to 5 s for the
        loop's open transaction to end)."""
        try:
            if self._checkpointer is None:
                self._checkpointer = sqlite3.connect(self._database, timeout=5)
            self._checkpointer.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()
        except sqlite3.Error as exc:
            _log.warning("sqlite_checkpoint_failed", error=type(exc).__name__)

    async def close(self) -> None:
        """Close the connection, and the checkpoint's in the thread."""
        checkpointer, self._checkpointer = self._checkpointer, None
        if checkpointer is not None and self._running and self._connection:
            await self._in_thread(checkpointer.close)
        await super().close()


async def connect(database: str) -> LoopSqliteConnection:
    """A connection to ``database`` (a path, or ``:memory:``), for ``async_creator``.

    The connection is made in aiosqlite's thread and used from the loop's thread too
    (never both at once: SQLAlchemy awaits each call), hence ``check_same_thread``.
    """

    def connector() -> sqlite3.Connection:
        conn = sqlite3.connect(database, timeout=0, check_same_thread=False)
        conn.execute("PRAGMA wal_autocheckpoint=0")  # LoopSqliteConnection._checkpoint
        return conn

    connection = LoopSqliteConnection(connector, database)
    await connection  # starts the thread and connects in it
    return connection
