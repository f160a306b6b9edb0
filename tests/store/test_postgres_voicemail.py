"""A call an answering machine takes, end to end, with PostgreSQL as the store."""

from __future__ import annotations

import pytest

from tests.integration.helpers import place, wait_for_status
from tests.support.app import running_sandbox

pytestmark = pytest.mark.postgres


async def test_a_voicemail_on_postgresql(postgres_url: str) -> None:
    """The verdict, the message left after the beep and the voicemail status are kept on
    PostgreSQL (migration 0009's columns)."""
    env = {
        "CALLBRIDGE_SANDBOX_CALLEE": "answer=0.1,machine=2",
        "CALLBRIDGE_AMD_SPEECH_THRESHOLD": "1000",
    }
    async with running_sandbox(env, database_url=postgres_url) as sb:
        body = await place(sb, "+12025550170")
        call = await wait_for_status(sb, body["call_id"], {"voicemail"}, timeout=30)
        assert call.answered_by == "machine_end_beep"
        assert call.amd_duration_ms == 2000
        assert call.message_left is True
        events = await sb.container.store.events(call.id)
        assert [e.detail["answered_by"] for e in events if e.source == "amd"] == [
            "machine_end_beep"
        ]
