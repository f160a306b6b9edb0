"""``callbridge call --at`` schedules through a running server; ``callbridge calls
--scheduled`` lists what is waiting, soonest first."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from typer.testing import CliRunner

from callbridge.cli import app
from callbridge.domain.call import CallStatus
from tests.schedule.conftest import SCHEDULE_ENV
from tests.support.app import running_sandbox


async def test_call_at_schedules_and_calls_scheduled_lists_soonest_first(tmp_path: Path) -> None:
    """Two calls asked for in 3 h and 1 h: both scheduled (exit 0, nothing dialled); the
    listing shows the 1 h one first with its due time; --at with a bad time fails with a hint."""
    runner = CliRunner()
    async with running_sandbox(SCHEDULE_ENV, tmp_path=tmp_path) as sb:
        results = []
        for number, delay in (("+1 202 555 0171", "3h"), ("+1 202 555 0172", "1h")):
            result = await asyncio.to_thread(
                runner.invoke, app, ["call", number, "--at", delay, "--url", sb.base_url]
            )
            assert result.exit_code == 0, result.output
            assert "scheduled" in result.output
            results.append(result)
        assert sb.twilio.calls == {}
        bad = await asyncio.to_thread(
            runner.invoke, app, ["call", "+1 202 555 0173", "--at", "soon", "--url", sb.base_url]
        )
        assert bad.exit_code != 0
        assert "--at" in bad.output
        env = {
            "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/cb.db",
            "CALLBRIDGE_SANDBOX": "true",
        }
        listing = await asyncio.to_thread(
            runner.invoke, app, ["calls", "--scheduled", "--json"], env=env
        )
        assert listing.exit_code == 0, listing.output
        rows = [json.loads(line) for line in listing.output.splitlines() if line.startswith("{")]
        assert [row["to"][-4:] for row in rows] == ["0172", "0171"]
        assert all(row["status"] == CallStatus.SCHEDULED.value for row in rows)
        assert rows[0]["scheduled_for"] < rows[1]["scheduled_for"]
        table = await asyncio.to_thread(runner.invoke, app, ["calls", "--scheduled"], env=env)
        assert "2 scheduled calls" in table.output
