"""A day of calls on real servers: the spend cap settles, slots are freed by any process.

Real uvicorn on loopback with the sandbox emulators; the two-server test shares one
SQLite database and one real Redis, as two processes behind a load balancer do.
"""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from sqlalchemy import text

from callbridge.adapters.quota import RedisQuotaStore
from callbridge.domain.quotas import DAY
from callbridge.domain.spend import MICROS_PER_CENT
from tests.integration.helpers import signed_post
from tests.operator.conftest import ADMIN_ENV, TOKEN, signed_in
from tests.support.app import Sandbox, running_sandbox
from tests.support.wait import wait_until

SHORT_CALL = {"CALLBRIDGE_SANDBOX_CALLEE": "answer=0.2,digits=1,hangup=1"}
LONG_CALL = {"CALLBRIDGE_SANDBOX_CALLEE": "answer=0.2,digits=1,speak,hangup=120"}


async def _status(sb: Sandbox, call_id: str) -> str:
    call = await sb.container.store.get_call(call_id)
    assert call is not None
    return call.status.value


async def _priced(sb: Sandbox, call_id: str) -> bool:
    call = await sb.container.store.get_call(call_id)
    return call is not None and call.price is not None


async def test_a_600_cent_cap_admits_many_more_than_four_calls_a_day(tmp_path: Path) -> None:
    """With CALLBRIDGE_DAILY_SPEND_CAP_CENTS=600 (four worst cases of 150 cents), ten
    completed sandbox calls in a row are all admitted: each is settled to its estimate
    when it ends and to Twilio's price (1.4 cents) when that arrives. Today's code
    refuses the fifth. Afterwards nothing is still reserved and the day's ledger holds
    exactly the ten prices."""
    env = {**SHORT_CALL, "CALLBRIDGE_DAILY_SPEND_CAP_CENTS": "600"}
    async with running_sandbox(env, tmp_path=tmp_path) as sb:
        for n in range(10):
            response = await sb.request_call(f"+1202555{150 + n:04d}")
            assert response.status_code == 200, (n, response.text)
            call_id = response.json()["call_id"]
            await wait_until(lambda c=call_id: _priced(sb, c), timeout=30, interval=0.1)
            assert await _status(sb, call_id) == "completed"
        spend = await sb.container.admission.spend_today()
        assert (spend.calls, spend.reserved, spend.settled) == (10, 0, 10 * 14_000)
        assert spend.total < 600 * MICROS_PER_CENT


async def test_a_slot_taken_on_one_server_is_freed_by_the_callback_on_another(
    tmp_path: Path,
    redis_url: str,  # noqa: F811
) -> None:
    """Two servers, one database, one Redis, one line (CALLBRIDGE_MAX_CONCURRENT_CALLS=1).
    A call admitted on A is reported completed by a status callback that lands on B: B
    frees the line, and A admits the next call at once. (Today the slot stays in A's
    memory: A answers 'All our lines are busy' for about 15 minutes.)"""
    client = aioredis.Redis.from_url(redis_url)
    try:
        stale = [key async for key in client.scan_iter(match="callbridge:q:*")]
        if stale:
            await client.delete(*stale)  # another test's calls must not hold the one line
    finally:
        await client.aclose()
    db = f"sqlite+aiosqlite:///{tmp_path}/shared.db"
    env: dict[str, Any] = {
        **LONG_CALL,
        "REDIS_URL": redis_url,
        "CALLBRIDGE_MAX_CONCURRENT_CALLS": "1",
        "TWILIO_ACCOUNT_SID": "AC" + "5" * 32,
        "TWILIO_AUTH_TOKEN": "f" * 32,
    }
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    async with (
        running_sandbox(env, tmp_path=tmp_path / "a", database_url=db) as a,
        running_sandbox(env, tmp_path=tmp_path / "b", database_url=db) as b,
    ):
        placed = (await a.request_call("+12025550161")).json()
        await wait_until(
            lambda: _status_is(a, placed["call_id"], "in-progress"), timeout=20, interval=0.1
        )
        busy = await a.request_call("+12025550162")
        assert busy.status_code == 503 and "lines are busy" in busy.json()["error"]["message"]
        params = {
            "AccountSid": b.container.account_sid,
            "CallSid": placed["call_sid"],
            "CallStatus": "completed",
            "CallDuration": "7",
            "From": b.container.from_number,
            "To": "+12025550161",
            "Direction": "outbound-api",
            "ApiVersion": "2010-04-01",
            "SequenceNumber": "9",
        }
        answer = await signed_post(b, f"/api/call/status?call_id={placed['call_id']}", params)
        assert answer.status_code < 300, answer.text
        assert await _status(a, placed["call_id"]) == "completed"
        again = await a.request_call("+12025550162")
        assert again.status_code == 200, again.text
        spend = await a.container.admission.spend_today()
        assert spend.settled == 15 * MICROS_PER_CENT  # 7 s: one minute at the worst rate
        assert spend.reserved == 150 * MICROS_PER_CENT  # the second call, still going


async def _status_is(sb: Sandbox, call_id: str, wanted: str) -> bool:
    return await _status(sb, call_id) == wanted


