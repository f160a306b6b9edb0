"""Any number of processes may start at once on an empty database: the migrations take turns."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from callbridge.adapters.db.migrate import alembic_config
from callbridge.adapters.db.store import make_engine

PROCESSES = 6


def _head() -> str:
    from alembic.script import ScriptDirectory

    heads = ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads()
    assert len(heads) == 1, heads
    return str(heads[0])


async def _upgrade_at_once(url: str, folder: Path) -> list[tuple[int, str]]:
    """Run ``callbridge db upgrade`` in PROCESSES processes at once; their exit codes."""
    exe = Path(sys.executable).with_name("callbridge")
    env = {**os.environ, "DATABASE_URL": url}
    procs = [
        await asyncio.create_subprocess_exec(
            str(exe),
            "db",
            "upgrade",
            env=env,
            cwd=folder,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        for _ in range(PROCESSES)
    ]
    results = []
    for proc in procs:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=120)
        results.append((proc.returncode or 0, out.decode(errors="replace")[-2000:]))
    return results


async def _assert_at_head_once(url: str) -> None:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            versions = (await conn.execute(text("SELECT version_num FROM alembic_version"))).all()
            calls = (await conn.execute(text("SELECT count(*) FROM calls"))).scalar_one()
    finally:
        await engine.dispose()
    assert [v for (v,) in versions] == [_head()]
    assert calls == 0


@pytest.mark.postgres
async def test_six_processes_upgrading_an_empty_postgresql_database_all_succeed(
    postgres_url: str, tmp_path: Path
) -> None:
    """Six ``callbridge db upgrade`` started together on an empty PostgreSQL database all
    exit 0, and the schema is at head once (the advisory lock makes them take turns)."""
    results = await _upgrade_at_once(postgres_url, tmp_path)
    assert [code for code, _ in results] == [0] * PROCESSES, results
    await _assert_at_head_once(postgres_url)


async def test_six_processes_upgrading_a_new_sqlite_file_all_succeed(tmp_path: Path) -> None:
    """The same on a new SQLite file (a file lock beside it makes them take turns)."""
    url = f"sqlite+aiosqlite:///{tmp_path}/fresh.db"
    results = await _upgrade_at_once(url, tmp_path)
    assert [code for code, _ in results] == [0] * PROCESSES, results
    await _assert_at_head_once(url)
