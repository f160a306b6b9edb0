"""Helpers of the security suite: numbers, signed requests, counting what was written."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx
from sqlalchemy import text
from twilio.request_validator import RequestValidator

from tests.support.app import Sandbox

#: Fictional, valid US numbers (NANP 555-01xx is reserved for fiction; 202 is DC).
NUMBERS = [f"+1202555{n:04d}" for n in range(110, 200)]  # not SANDBOX_FROM (0100)
ORIGIN = "https://shop.example.com"
#: Quotas given explicitly, so the sandbox's relaxed defaults do not apply.
STRICT = {
    "CALLBRIDGE_PER_NUMBER_HOURLY": "3",
    "CALLBRIDGE_PER_NUMBER_DAILY": "5",
    "CALLBRIDGE_PER_NUMBER_COOLDOWN": "600",
    "CALLBRIDGE_PER_IP_HOURLY": "10",
    "CALLBRIDGE_PER_IP_BLOCK_HOURLY": "30",
    "CALLBRIDGE_DISTINCT_NUMBERS_PER_IP_DAILY": "3",
    # NUMBERS share one range and one country code; test_a_destination sets these low.
    "CALLBRIDGE_PER_PREFIX_DAILY": "100000",
    "CALLBRIDGE_PER_COUNTRY_DAILY": "100000",
}
#: A callee that is busy: the call ends at once and frees its slot.
BUSY = {"CALLBRIDGE_SANDBOX_CALLEE": "busy"}
TERMINAL = {"completed", "busy", "no-answer", "canceled", "failed", "agent_failed"}


def twilio_signature(sb: Sandbox, url: str, params: Mapping[str, str] | None = None) -> str:
    """``X-Twilio-Signature`` as Twilio computes it with the account's auth token."""
    assert sb.container.auth_token
    validator = RequestValidator(sb.container.auth_token)
    return str(validator.compute_signature(url, dict(params or {})))


async def signed_post(
    sb: Sandbox, path: str, params: Mapping[str, str], *, signature: str | None = "sign",
    headers: Mapping[str, str] | None = None,
) -> httpx.Response:
    """POST a form as Twilio does, signed over the public URL (or with ``signature``)."""
    url = f"{sb.container.public_base_url}{path}"
    sent = dict(headers or {})
    if signature == "sign":
        sent["X-Twilio-Signature"] = twilio_signature(sb, url, params)
    elif signature is not None:
        sent["X-Twilio-Signature"] = signature
    return await sb.http.post(path, data=dict(params), headers=sent)


async def rows(sb: Sandbox, table: str, where: str = "") -> int:
    """How many rows a table holds (to show that nothing was written)."""
    async with sb.container.store.engine.connect() as conn:
        query = f"SELECT count(*) FROM {table} {where}"  # noqa: S608 - test constants only
        return int((await conn.execute(text(query))).scalar_one())


async def nothing_placed(sb: Sandbox) -> bool:
    """No call reached the Twilio emulator and no call record exists."""
    return not sb.twilio.calls and await rows(sb, "calls") == 0


async def wait_until(
    predicate: Callable[[], Any], timeout: float = 10.0  # noqa: ASYNC109 - a plain deadline
) -> Any:
    """Poll ``predicate`` (sync or async) until truthy; return its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.05)


async def ended(
    sb: Sandbox, call_id: str, timeout: float = 20.0  # noqa: ASYNC109 - a plain deadline
) -> Any:
    """Wait until our record of ``call_id`` is terminal; return it."""

    async def terminal() -> Any:
        call = await sb.container.store.get_call(call_id)
        return call if call is not None and call.status.value in TERMINAL else None

    return await wait_until(terminal, timeout)


async def call_and_end(sb: Sandbox, number: str, **kwargs: Any) -> httpx.Response:
    """Request a call that must be accepted, and wait until it ended."""
    response = await sb.request_call(number, **kwargs)
    assert response.status_code == 200, response.text
    await ended(sb, response.json()["call_id"])
    return response


async def post_call(
    sb: Sandbox, number: str, *, ip: str | None = None, origin: str | None = None,
    body: Mapping[str, Any] | None = None,
) -> httpx.Response:
    """POST /api/call/outbound with a fresh token, optionally via a proxy for ``ip``."""
    headers = {"X-Callbridge-Token": await sb.token(origin)}
    if origin:
        headers["Origin"] = origin
    if ip:
        headers["X-Forwarded-For"] = ip
    payload = dict(body) if body is not None else {"to_number": number}
    return await sb.http.post("/api/call/outbound", json=payload, headers=headers)