async def test_the_operator_sees_today_s_spend_against_the_cap(tmp_path: Path) -> None:
    """The overview page and GET /api/admin/overview show today's spend, settled and still
    reserved, against the cap: one call still going is 1.50 reserved of 6.00; once it is
    over and priced, its price settled and nothing reserved."""
    env = {**ADMIN_ENV, **LONG_CALL, "CALLBRIDGE_DAILY_SPEND_CAP_CENTS": "600"}
    async with running_sandbox(env, tmp_path=tmp_path) as sb:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        placed = (await sb.request_call("+12025550171")).json()
        await wait_until(
            lambda: _status_is(sb, placed["call_id"], "in-progress"), timeout=20, interval=0.1
        )
        live = (await sb.http.get("/api/admin/overview", headers=auth)).json()["spend_today"]
        assert live == {
            "settled": "0",
            "reserved": "1.5",
            "total": "1.5",
            "cap": "6",
            "calls": 1,
            "unit": "USD",
        }
        async with signed_in(sb) as browser:
            page = (await browser.get("/admin/overview")).text
        assert "Spend today against the cap" in page
        assert "1.50 USD of 6.00 USD" in page
        await sb.container.telephony.hang_up(placed["call_sid"])
        await wait_until(lambda: _priced(sb, placed["call_id"]), timeout=30, interval=0.1)
        over = (await sb.http.get("/api/admin/overview", headers=auth)).json()["spend_today"]
        call = await sb.container.store.get_call(placed["call_id"])
        assert call is not None and call.price is not None
        assert Decimal(over["settled"]) == Decimal(over["total"]) == abs(Decimal(call.price))
        assert over["reserved"] == "0"
        assert (await sb.http.get("/api/admin/overview")).status_code == 401


async def test_after_redis_loses_its_data_the_day_is_rebuilt_from_the_database(
    tmp_path: Path,
    redis_url: str,  # noqa: F811
) -> None:
    """Mid-day Redis loses every quota key (FLUSHALL, or a restart without persistence):
    the slot audit re-holds the live call's line and rebuilds today's counter from the
    ledger (one call settled at its price, one still reserved), and the next request is
    booked on top of it, so the cap keeps counting the whole day."""
    client = aioredis.Redis.from_url(redis_url)
    quotas = RedisQuotaStore(client)

    async def flush() -> None:
        keys = [key async for key in client.scan_iter(match="callbridge:q:*")]
        if keys:
            await client.delete(*keys)

    env = {**LONG_CALL, "REDIS_URL": redis_url, "CALLBRIDGE_DAILY_SPEND_CAP_CENTS": "600"}
    try:
        await flush()
        async with running_sandbox(env, tmp_path=tmp_path) as sb:
            first = (await sb.request_call("+12025550181")).json()
            await wait_until(
                lambda: _status_is(sb, first["call_id"], "in-progress"), timeout=20, interval=0.1
            )
            await sb.container.telephony.hang_up(first["call_sid"])
            await wait_until(lambda: _priced(sb, first["call_id"]), timeout=30, interval=0.1)
            second = (await sb.request_call("+12025550182")).json()
            await wait_until(
                lambda: _status_is(sb, second["call_id"], "in-progress"), timeout=20, interval=0.1
            )
            before = await sb.container.admission.spend_today()
            day = int(time.time() // DAY)
            assert await quotas.spend(day) == before.settled + before.reserved
            await flush()
            assert await quotas.spend(day) is None and await quotas.held(time.time()) == {}
            changed = await sb.container.admission.audit_slots([second["call_id"]])
            assert changed == 1
            assert set(await quotas.held(time.time())) == {second["call_id"]}
            assert await quotas.spend(day) == before.total
            third = await sb.request_call("+12025550183")
            assert third.status_code == 200, third.text
            assert await quotas.spend(day) == before.total + 150 * MICROS_PER_CENT
    finally:
        await client.aclose()


async def test_twilio_s_retry_of_a_final_callback_finishes_an_unfinished_settlement(
    tmp_path: Path,
) -> None:
    """If settling failed when the final callback came (the ledger line is still at its
    reservation), Twilio's retry of that callback, a replay that changes nothing else,
    settles the call."""
    async with running_sandbox(SHORT_CALL, tmp_path=tmp_path) as sb:
        placed = (await sb.request_call("+12025550191")).json()
        # Priced: nothing settles the call by itself any more.
        await wait_until(lambda: _priced(sb, placed["call_id"]), timeout=30, interval=0.1)
        store = sb.container.store
        final = next(
            e
            for e in await store.events(placed["call_id"])
            if e.source == "twilio" and e.status == "completed"
        )
        async with store.engine.begin() as conn:
            await conn.execute(
                text(
                    "UPDATE spend_ledger SET estimated_micros = NULL, actual_micros = NULL "
                    "WHERE call_id = :c"
                ),
                {"c": placed["call_id"]},
            )
        assert (await sb.container.admission.spend_today()).reserved == 150 * MICROS_PER_CENT
        params = {
            "AccountSid": sb.container.account_sid,
            "CallSid": placed["call_sid"],
            "CallStatus": "completed",
            "CallDuration": str(final.detail.get("CallDuration", "1")),
            "SequenceNumber": str(final.sequence_number),
        }
        path = f"/api/call/status?call_id={placed['call_id']}"
        answer = await signed_post(sb, path, params)
        assert answer.status_code < 300, answer.text
        spend = await sb.container.admission.spend_today()
        assert spend.reserved == 0 and spend.calls == 1
