"""Contract: every REST answer of the Twilio emulator, checked against Twilio's own models.

Two references, both independent of the emulator: Twilio's published OpenAPI
(twilio-oai, transcribed in :mod:`tests.support.twilio_schema`: every field present,
no other field, each of the right JSON type and format) and the official
twilio-python SDK (its instance classes built from the emulator's JSON must read
every field the JSON has). A divergence fails here, not on the first live call.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import httpx
import pytest
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client
from twilio.rest.api.v2010.account.call import CallInstance
from twilio.rest.api.v2010.account.incoming_phone_number import IncomingPhoneNumberInstance
from twilio.rest.api.v2010.account.outgoing_caller_id import OutgoingCallerIdInstance
from twilio.rest.voice.v1.dialing_permissions.country import CountryInstance
from twilio.rest.voice.v1.dialing_permissions.country.highrisk_special_prefix import (
    HighriskSpecialPrefixInstance,
)

from tests.sandbox_twilio.conftest import ACCOUNT_SID, AUTH_TOKEN, CALLEE, Sandbox
from tests.support.twilio_schema import (
    CALL_FIELDS,
    CALL_PAGE_FIELDS,
    CALL_SUBRESOURCES,
    CALLER_ID_FIELDS,
    COUNTRY_FIELDS,
    ERROR_FIELDS,
    INCOMING_NUMBER_FIELDS,
    PAGE_2010_FIELDS,
    PREFIX_FIELDS,
    V1_META_FIELDS,
    page_divergences,
    resource_divergences,
    sdk_payload_keys,
)

SAY = "<Response><Say>Hello there</Say><Pause length='2'/></Response>"
_CALL_SDK_KEYS = sdk_payload_keys(CallInstance)
#: What twilio-python reads beyond the spec (9.13: ``stir_verstat``).
_CALL_SDK_EXTRA = _CALL_SDK_KEYS - set(CALL_FIELDS)
_DATES = {"date_created", "date_updated", "start_time", "end_time"}


def _calls_url(sandbox: Sandbox, sid: str | None = None) -> str:
    root = f"{sandbox.api_base}/2010-04-01/Accounts/{ACCOUNT_SID}/Calls"
    return f"{root}/{sid}.json" if sid else f"{root}.json"


async def _get(sandbox: Sandbox, url: str, **params: Any) -> httpx.Response:
    return await sandbox.http.get(url, params=params, auth=(ACCOUNT_SID, AUTH_TOKEN))


def _assert_call(body: dict[str, Any]) -> None:
    assert resource_divergences(body, CALL_FIELDS, also=_CALL_SDK_EXTRA) == []
    assert set(body["subresource_uris"]) == CALL_SUBRESOURCES
    instance = CallInstance(_client().api.v2010, body, ACCOUNT_SID)
    for key in _CALL_SDK_KEYS:
        attribute = "_from" if key == "from" else key
        value = getattr(instance, attribute)
        if body[key] is None:
            assert value is None, key
        elif key in _DATES:
            assert isinstance(value, datetime), key
        else:
            assert value == body[key], key


def _client() -> Client:
    return Client(ACCOUNT_SID, AUTH_TOKEN)


def test_the_sdk_reads_every_field_the_spec_lists() -> None:
    """twilio-python's CallInstance reads each field of the spec's Call (so a field the
    emulator renders under a wrong name shows up as None in the SDK)."""
    assert set(CALL_FIELDS) <= _CALL_SDK_KEYS


async def test_every_call_answer_matches_the_spec_and_the_sdk(sandbox: Sandbox) -> None:
    """Create (201), fetch while ringing, in progress and completed, update and list: each
    call JSON has exactly the spec's fields (plus those the SDK reads), typed and
    formatted as the spec says, and twilio-python's CallInstance reads all of them."""
    # Ringing and talking last long enough to be fetched in each state.
    sandbox.emulator.set_callee(CALLEE, "answer=1.5,hangup=10")
    created = await sandbox.create(Url=sandbox.base_url + "/twiml", StatusCallback=None)
    sandbox.receiver.twiml["/twiml"] = SAY
    _assert_call(created)
    sid = created["sid"]
    seen = {created["status"]}
    for status in ("ringing", "in-progress"):
        await sandbox.emulator.wait_for_status(sid, status, 5)
        fetched = (await _get(sandbox, _calls_url(sandbox, sid))).json()
        _assert_call(fetched)
        seen.add(fetched["status"])
    await sandbox.end(sid)
    done = (await _get(sandbox, _calls_url(sandbox, sid))).json()
    _assert_call(done)
    assert done["price"] is not None and done["duration"] is not None
    seen.add(done["status"])
    assert seen == {"queued", "ringing", "in-progress", "completed"}

    live = await sandbox.create(Twiml="<Response><Pause length='30'/></Response>")
    await sandbox.emulator.wait_for_status(live["sid"], "in-progress", 5)
    updated = await sandbox.http.post(
        _calls_url(sandbox, live["sid"]),
        data={"Status": "completed"},
        auth=(ACCOUNT_SID, AUTH_TOKEN),
    )
    assert updated.status_code == 200
    _assert_call(updated.json())

    page = (await _get(sandbox, _calls_url(sandbox), PageSize=1)).json()
    assert page_divergences(page, CALL_PAGE_FIELDS) == []
    assert page["next_page_uri"] is not None
    for call in page["calls"]:
        _assert_call(call)
    empty = (await _get(sandbox, _calls_url(sandbox), To="+12025550199")).json()
    assert page_divergences(empty, CALL_PAGE_FIELDS) == []
    assert (empty["calls"], empty["start"], empty["end"]) == ([], 0, 0)


