"""A Redis outage, end to end: clear 503s where Redis is needed, clean SSE ends, recovery.

A real callbridge server (uvicorn, the sandbox emulators, SQLite) shares its quotas,
token nonces, live events, kill switch and sign-in state through a private
``redis-server`` that the test kills and starts again on the same port.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.integration.helpers import VISITOR, wait_for_status
from tests.operator.conftest import ADMIN_ENV, signed_in
from tests.outage.test_database_outage import assert_unavailable
from tests.support.app import Sandbox, running_sandbox
from tests.support.redis import RedisServer
from tests.support.wait import wait_until

pytestmark = pytest.mark.redis

_ENV = {
    **ADMIN_ENV,
    "CALLBRIDGE_SANDBOX_CALLEE": "no-answer",  # rings until the test hangs up
    "CALLBRIDGE_RING_TIMEOUT": "60",
}


async def _follow(sb: Sandbox, call_id: str, lines: list[str]) -> int:
    """Read the call's SSE stream to its end; return its HTTP status."""
    async with httpx.AsyncClient(base_url=sb.base_url, timeout=30) as client:
        async with client.stream("GET", f"/api/call/{call_id}/events") as response:
            async for line in response.aiter_lines():
                lines.append(line)
            return response.status_code


async def test_a_redis_outage_answers_503_ends_followers_cleanly_and_heals(
    tmp_path: Any, private_redis: RedisServer
) -> None:
    """While Redis is down the endpoints that need it answer JSON 503 with Retry-After,
    /readyz names redis, a live-event follower's stream ends cleanly, a call request
    places nothing, and the status callback sent meanwhile is stored in the database and
    acknowledged at once (Redis holds only what heals from it); once Redis is back the
    same process serves normally."""
    env = {**_ENV, "REDIS_URL": private_redis.url}
    async with running_sandbox(env, tmp_path=tmp_path) as sb:
        response = await sb.request_call(VISITOR)
        assert response.status_code == 200, response.text
        placed: dict[str, Any] = response.json()
        call_id, sid = placed["call_id"], placed["call_sid"]
        await wait_for_status(sb, call_id, {"ringing"})
        calls_at_twilio = len(sb.twilio.calls)
        token = await sb.token()
        lines: list[str] = []
        follower = asyncio.create_task(_follow(sb, call_id, lines))
        await wait_until(lambda: any(line.startswith("event: status") for line in lines))
        async with signed_in(sb) as admin:
            await asyncio.to_thread(private_redis.stop)

            # The follower's bus died: its stream ends, cleanly (200, no error event).
            assert await asyncio.wait_for(follower, 10) == 200
            ready = await sb.http.get("/readyz")
            assert ready.status_code == 503 and ready.json()["down"] == ["redis"]
            assert "retry-after" in ready.headers
            outbound = await sb.http.post(
                "/api/call/outbound",
                json={"to_number": "+12025550143"},
                headers={"X-Callbridge-Token": token},
            )
            assert_unavailable(outbound, "outbound")
            assert_unavailable(await sb.http.get(f"/api/call/{call_id}/events"), "events")
            assert_unavailable(await admin.get("/admin"), "admin (sign-in state)")
            status = await sb.http.get(f"/api/call/{call_id}")
            assert status.status_code == 200  # the database alone answers it
            session = await sb.http.get("/api/call/session")
            assert session.status_code == 200  # a token is signed, not stored
            metrics = await sb.http.get("/metrics")
            assert metrics.status_code == 200
            # The final callback leaves during the outage. The database stores it, so it is
            # answered at once and applied while Redis is still down: what Redis holds (the
            # slot, the day's counter, live events) heals from the database afterwards.
            sb.twilio.callee_hangup(sid)
            await wait_for_status(sb, call_id, {"busy"}, timeout=20)

            def busy_attempts() -> list[Any]:
                return [w for w in sb.twilio.calls[sid].webhooks
                        if w.kind == "status" and w.params["CallStatus"] == "busy"]  # fmt: skip

            await wait_until(busy_attempts, 10)  # the emulator records it once answered
            assert [w.status_code for w in busy_attempts()] == [204]

            await asyncio.to_thread(private_redis.start)

            # Recovered in the same process.
            assert (await sb.http.get("/readyz")).status_code == 200
            assert (await admin.get("/admin")).status_code == 200
        assert len(sb.twilio.calls) == calls_at_twilio  # the refused request placed nothing
        assert [c.id for c in await sb.container.store.recent_calls(limit=10)] == [call_id]
        after = await sb.request_call("+12025550144")
        assert after.status_code == 200, after.text


async def test_a_call_placed_as_redis_dies_is_answered_as_placed(
    tmp_path: Any, private_redis: RedisServer
) -> None:
    """If Redis goes away while Twilio is placing the call, the live event is skipped and
    the visitor is still told the call was placed (a 503 would invite a second call)."""
    env = {**_ENV, "REDIS_URL": private_redis.url}
    async with running_sandbox(env, tmp_path=tmp_path) as sb:
        sb.twilio.delay_next_create(2.0)  # Twilio creates the call, then answers late
        request = asyncio.create_task(sb.request_call(VISITOR))
        await wait_until(lambda: len(sb.twilio.calls) == 1)
        await asyncio.to_thread(private_redis.stop)
        response = await asyncio.wait_for(request, 20)
        assert response.status_code == 200, response.text
        call = await sb.container.store.get_call(response.json()["call_id"])
        assert call is not None and call.call_sid == next(iter(sb.twilio.calls))
        await asyncio.to_thread(private_redis.start)
