"""security.md A: the call-request endpoint and anti-abuse, over real HTTP against the sandbox.

Each test names the criterion it proves and says how it would fail if the
protection were removed.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from callbridge.domain.quotas import NUMBER_UNAVAILABLE_MESSAGE
from tests.security.helpers import (
    BUSY,
    NUMBERS,
    ORIGIN,
    STRICT,
    call_and_end,
    count_rows,
    ended,
    nothing_placed,
    post_call,
)
from tests.support.app import running_sandbox

PROXY = {"CALLBRIDGE_TRUSTED_PROXIES": "127.0.0.1/32"}


async def test_a01_missing_expired_tampered_used_or_foreign_tokens_are_401() -> None:
    """A request without a valid, unused, unexpired token for its origin gets 401 and places
    nothing. (Without the token check each of these requests would place a call.)"""
    env = {"CALLBRIDGE_ALLOWED_ORIGINS": f"{ORIGIN},https://other.example.com"}
    async with running_sandbox(env) as sb:
        body = {"to_number": NUMBERS[0]}
        fresh = await sb.token(ORIGIN)
        expired = sb.container.session_tokens.issue(ORIGIN, now=time.time() - 3600)
        tampered = fresh[:-1] + ("0" if fresh[-1] != "0" else "1")
        foreign = await sb.token("https://other.example.com")
        for token in (None, "", "v1.garbage", expired, tampered, foreign):
            headers = {"Origin": ORIGIN}
            if token is not None:
                headers["X-Callbridge-Token"] = token
            response = await sb.http.post("/api/call/outbound", json=body, headers=headers)
            assert response.status_code == 401, (token, response.text)
        assert await nothing_placed(sb)
        used = await sb.token(ORIGIN)
        headers = {"Origin": ORIGIN, "X-Callbridge-Token": used}
        first = await sb.http.post("/api/call/outbound", json=body, headers=headers)
        assert first.status_code == 200, first.text
        again = await sb.http.post(
            "/api/call/outbound", json={"to_number": NUMBERS[1]}, headers=headers
        )
        assert again.status_code == 401
        assert len(sb.twilio.calls) == 1 and await count_rows(sb, "calls") == 1


async def test_a04_origins_not_allowed_including_null_are_403() -> None:
    """A browser Origin off the allowlist — ``null`` included — gets 403 on the session and
    the call request, and nothing is placed. (Without the origin check: 200 and a call.)"""
    async with running_sandbox({"CALLBRIDGE_ALLOWED_ORIGINS": ORIGIN}) as sb:
        good = await sb.token(ORIGIN)
        for origin in (
            "null",
            "https://evil.example.com",
            "https://shop.example.com.evil.net",
            "http://shop.example.com",
        ):
            session = await sb.http.get("/api/call/session", headers={"Origin": origin})
            assert session.status_code == 403, origin
            response = await sb.http.post(
                "/api/call/outbound",
                json={"to_number": NUMBERS[0]},
                headers={"Origin": origin, "X-Callbridge-Token": good},
            )
            assert response.status_code == 403, origin
        assert await nothing_placed(sb)


async def test_a04_cors_preflight_from_a_bad_origin_gets_no_allow_origin() -> None:
    """A preflight from an origin off the list gets no Access-Control-Allow-Origin; an allowed
    one gets its own origin back, never ``*`` and never Allow-Credentials; ``null`` gets
    nothing. (A wildcard or reflecting CORS setup fails every assertion here.)"""
    async with running_sandbox({"CALLBRIDGE_ALLOWED_ORIGINS": ORIGIN}) as sb:
        ask = {
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-callbridge-token",
        }
        for origin in ("https://evil.example.com", "null"):
            pre = await sb.http.options("/api/call/outbound", headers={"Origin": origin, **ask})
            assert "access-control-allow-origin" not in pre.headers
            get = await sb.http.get("/api/call/session", headers={"Origin": origin})
            assert "access-control-allow-origin" not in get.headers
        pre = await sb.http.options("/api/call/outbound", headers={"Origin": ORIGIN, **ask})
        assert pre.headers["access-control-allow-origin"] == ORIGIN
        responses = [
            pre,
            await sb.http.get("/api/call/session", headers={"Origin": ORIGIN}),
            await post_call(sb, NUMBERS[0], origin=ORIGIN),
        ]
        for response in responses:
            assert response.headers.get("access-control-allow-origin") in (None, ORIGIN)
            assert "*" not in response.headers.get("access-control-allow-origin", "")
            assert "access-control-allow-credentials" not in response.headers


@pytest.mark.parametrize("field", ["from", "timeLimit", "prompt", "agentOverrides"])
async def test_a05_unknown_json_fields_are_400(field: str) -> None:
    """A call request with any field beyond the number and the consented display fields is 400
    and places nothing. (Lenient parsing would accept it and place the call.)"""
    async with running_sandbox() as sb:
        body = {"to_number": NUMBERS[0], field: "+19005550100"}
        response = await post_call(sb, NUMBERS[0], body=body)
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "unknown_field"
        assert await nothing_placed(sb)


async def test_a05_a_body_over_the_limit_is_413() -> None:
    """A 17 KiB call request gets 413 before it is parsed, and places nothing (declared or
    streamed without a length). (Without the body limit it would be parsed and placed.)"""
    async with running_sandbox() as sb:
        big = {"to_number": NUMBERS[0], "summary": "x" * (17 * 1024)}
        assert (await post_call(sb, NUMBERS[0], body=big)).status_code == 413

        async def chunks():  # type: ignore[no-untyped-def]
            for _ in range(20):
                yield b" " * 1024
            yield b'{"to_number": "+12025550100"}'

        streamed = await sb.http.post(
            "/api/call/outbound",
            content=chunks(),
            headers={"X-Callbridge-Token": await sb.token(), "Content-Type": "application/json"},
        )
        assert streamed.status_code == 413
        assert await nothing_placed(sb)


async def test_a06_per_number_hourly_daily_and_in_flight_limits() -> None:
    """The 4th request for a number within an hour is 429 and places nothing; with
    PER_NUMBER_DAILY=2 the 3rd is; a 2nd request while a call is in flight is 429.
    (Without per-number quotas every request would be dialled.)"""
    env = {**STRICT, **BUSY, "CALLBRIDGE_PER_NUMBER_COOLDOWN": "0"}
    async with running_sandbox(env) as sb:
        for _ in range(3):
            await call_and_end(sb, NUMBERS[0])
            await asyncio.sleep(1.05)  # the shortest cool-down is one second
        fourth = await sb.request_call(NUMBERS[0])
        assert fourth.status_code == 429 and "Retry-After" in fourth.headers
        assert len(sb.twilio.calls) == 3
    async with running_sandbox({**env, "CALLBRIDGE_PER_NUMBER_DAILY": "2"}) as sb:
        for _ in range(2):
            await call_and_end(sb, NUMBERS[0])
            await asyncio.sleep(1.05)
        assert (await sb.request_call(NUMBERS[0])).status_code == 429
        assert len(sb.twilio.calls) == 2
    slow = {**STRICT, "CALLBRIDGE_SANDBOX_CALLEE": "answer=0.2,digits=1,hangup=3"}
    async with running_sandbox(slow) as sb:
        first = await sb.request_call(NUMBERS[0])
        assert first.status_code == 200
        second = await sb.request_call(NUMBERS[0])
        assert second.status_code == 429
        assert len(sb.twilio.calls) == 1


async def test_a07_a_number_called_recently_is_refused_from_any_ip() -> None:
    """After a call attempt, the same number asked for from another IP within
    PER_NUMBER_COOLDOWN is 429. (Without the cool-down the second IP's call is placed.)"""
    async with running_sandbox({**STRICT, **BUSY, **PROXY}) as sb:
        first = await post_call(sb, NUMBERS[0], ip="203.0.113.10")
        assert first.status_code == 200
        await ended(sb, first.json()["call_id"])
        other = await post_call(sb, NUMBERS[0], ip="198.51.100.20")
        assert other.status_code == 429
        assert len(sb.twilio.calls) == 1


async def test_a08_per_ip_and_per_slash_24_hourly_limits_with_retry_after() -> None:
    """Behind a trusted proxy, the (PER_IP_HOURLY+1)th request from one client IP and the
    (PER_IP_BLOCK_HOURLY+1)th from its /24 get 429 with Retry-After; X-Forwarded-For from an
    untrusted peer is ignored. (Without IP limits all of these would be placed.)"""
    env = {
        **STRICT,
        **BUSY,
        **PROXY,
        "CALLBRIDGE_PER_IP_HOURLY": "2",
        "CALLBRIDGE_PER_IP_BLOCK_HOURLY": "3",
        "CALLBRIDGE_DISTINCT_NUMBERS_PER_IP_DAILY": "50",
    }
    async with running_sandbox(env) as sb:
        numbers = iter(NUMBERS)
        for _ in range(2):
            assert (await post_call(sb, next(numbers), ip="203.0.113.5")).status_code == 200
        third = await post_call(sb, next(numbers), ip="203.0.113.5")
        assert third.status_code == 429 and int(third.headers["Retry-After"]) > 0
        assert (await post_call(sb, next(numbers), ip="203.0.113.6")).status_code == 200
        block = await post_call(sb, next(numbers), ip="203.0.113.7")
        assert block.status_code == 429 and int(block.headers["Retry-After"]) > 0
        elsewhere = await post_call(sb, next(numbers), ip="198.51.100.7")
        assert elsewhere.status_code == 200
        assert len(sb.twilio.calls) == 4
    untrusted = {**env, "CALLBRIDGE_TRUSTED_PROXIES": ""}
    async with running_sandbox(untrusted) as sb:
        numbers = iter(NUMBERS)
        statuses = [
            (await post_call(sb, next(numbers), ip=f"198.51.{n}.1")).status_code for n in range(3)
        ]
        assert statuses == [200, 200, 429]  # every request counts against 127.0.0.1


async def test_a09_asking_for_a_fourth_distinct_number_blocks_the_ip() -> None:
    """One IP asking for more than DISTINCT_NUMBERS_PER_IP_DAILY=3 numbers is refused and
    then blocked for every number; refused requests count too (the 3rd number is on the
    do-not-call list). (Counting only placed calls, the 4th number would be dialled.)"""
    async with running_sandbox({**STRICT, **BUSY, **PROXY}) as sb:
        await sb.container.admission.add_do_not_call(NUMBERS[2])
        ip = "203.0.113.9"
        assert (await post_call(sb, NUMBERS[0], ip=ip)).status_code == 200
        assert (await post_call(sb, NUMBERS[1], ip=ip)).status_code == 200
        assert (await post_call(sb, NUMBERS[2], ip=ip)).status_code == 429
        fourth = await post_call(sb, NUMBERS[3], ip=ip)
        assert fourth.status_code == 429 and int(fourth.headers["Retry-After"]) >= 3600
        assert fourth.json()["error"]["message"] != NUMBER_UNAVAILABLE_MESSAGE
        assert (await post_call(sb, NUMBERS[4], ip=ip)).status_code == 429  # flagged
        assert (await post_call(sb, NUMBERS[5], ip="198.51.100.1")).status_code == 200
        assert len(sb.twilio.calls) == 3


async def _race(sb, number: str) -> list[int]:  # type: ignore[no-untyped-def]
    tokens = [await sb.token() for _ in range(50)]
    responses = await asyncio.gather(
        *(
            sb.http.post(
                "/api/call/outbound",
                json={"to_number": number},
                headers={"X-Callbridge-Token": token},
            )
            for token in tokens
        )
    )
    return [r.status_code for r in responses]


async def test_a_destination_a_full_number_range_or_country_code_is_refused() -> None:
    """With PER_PREFIX_DAILY=2, a third call into +1 202 555 xxxx — from another IP, to
    another number — is 429 and placed nowhere, while a number in another range is
    called; with PER_COUNTRY_DAILY=1, a second +1 number is refused. (Without the
    destination quotas, pumping that walks a range is only limited per number.)"""
    env = {**STRICT, **BUSY, **PROXY, "CALLBRIDGE_PER_PREFIX_DAILY": "2"}
    async with running_sandbox(env) as sb:
        for n, ip in enumerate(("203.0.113.1", "198.51.100.1")):
            assert (await post_call(sb, NUMBERS[n], ip=ip)).status_code == 200
        third = await post_call(sb, NUMBERS[2], ip="192.0.2.1")
        assert third.status_code == 429, third.text
        assert int(third.headers["Retry-After"]) > 86_000
        assert "destination" in third.json()["error"]["message"]
        assert (await post_call(sb, "+12025560140", ip="192.0.2.1")).status_code == 200
        assert len(sb.twilio.calls) == 3
        metrics = (await sb.http.get("/metrics")).text
        assert 'callbridge_policy_refusals_total{reason="prefix_daily"} 1.0' in metrics
    env = {**STRICT, **BUSY, **PROXY, "CALLBRIDGE_PER_COUNTRY_DAILY": "1"}
    async with running_sandbox(env) as sb:
        assert (await post_call(sb, NUMBERS[0], ip="203.0.113.1")).status_code == 200
        second = await post_call(sb, "+12025560140", ip="198.51.100.1")
        assert second.status_code == 429 and len(sb.twilio.calls) == 1


async def test_a10_fifty_concurrent_requests_for_one_number_place_one_call() -> None:
    """50 simultaneous POSTs for one number yield exactly one call at the emulator and 49
    429s. (A check-then-record quota without atomicity lets several through.) The overload
    gate is off: every request must reach the quota for the race to prove anything."""
    env = {
        **STRICT,
        "CALLBRIDGE_PER_IP_HOURLY": "100",
        "CALLBRIDGE_PER_IP_BLOCK_HOURLY": "100",
        "CALLBRIDGE_MAX_SETUPS_IN_FLIGHT": "0",
    }
    async with running_sandbox(env) as sb:
        statuses = await _race(sb, NUMBERS[0])
        assert statuses.count(200) == 1 and statuses.count(429) == 49
        assert len(sb.twilio.calls) == 1 and await count_rows(sb, "calls") == 1


@pytest.mark.redis
async def test_a10_fifty_concurrent_requests_with_redis_quotas_place_one_call(
    redis_url: str,
) -> None:
    """The same race with the quotas in Redis (REDIS_URL): one call. (Fails without the
    single Lua script that checks and records atomically.)"""
    env = {
        **STRICT,
        "CALLBRIDGE_PER_IP_HOURLY": "100",
        "CALLBRIDGE_PER_IP_BLOCK_HOURLY": "100",
        "REDIS_URL": redis_url,
        "CALLBRIDGE_MAX_SETUPS_IN_FLIGHT": "0",
    }
    async with running_sandbox(env) as sb:
        number = NUMBERS[int(time.time() * 1000) % 80]  # a number no earlier run used
        statuses = await _race(sb, number)
        assert statuses.count(200) == 1 and statuses.count(429) == 49
        assert len(sb.twilio.calls) == 1


async def test_a11_no_call_beyond_max_concurrent_calls() -> None:
    """With MAX_CONCURRENT_CALLS=1 busy, a request for another number is refused (503) and
    nothing is queued at Twilio. (Without the global limit it would be dialled.)"""
    env = {
        **STRICT,
        "CALLBRIDGE_MAX_CONCURRENT_CALLS": "1",
        "CALLBRIDGE_SANDBOX_CALLEE": "answer=0.2,digits=1,hangup=3",
    }
    async with running_sandbox(env) as sb:
        assert (await sb.request_call(NUMBERS[0])).status_code == 200
        refused = await sb.request_call(NUMBERS[1])
        assert refused.status_code == 503 and "Retry-After" in refused.headers
        assert len(sb.twilio.calls) == 1


async def test_a12_the_daily_spend_cap_refuses_with_503_and_alerts() -> None:
    """A cap of 200 cents with 150 reserved per call (10 min at 15 c) refuses the 2nd call
    with 503, and the refusal is counted in the metrics (the alert's source). (Without the
    cap the second call is placed.)"""
    env = {**STRICT, **BUSY, "CALLBRIDGE_DAILY_SPEND_CAP_CENTS": "200"}
    async with running_sandbox(env) as sb:
        assert (await sb.request_call(NUMBERS[0])).status_code == 200
        refused = await sb.request_call(NUMBERS[1])
        assert refused.status_code == 503
        assert len(sb.twilio.calls) == 1
        metrics = (await sb.http.get("/metrics")).text
        assert 'callbridge_policy_refusals_total{reason="spend_cap"} 1.0' in metrics


async def test_a13_the_kill_switch_setting_refuses_every_request() -> None:
    """CALLBRIDGE_CALLS_ENABLED=false: every request is 503 and nothing is placed."""
    async with running_sandbox({"CALLBRIDGE_CALLS_ENABLED": "false"}) as sb:
        response = await sb.request_call(NUMBERS[0])
        assert response.status_code == 503 and "Retry-After" in response.headers
        assert await nothing_placed(sb)


async def test_a14_do_not_call_and_per_number_refusals_look_the_same() -> None:
    """A number on the do-not-call list and a number in its cool-down get the same status,
    body and Retry-After — also when the requester is rate-limited, where both get the
    requester's refusal. (Checking the list before the quotas, or with its own message,
    makes the two distinguishable.)"""
    env = {**STRICT, **BUSY, **PROXY, "CALLBRIDGE_PER_IP_HOURLY": "2"}
    async with running_sandbox(env) as sb:
        await sb.container.admission.add_do_not_call(NUMBERS[0])
        await call_and_end(sb, NUMBERS[1])
        opted_out = await post_call(sb, NUMBERS[0], ip="203.0.113.1")
        cooling = await post_call(sb, NUMBERS[1], ip="198.51.100.1")
        for response in (opted_out, cooling):
            assert response.status_code == 429
            assert response.json() == {
                "success": False,
                "error": {"code": "policy_rejected", "message": NUMBER_UNAVAILABLE_MESSAGE},
            }
        assert opted_out.headers["Retry-After"] == cooling.headers["Retry-After"]
        # Rate-limited requester: the list must not shine through the IP refusal.
        await post_call(sb, NUMBERS[5], ip="192.0.2.1")
        await post_call(sb, NUMBERS[6], ip="192.0.2.1")
        limited = [await post_call(sb, n, ip="192.0.2.1") for n in (NUMBERS[0], NUMBERS[7])]
        assert limited[0].json() == limited[1].json()
        assert limited[0].status_code == limited[1].status_code == 429
        assert len(sb.twilio.calls) == 3
