"""security.md B: the number policy, over real HTTP; the Twilio emulator proves nothing is dialled.

The per-type fixture list and the parser's property tests are in tests/policy; here
each class of refusal is shown end to end.
"""

from __future__ import annotations

import asyncio
import os

import pytest
from typer.testing import CliRunner

from tests.security.helpers import NUMBERS, STRICT, count_rows, nothing_placed
from tests.support.app import running_sandbox


@pytest.mark.parametrize("number", ["+44 20 7946 0123", "+1 876 555 0143", "+33 6 12 34 56 78"])
async def test_b15_numbers_outside_the_allowed_countries_are_refused_before_twilio(
    number: str,
) -> None:
    """A number of a country off CALLBRIDGE_ALLOWED_COUNTRIES (Jamaica shares +1) is 422
    with a helpful message, and the emulator receives no request at all. (Without the
    country allowlist the emulator would be asked to dial it.)"""
    async with running_sandbox() as sb:
        response = await sb.request_call(number)
        assert response.status_code == 422
        assert "United States" in response.json()["error"]["message"]
        assert await nothing_placed(sb)


@pytest.mark.parametrize(
    "number",
    [
        "+1 800 555 0143",
        "+1 888 555 0143",
        "+1 900 234 5678",
        "+1 500 555 0143",
        "+1 900 212 3456",
        "+1 600 201 2345",
    ],
)
async def test_b16_premium_toll_free_personal_and_voip_numbers_are_refused(number: str) -> None:
    """Toll-free, premium-rate, personal and VoIP numbers are 422 and never dialled. (Without
    the type allowlist they are valid +1 numbers and would be dialled.)"""
    async with running_sandbox() as sb:
        response = await sb.request_call(number)
        assert response.status_code == 422
        assert await nothing_placed(sb)


@pytest.mark.parametrize("number", ["911", "112", "+1 911", "611", "22222", "+1 202 555", "hello"])
async def test_b17_emergency_short_codes_and_invalid_numbers_are_refused(number: str) -> None:
    """Emergency numbers, short codes and text that is not a valid E.164 number are refused
    (422, or 400 for non-numbers) and never dialled."""
    async with running_sandbox() as sb:
        response = await sb.request_call(number)
        assert response.status_code in (400, 422), response.text
        assert await nothing_placed(sb)


async def test_b19_a_geo_permission_refusal_is_blocked_by_provider_and_not_retried() -> None:
    """Twilio refusing a destination with 21215 (geo permissions) is recorded as
    ``blocked_by_provider`` after exactly one create request (no retry). (Treating it as
    retryable would ask Twilio again.)"""
    async with running_sandbox({"CALLBRIDGE_CREATE_RETRIES": "3"}) as sb:
        sb.twilio.refuse_number(NUMBERS[0], 400, 21215, "Account not authorized to call")
        response = await sb.request_call(NUMBERS[0])
        assert response.status_code == 422
        call = await sb.container.store.get_call(response.json()["call_id"])
        assert call is not None and call.failure_code == "blocked_by_provider"
        assert call.status.value == "failed"
        assert not sb.twilio.calls


async def test_b20_numbers_added_with_the_dnc_command_are_never_called(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """``callbridge dnc add`` puts a number on the list (masked in ``dnc list``); a request for
    it is 429 and nothing is dialled; ``dnc remove`` takes it off. (Without the list check
    the call is placed.)"""
    from callbridge.cli_dnc import dnc_app

    key = "k" * 40
    db = f"sqlite+aiosqlite:///{tmp_path}/cb.db"
    env = {**STRICT, "CALLBRIDGE_SECRET_KEY": key, "DATABASE_URL": db}
    runner = CliRunner()

    def cli(*args: str) -> str:
        saved = dict(os.environ)
        os.environ.update({**env, "CALLBRIDGE_SANDBOX": "true"})
        try:
            result = runner.invoke(dnc_app, list(args), catch_exceptions=False)
        finally:
            os.environ.clear()
            os.environ.update(saved)
        assert result.exit_code == 0, result.output
        return result.output

    out = await asyncio.to_thread(cli, "add", "+1 (202) 555-0111")
    assert "0111" in out and "2025550111" not in out
    async with running_sandbox(env, tmp_path=tmp_path) as sb:
        refused = await sb.request_call(NUMBERS[1])
        assert refused.status_code == 429
        assert await nothing_placed(sb)
        listed = await asyncio.to_thread(cli, "list")
        assert "0111" in listed and "2025550111" not in listed
        assert await count_rows(sb, "do_not_call") == 1
        await asyncio.to_thread(cli, "remove", "+12025550111")
        assert (await sb.request_call(NUMBERS[1])).status_code == 200