@pytest.mark.parametrize("script", ["busy", "no-answer", "reject", "fail"])
async def test_calls_that_never_connect_match_the_spec(sandbox: Sandbox, script: str) -> None:
    """Busy, unanswered, rejected and failed calls render the same contract (null start
    time, duration "0", no price)."""
    sandbox.emulator.set_callee(CALLEE, script)
    sid = (await sandbox.create(Twiml=SAY, Timeout="1"))["sid"]
    await sandbox.end(sid)
    body = (await _get(sandbox, _calls_url(sandbox, sid))).json()
    _assert_call(body)
    assert body["status"] in {"busy", "no-answer", "failed"}
    assert body["start_time"] is None


async def test_delete_answers_204_with_no_body(sandbox: Sandbox) -> None:
    """DELETE of an ended call answers 204 and an empty body, as the spec's 204 says."""
    sid = (await sandbox.create(Twiml="<Response><Hangup/></Response>"))["sid"]
    await sandbox.end(sid)
    response = await sandbox.http.delete(_calls_url(sandbox, sid), auth=(ACCOUNT_SID, AUTH_TOKEN))
    assert (response.status_code, response.content) == (204, b"")


async def test_error_answers_have_twilios_error_body(sandbox: Sandbox) -> None:
    """404, 400 and 401 answer exactly {code, message, more_info, status}, which
    twilio-python turns into TwilioRestException with the code and status."""
    answers = [
        await _get(sandbox, _calls_url(sandbox, "CA" + "0" * 32)),
        await sandbox.http.post(
            _calls_url(sandbox),
            data={"To": "nope", "From": "+15005550006", "Twiml": SAY},
            auth=(ACCOUNT_SID, AUTH_TOKEN),
        ),
        await sandbox.http.get(_calls_url(sandbox), auth=(ACCOUNT_SID, "wrong")),
    ]
    assert [a.status_code for a in answers] == [404, 400, 401]
    for answer in answers:
        body = answer.json()
        assert page_divergences(body, ERROR_FIELDS) == []
        assert body["status"] == answer.status_code
        assert body["more_info"] == f"https://www.twilio.com/docs/errors/{body['code']}"
    client = _client()
    client.api.base_url = sandbox.api_base
    with pytest.raises(TwilioRestException) as caught:
        await asyncio.to_thread(client.calls("CA" + "0" * 32).fetch)
    assert (caught.value.status, caught.value.code) == (404, 20404)


