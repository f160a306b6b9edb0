"""SQLite's connection (adapters/db/sqlite_loop.py) never keeps a process from exiting."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

# A process that commits a row, then leaves a connection checked out of the pool and
# never closed, held where the garbage collector cannot reach it before exit.
_LEAKY = textwrap.dedent(
    """
    import asyncio, sys
    from sqlalchemy import text
    from callbridge.adapters.db.store import make_engine

    held = []

    async def main():
        engine = make_engine("sqlite+aiosqlite:///" + sys.argv[1])
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (x INTEGER)"))
            await conn.execute(text("INSERT INTO t VALUES (42)"))
        conn = await engine.connect()
        await conn.execute(text("SELECT x FROM t"))
        held.append((engine, conn))

    asyncio.run(main())
    print("done", flush=True)
    """
)


def test_a_connection_never_closed_does_not_hold_the_process_at_exit(tmp_path: Path) -> None:
    """aiosqlite's worker thread waits for a close that never comes; the process still
    exits on its own, and what it committed is there."""
    database = tmp_path / "cb.db"
    # The timeout only turns a hang (the defect) into a failure; no speed is measured.
    done = subprocess.run(  # noqa: S603 - this interpreter, a fixed script
        [sys.executable, "-c", _LEAKY, str(database)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "done\n"
    with sqlite3.connect(database) as db:
        assert db.execute("SELECT x FROM t").fetchall() == [(42,)]
