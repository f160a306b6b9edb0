"""One whole call, end to end, with PostgreSQL as the store."""

from __future__ import annotations

import pytest

from tests.integration.helpers import DOCUMENTED, finished, place
from tests.support.app import running_sandbox

pytestmark = pytest.mark.postgres


async def test_a_call_end_to_end_on_postgresql(postgres_url: str) -> None:
    """A bridged call runs and is recorded with its events and transcript on PostgreSQL."""
    env = {"CALLBRIDGE_SANDBOX_CALLEE": "answer=0.2,digits=1,hangup=2"}
    async with running_sandbox(env, database_url=postgres_url) as sb:
        body = await place(sb, DOCUMENTED, name="Ada")
        sim = await finished(sb, body)
        call = await sb.container.store.get_call(body["call_id"])
        assert call is not None
        assert call.status.value == "completed"
        assert call.duration_s == int(sim.callbacks[-1]["CallDuration"])
        events = await sb.container.store.events(call.id)
        assert [(e.status, e.sequence_number) for e in events if e.source == "twilio"] == [
            ("initiated", 0),
            ("ringing", 1),
            ("in-progress", 2),
            ("completed", 3),
        ]
        assert {"stream_started", "stream_stopped"} <= {e.status for e in events}
        turns = await sb.container.store.turns(call.id)
        assert turns and turns[0].role == "agent" and "Ada" in turns[0].text