async def test_dialing_permissions_answers_match_the_spec_and_the_sdk(sandbox: Sandbox) -> None:
    """Countries (list and fetch) and HighRiskSpecialPrefixes match the Voice v1 spec's
    schemas and content/meta page, and twilio-python's instances read every field."""
    root = sandbox.api_base + "/v1/DialingPermissions/Countries"
    listed = (await _get(sandbox, root, PageSize=3)).json()
    assert set(listed) == {"content", "meta"}
    assert page_divergences(listed["meta"], V1_META_FIELDS) == []
    assert listed["meta"]["key"] == "content" and len(listed["content"]) == 3
    fetched = (await _get(sandbox, root + "/US")).json()
    version = _client().voice.v1
    country_keys = sdk_payload_keys(CountryInstance)
    assert set(COUNTRY_FIELDS) <= country_keys
    beyond = country_keys - set(COUNTRY_FIELDS)
    for body in [*listed["content"], fetched]:
        assert resource_divergences(body, COUNTRY_FIELDS, also=beyond) == []
        instance = CountryInstance(version, body)
        for key in country_keys:
            assert getattr(instance, key) == body[key], key
    prefixes = (await _get(sandbox, root + "/US/HighRiskSpecialPrefixes")).json()
    assert set(prefixes) == {"content", "meta"}
    assert page_divergences(prefixes["meta"], V1_META_FIELDS) == []
    for body in prefixes["content"]:
        assert resource_divergences(body, PREFIX_FIELDS) == []
        HighriskSpecialPrefixInstance(version, body, "US")


@pytest.mark.parametrize(
    ("resource", "key", "fields", "instance_class"),
    [
        (
            "IncomingPhoneNumbers",
            "incoming_phone_numbers",
            INCOMING_NUMBER_FIELDS,
            IncomingPhoneNumberInstance,
        ),
        ("OutgoingCallerIds", "outgoing_caller_ids", CALLER_ID_FIELDS, OutgoingCallerIdInstance),
    ],
)
async def test_number_lists_match_the_spec_and_the_sdk(
    sandbox: Sandbox,
    resource: str,
    key: str,
    fields: dict[str, tuple[str, str | None]],
    instance_class: type,
) -> None:
    """IncomingPhoneNumbers and OutgoingCallerIds pages and items have exactly the spec's
    fields, typed, formatted and in range (capabilities, HTTP methods, E.164, enums),
    and twilio-python's instances read every one; an empty page says end 0."""
    numbers = sandbox.emulator.numbers
    numbers.add_number("+12025550101", voice=False)
    numbers.verify_caller_id("+12025550142")
    numbers.verify_caller_id("+12025550143")
    url = f"{sandbox.api_base}/2010-04-01/Accounts/{ACCOUNT_SID}/{resource}.json"
    page = (await _get(sandbox, url, PageSize=1)).json()
    assert page_divergences(page, PAGE_2010_FIELDS | {key: ("array", False)}) == []
    assert page["next_page_uri"] is not None
    sdk_keys = sdk_payload_keys(instance_class)
    assert set(fields) <= sdk_keys
    everything = (await _get(sandbox, url)).json()[key]
    assert len(everything) >= 2
    for body in everything:
        assert resource_divergences(body, fields, also=frozenset(sdk_keys - set(fields))) == []
        instance = instance_class(_client().api.v2010, body, ACCOUNT_SID)
        for name in sdk_keys:
            value = getattr(instance, name)
            if body[name] is None:
                assert value is None, name
            elif name in _DATES:
                assert isinstance(value, datetime), name
            else:
                assert value == body[name], name
    empty = (await _get(sandbox, url, PhoneNumber="+19999999999")).json()
    assert page_divergences(empty, PAGE_2010_FIELDS | {key: ("array", False)}) == []
    assert (empty[key], empty["start"], empty["end"]) == ([], 0, 0)
