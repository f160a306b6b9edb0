"""The emulator's IncomingPhoneNumbers and OutgoingCallerIds, read by the official twilio SDK."""

from __future__ import annotations

import httpx
from twilio.rest import Client

from callbridge.adapters.twilio.http_client import HttpxTwilioClient
from callbridge.adapters.twilio.numbers import CallerIdStatus, TwilioNumbers
from callbridge.sandbox.twilio.numbers import SANDBOX_NUMBER
from tests.sandbox_twilio.conftest import ACCOUNT_SID, AUTH_TOKEN, Sandbox


async def test_the_caller_id_check_tells_owned_voice_sms_only_verified_and_unknown(
    sandbox: Sandbox,
) -> None:
    """An owned voice number is usable, an SMS-only one is not, a verified caller id is,
    and a number the account has never seen is not (twilio-research.md §5.3)."""
    numbers = sandbox.emulator.numbers
    numbers.add_number("+12025550101", voice=False)
    numbers.verify_caller_id("+12025550142")
    check = TwilioNumbers(
        account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, api_base_url=sandbox.api_base
    )
    assert await check.caller_id_status(SANDBOX_NUMBER) == CallerIdStatus(True, True, False)
    sms_only = await check.caller_id_status("+12025550101")
    assert sms_only == CallerIdStatus(True, False, False) and not sms_only.usable
    assert (await check.caller_id_status("+12025550142")).usable
    unknown = await check.caller_id_status("+12025550199")
    assert unknown == CallerIdStatus(False, False, False) and not unknown.usable


async def test_the_sdk_pages_and_filters_as_the_spec_says(sandbox: Sandbox) -> None:
    """PhoneNumber matches partially with * for one digit (so callers compare exactly);
    items carry the spec's fields; paging follows next_page_uri."""
    for last in range(1, 6):
        sandbox.emulator.numbers.add_number(f"+1202555011{last}")
    async with httpx.AsyncClient(timeout=10) as http:
        client = Client(ACCOUNT_SID, AUTH_TOKEN, http_client=HttpxTwilioClient(http))
        client.api.base_url = sandbox.api_base
        account = client.api.v2010.accounts(ACCOUNT_SID)
        partial = await account.incoming_phone_numbers.list_async(phone_number="+1202555011*")
        assert sorted(n.phone_number for n in partial) == [
            f"+1202555011{last}" for last in range(1, 6)
        ]
        paged = await account.incoming_phone_numbers.list_async(page_size=2)
        assert len(paged) == 6  # the sandbox's own number and five more, over three pages
        first = paged[0]
        assert first.capabilities["voice"] is True and first.sid.startswith("PN")
        assert first.account_sid == ACCOUNT_SID and first.voice_receive_mode == "voice"
        assert await account.outgoing_caller_ids.list_async(phone_number=SANDBOX_NUMBER) == []
        raw = await http.get(
            f"{sandbox.api_base}/2010-04-01/Accounts/{ACCOUNT_SID}/OutgoingCallerIds.json",
            auth=(ACCOUNT_SID, "wrong"),
        )
        assert raw.status_code == 401 and raw.json()["code"] == 20003
