"""Helpers of the security suite: numbers, signed requests, counting what was written."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from tests.support.app import Sandbox, count_rows, twilio_signature
from tests.support.wait import wait_until

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


async def signed_post(
    sb: Sandbox,
    path: str,
    params: Mapping[str, str],
    *,
    signature: str | None = "sign",
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


async def nothing_placed(sb: Sandbox) -> bool:
    """No call reached the Twilio emulator and no call record exists."""
    return not sb.twilio.calls and await count_rows(sb, "calls") == 0


async def ended(
    sb: Sandbox,
    call_id: str,
    timeout: float = 20.0,  # noqa: ASYNC109 - a plain deadline
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
    sb: Sandbox,
    number: str,
    *,
    ip: str | None = None,
    origin: str | None = None,
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
