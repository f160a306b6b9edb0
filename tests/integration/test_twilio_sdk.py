"""twilio-python's own ``Client`` works against the in-app Twilio emulator."""

from __future__ import annotations

import asyncio

from twilio.rest import Client

from tests.integration.helpers import VISITOR
from tests.support.app import running_sandbox


async def test_official_client_creates_fetches_and_hangs_up_a_call() -> None:
    """Client(sid, token) with api.base_url at the emulator creates, fetches and ends a call."""
    env = {"CALLBRIDGE_SANDBOX_CALLEE": "answer=0.2,hangup=30"}
    async with running_sandbox(env) as sb:
        client = Client(sb.container.account_sid, sb.container.auth_token)
        client.api.base_url = f"{sb.base_url}/sandbox/twilio"

        created = await asyncio.to_thread(
            client.calls.create,
            to=VISITOR,
            from_=sb.container.from_number,
            twiml='<Response><Pause length="20"/></Response>',
        )
        assert created.sid.startswith("CA")
        assert created.status == "queued"
        assert created.direction == "outbound-api"
        sim = await sb.twilio.wait_for_status(created.sid, "in-progress", 5)

        fetched = await asyncio.to_thread(client.calls(created.sid).fetch)
        assert (fetched.sid, fetched.to, fetched.status) == (created.sid, VISITOR, "in-progress")

        ended = await asyncio.to_thread(client.calls(created.sid).update, status="completed")
        assert ended.status == "completed"
        await sb.twilio.wait_for_end(created.sid, 5)
        assert sim.end_reason == "rest"

        listed = await asyncio.to_thread(client.calls.list, to=VISITOR, limit=5)
        assert [c.sid for c in listed] == [created.sid]
