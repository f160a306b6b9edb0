"""security.md A2, A3 (Turnstile, fail closed) and A13 (kill switch and Usage Trigger)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qsl

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from tests.security.helpers import NUMBERS, ORIGIN, nothing_placed, signed_post
from tests.support.app import running_sandbox
from tests.support.server import serve

SECRET = "0x4AAAAAAA-test-secret"
TRIGGER_PATH = "/api/webhooks/twilio/usage-trigger"


@asynccontextmanager
async def siteverify() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """A local stand-in for Cloudflare's siteverify; the token chooses its answer."""
    seen: list[dict[str, Any]] = []
    stop = asyncio.Event()

    async def verify(request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode()))
        seen.append(form)
        token = form.get("response")
        ok = {"success": True, "hostname": "shop.example.com", "action": "call"}
        if form.get("secret") != SECRET:
            return JSONResponse({"success": False, "error-codes": ["invalid-input-secret"]})
        if token == "good":
            return JSONResponse(ok)
        if token == "other-host":
            return JSONResponse({**ok, "hostname": "evil.example.com"})
        if token == "other-action":
            return JSONResponse({**ok, "action": "login"})
        if token == "duplicate":
            return JSONResponse({"success": False, "error-codes": ["timeout-or-duplicate"]})
        if token == "slow":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 8)
            return JSONResponse(ok)
        if token == "html":
            return PlainTextResponse("<html>502 Bad Gateway</html>", status_code=502)
        if token == "not-a-verdict":
            return JSONResponse({"success": "yes"})
        return JSONResponse({"success": False, "error-codes": ["invalid-input-response"]})

    app = Starlette(routes=[Route("/siteverify", verify, methods=["POST"])])
    async with serve(app) as base:
        try:
            yield f"{base}/siteverify", seen
        finally:
            stop.set()


def _env(url: str) -> dict[str, str]:
    return {
        "CALLBRIDGE_TURNSTILE_SECRET": SECRET,
        "CALLBRIDGE_TURNSTILE_VERIFY_URL": url,
        "CALLBRIDGE_ALLOWED_ORIGINS": ORIGIN,
    }


async def _ask(sb: Any, turnstile: str | None) -> Any:
    headers = {"Origin": ORIGIN, "X-Callbridge-Token": await sb.token(ORIGIN)}
    if turnstile is not None:
        headers["X-Turnstile-Token"] = turnstile
    return await sb.http.post("/api/call/outbound", json={"to_number": NUMBERS[0]}, headers=headers)


async def test_a02_missing_or_rejected_turnstile_tokens_are_403() -> None:
    """No Turnstile token, an invalid or reused one, or one solved for another hostname or
    action is 403 and places nothing; a good one passes. (Without the server-side check
    every one of them would place a call.)"""
    async with siteverify() as (url, seen), running_sandbox(_env(url)) as sb:
        for token in (None, "forged", "duplicate", "other-host", "other-action"):
            response = await _ask(sb, token)
            assert response.status_code == 403, (token, response.text)
            assert response.json()["error"]["code"] == "human_check_failed"
        assert await nothing_placed(sb)
        assert len(seen) == 4  # no token: refused without asking Cloudflare
        assert (await _ask(sb, "good")).status_code == 200
        assert seen[-1]["secret"] == SECRET and seen[-1]["remoteip"] == "127.0.0.1"


async def test_a03_a_verifier_that_times_out_or_answers_nonsense_fails_closed() -> None:
    """siteverify timing out, answering HTML or a non-boolean verdict gives 503, never a
    pass. (A fail-open check would place these calls.)"""
    async with siteverify() as (url, _seen), running_sandbox(_env(url)) as sb:
        for token in ("html", "not-a-verdict", "slow"):
            response = await _ask(sb, token)
            assert response.status_code == 503, (token, response.text)
        assert await nothing_placed(sb)


def _trigger(sb: Any, **extra: str) -> dict[str, str]:
    return {
        "AccountSid": sb.container.account_sid,
        "UsageTriggerSid": "UT" + "0" * 32,
        "DateFired": "Tue, 24 Nov 2026 12:00:00 +0000",
        "Recurring": "daily",
        "UsageCategory": "totalprice",
        "TriggerBy": "price",
        "TriggerValue": "50",
        "CurrentValue": "50.12",
        "IdempotencyToken": "UT0-1",
        **extra,
    }


async def test_a13_a_usage_trigger_stops_new_calls() -> None:
    """A Twilio-signed Usage Trigger trips the kill switch: the next request is 503 and
    nothing is placed. Unsigned, forged or another account's triggers are 403 and change
    nothing. (Without the webhook the call after the trigger is placed.)"""
    async with running_sandbox() as sb:
        params = _trigger(sb)
        assert (await signed_post(sb, TRIGGER_PATH, params, signature=None)).status_code == 403
        assert (await signed_post(sb, TRIGGER_PATH, params, signature="AAAA")).status_code == 403
        other = _trigger(sb, AccountSid="AC" + "f" * 32)
        assert (await signed_post(sb, TRIGGER_PATH, other)).status_code == 403
        assert (await sb.request_call(NUMBERS[0])).status_code == 200
        assert (await signed_post(sb, TRIGGER_PATH, params)).status_code == 200
        refused = await sb.request_call(NUMBERS[1])
        assert refused.status_code == 503 and "Retry-After" in refused.headers
        assert len(sb.twilio.calls) == 1


@pytest.mark.redis
async def test_a13_a_usage_trigger_stops_calls_in_every_process_within_5_s(
    redis_url: str,
) -> None:
    """Two processes sharing Redis: a trigger received by one stops new calls in the other
    within 5 s. (With a process-local switch the second keeps placing calls.)"""
    import redis.asyncio as aioredis

    from callbridge.adapters.redis_shared import KILL_SWITCH_KEY

    client = aioredis.Redis.from_url(redis_url)
    # The session's Redis still holds earlier tests' rate-limit counters for these
    # numbers and this client address: start from none, as a fresh deployment does.
    await client.flushdb()
    env = {"REDIS_URL": redis_url}
    try:
        async with running_sandbox(env) as one, running_sandbox(env) as two:
            assert (await two.request_call(NUMBERS[0])).status_code == 200
            assert (await signed_post(one, TRIGGER_PATH, _trigger(one))).status_code == 200
            tripped = time.monotonic()
            number = iter(NUMBERS[1:])
            while (await two.request_call(next(number))).status_code != 503:
                assert time.monotonic() - tripped < 5
                await asyncio.sleep(0.2)
            assert len(two.twilio.calls) <= 1 + int((time.monotonic() - tripped) / 0.2)
            assert not one.twilio.calls
    finally:
        await client.delete(KILL_SWITCH_KEY)
        await client.aclose()
