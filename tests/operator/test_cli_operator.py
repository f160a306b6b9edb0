"""``callbridge calls show``, ``forget`` and ``retention run`` against a seeded database."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from callbridge.cli import app
from tests.operator.seed import ALICE, counts, seed


@pytest.fixture
def seeded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> object:
    """A seeded SQLite file named by DATABASE_URL, with the key the seed hashed numbers with."""

    async def make() -> object:
        s = await seed(tmp_path)
        await s.store.aclose()
        return s

    s = asyncio.run(make())
    monkeypatch.setenv("DATABASE_URL", s.url)  # type: ignore[attr-defined]
    monkeypatch.setenv("CALLBRIDGE_SECRET_KEY", "k" * 32)
    monkeypatch.chdir(tmp_path)
    return s


def _counts(url: str) -> dict[str, int]:
    from callbridge.adapters.db.store import SqlCallStore, make_engine

    async def go() -> dict[str, int]:
        store = SqlCallStore(make_engine(url))
        try:
            return await counts(store)
        finally:
            await store.aclose()

    return asyncio.run(go())


def test_calls_still_lists_and_calls_show_prints_timeline_and_transcript(seeded: object) -> None:
    """``calls`` lists (masked) and ``calls show ID`` prints facts, timeline and transcript,
    marking what the callee cut off."""
    runner = CliRunner()
    listing = runner.invoke(app, ["calls", "--json"])
    assert listing.exit_code == 0, listing.output
    assert len(listing.output.splitlines()) == 4 and ALICE not in listing.output
    shown = runner.invoke(app, ["calls", "show", "call_alice_new"])
    assert shown.exit_code == 0, shown.output
    for text in (
        "completed",
        "Timeline",
        "in-progress",
        "Transcript",
        "About my order.",
        "cut off",
        "Visitor call_alice_new",
    ):
        assert text in shown.output
    assert ALICE not in shown.output
    missing = runner.invoke(app, ["calls", "show", "call_nope"])
    assert missing.exit_code == 2 and "no call" in missing.output.lower()


def test_forget_asks_first_and_deletes_only_that_number(seeded: object) -> None:
    """``forget`` deletes nothing when the operator says no; with ``--yes`` it deletes the
    number's calls and keeps everyone else's."""
    url = seeded.url  # type: ignore[attr-defined]
    before = _counts(url)
    runner = CliRunner()
    declined = runner.invoke(app, ["forget", "+1 202 555 0143"], input="n\n")
    assert declined.exit_code == 1 and _counts(url) == before
    assert "2 call(s)" in declined.output and ALICE not in declined.output
    done = runner.invoke(app, ["forget", "+1 202 555 0143", "--yes"])
    assert done.exit_code == 0, done.output
    after = _counts(url)
    assert after["calls"] == before["calls"] - 2
    assert after["do_not_call"] == before["do_not_call"]
    assert after["policy_refusals"] == before["policy_refusals"] - 1


def test_retention_run_clears_old_transcripts(seeded: object) -> None:
    """``retention run --days 30`` clears the 40-day-old calls' turns and nothing newer."""
    url = seeded.url  # type: ignore[attr-defined]
    before = _counts(url)
    result = CliRunner().invoke(app, ["retention", "run", "--days", "30"])
    assert result.exit_code == 0, result.output
    assert "2 call(s)" in result.output
    after = _counts(url)
    assert after["transcript_turns"] == before["transcript_turns"] - 4
    assert after["calls"] == before["calls"]
    off = CliRunner().invoke(app, ["retention", "run"])
    assert off.exit_code == 2 and "CALLBRIDGE_RETENTION_DAYS" in off.output


def test_an_unopenable_database_stops_start_up_with_one_sentence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A DATABASE_URL whose folder does not exist stops ``db upgrade`` and ``demo`` with
    exit code 2 and one sentence naming the cause, never a traceback. (``demo`` runs as a
    real process: it configures logging for the process it runs in.)"""
    url = f"sqlite+aiosqlite:///{tmp_path}/missing/cb.db"
    monkeypatch.setenv("DATABASE_URL", url)
    result = CliRunner().invoke(app, ["db", "upgrade"])
    outputs = [(result.exit_code, result.output)]
    exe = Path(sys.executable).with_name("callbridge")
    env = {**os.environ, "DATABASE_URL": url, "CALLBRIDGE_SANDBOX": "true"}
    served = subprocess.run(  # noqa: S603 - our own script, fixed arguments
        [str(exe), "demo", "--port", "1"], env=env, capture_output=True, text=True, timeout=60
    )
    outputs.append((served.returncode, served.stderr))
    for code, output in outputs:
        assert code == 2, output
        text = " ".join(output.split())
        assert "The database in DATABASE_URL can't be opened" in text, text
        assert "folder exists" in text and "Traceback" not in text
    assert not (tmp_path / "missing").exists()


def test_an_in_memory_sqlite_database_is_refused_with_a_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``sqlite+aiosqlite:///:memory:`` would give the migrations and the server two
    different empty databases: ``db upgrade`` says so and exits 2."""
    monkeypatch.setenv("DATABASE_URL", "sqlite+aiosqlite:///:memory:")
    result = CliRunner().invoke(app, ["db", "upgrade"])
    assert result.exit_code == 2, result.output
    assert "in-memory SQLite database" in " ".join(result.output.split())
