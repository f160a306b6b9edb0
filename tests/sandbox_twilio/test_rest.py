"""The emulated Calls REST resource, driven by the official twilio-python client and httpx."""

from __future__ import annotations

import asyncio
import re
from email.utils import parsedate_to_datetime

import httpx
import pytest
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

from tests.sandbox_twilio.conftest import ACCOUNT_SID, AUTH_TOKEN, CALLEE, CALLER, Sandbox

SAY = "<Response><Pause length='5'/></Response>"


def _client(sandbox: Sandbox, token: str = AUTH_TOKEN) -> Client:
    client = Client(ACCOUNT_SID, token)
    client.api.base_url = sandbox.api_base
    return client


async def test_twilio_client_creates_fetches_lists_and_hangs_up(sandbox: Sandbox) -> None:
    """twilio-python creates, fetches, lists and hangs up a call as it would on Twilio."""
    client = _client(sandbox)
    call = await asyncio.to_thread(
        client.calls.create,
        to=CALLEE,
        from_=CALLER,
        twiml=SAY,
        status_callback=sandbox.base_url + "/status",
    )
    assert re.fullmatch(r"CA[0-9a-f]{32}", call.sid)
    assert call.status == "queued"
    assert call.direction == "outbound-api"
    await sandbox.emulator.wait_for_status(call.sid, "in-progress", 5)
    fetched = await asyncio.to_thread(client.calls(call.sid).fetch)
    assert fetched.status == "in-progress"
    assert fetched.start_time is not None
    listed = await asyncio.to_thread(client.calls.list, to=CALLEE)
    assert [c.sid for c in listed] == [call.sid]
    ended = await asyncio.to_thread(client.calls(call.sid).update, status="completed")
    assert ended.status == "completed"
    record = await sandbox.end(call.sid)
    assert record.end_reason == "rest"


async def test_list_pages_like_twilio(sandbox: Sandbox) -> None:
    """Listing with a small page size follows next_page_uri across pages."""
    sandbox.emulator.set_callee(None, "no-answer")
    sids = {(await sandbox.create(Twiml=SAY, Timeout="1"))["sid"] for _ in range(3)}
    client = _client(sandbox)
    listed = await asyncio.to_thread(client.calls.list, to=CALLEE, page_size=2)
    assert {c.sid for c in listed} == sids
    page = await sandbox.http.get(
        f"{sandbox.api_base}/2010-04-01/Accounts/{ACCOUNT_SID}/Calls.json?PageSize=2",
        auth=(ACCOUNT_SID, AUTH_TOKEN),
    )
    body = page.json()
    assert {k for k in body if k != "calls"} >= {
        "page",
        "page_size",
        "uri",
        "next_page_uri",
        "first_page_uri",
        "start",
        "end",
    }
    assert body["page_size"] == 2 and len(body["calls"]) == 2
    assert body["next_page_uri"].startswith(f"/2010-04-01/Accounts/{ACCOUNT_SID}/Calls.json?")


async def test_call_json_has_twilio_fields(sandbox: Sandbox) -> None:
    """A created call renders every Call resource field, RFC 2822 dates and its URIs."""
    body = await sandbox.create(Twiml=SAY)
    sid = body["sid"]
    for name in (
        "sid",
        "date_created",
        "date_updated",
        "parent_call_sid",
        "account_sid",
        "to",
        "to_formatted",
        "from",
        "from_formatted",
        "phone_number_sid",
        "status",
        "start_time",
        "end_time",
        "duration",
        "price",
        "price_unit",
        "direction",
        "answered_by",
        "api_version",
        "forwarded_from",
        "group_sid",
        "caller_name",
        "queue_time",
        "trunk_sid",
        "uri",
        "subresource_uris",
    ):
        assert name in body
    assert body["status"] == "queued" and body["direction"] == "outbound-api"
    assert body["api_version"] == "2010-04-01"
    assert body["start_time"] is None and body["duration"] is None
    assert body["uri"] == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/{sid}.json"
    assert body["subresource_uris"]["recordings"].endswith(f"/Calls/{sid}/Recordings.json")
    assert body["date_created"].endswith("+0000")
    parsedate_to_datetime(body["date_created"])


async def test_bad_to_raises_21211_through_the_sdk(sandbox: Sandbox) -> None:
    """A To that is not E.164 gives TwilioRestException 21211 (HTTP 400)."""
    client = _client(sandbox)
    with pytest.raises(TwilioRestException) as caught:
        await asyncio.to_thread(client.calls.create, to="555-1234", from_=CALLER, twiml=SAY)
    assert caught.value.code == 21211 and caught.value.status == 400


async def test_bad_credentials_raise_20003(sandbox: Sandbox) -> None:
    """A wrong auth token gives TwilioRestException 20003 (HTTP 401)."""
    client = _client(sandbox, token="wrong")
    with pytest.raises(TwilioRestException) as caught:
        await asyncio.to_thread(client.calls.create, to=CALLEE, from_=CALLER, twiml=SAY)
    assert caught.value.code == 20003 and caught.value.status == 401


@pytest.mark.parametrize(
    ("form", "code"),
    [
        ({"To": None}, 21201),
        ({"To": "+1"}, 21211),
        ({"From": None}, 21603),
        ({"Twiml": None, "Url": None}, 21205),
        ({"Url": "ftp://x/y"}, 21205),
    ],
)
async def test_create_validation_errors(
    sandbox: Sandbox, form: dict[str, str | None], code: int
) -> None:
    """Invalid create parameters answer 400 with Twilio's error body and create no call."""
    body = await sandbox.create(expect=400, **({"Twiml": SAY} | form))
    assert body == {
        "code": code,
        "message": body["message"],
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": 400,
    }
    assert sandbox.emulator.calls == {}


async def test_unknown_sid_is_404_20404(sandbox: Sandbox) -> None:
    """Fetching or updating an unknown SID answers 404 with code 20404."""
    url = f"{sandbox.api_base}/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/CA{'0' * 32}.json"
    for method in ("GET", "POST"):
        response = await sandbox.http.request(method, url, auth=(ACCOUNT_SID, AUTH_TOKEN))
        assert response.status_code == 404 and response.json()["code"] == 20404


async def test_update_of_ended_call_is_21220(sandbox: Sandbox) -> None:
    """Updating a call that has ended answers 400 with code 21220."""
    sid = (await sandbox.create(Twiml="<Response><Hangup/></Response>"))["sid"]
    await sandbox.end(sid)
    client = _client(sandbox)
    with pytest.raises(TwilioRestException) as caught:
        await asyncio.to_thread(client.calls(sid).update, status="completed")
    assert caught.value.code == 21220


async def test_cancel_while_ringing(sandbox: Sandbox) -> None:
    """Status=canceled on a ringing call ends it as canceled with no duration."""
    sandbox.emulator.set_callee(None, "answer=5")
    sid = (await sandbox.create(Twiml=SAY))["sid"]
    await sandbox.emulator.wait_for_status(sid, "ringing", 5)
    ended = await asyncio.to_thread(_client(sandbox).calls(sid).update, status="canceled")
    assert ended.status == "canceled"
    assert (await sandbox.end(sid)).duration == 0


async def test_an_idempotency_token_header_does_not_deduplicate_create(sandbox: Sandbox) -> None:
    """Twilio's CreateCall defines no idempotency header: two creates with the same
    I-Twilio-Idempotency-Token place two calls (security.md 40)."""
    headers = {"I-Twilio-Idempotency-Token": "retry-1"}
    first = await sandbox.create(Twiml=SAY, headers=headers)
    second = await sandbox.create(Twiml=SAY, headers=headers)
    assert second["sid"] != first["sid"]
    assert len(sandbox.emulator.calls) == 2


async def test_a_failure_injected_after_placing_answers_the_error_but_places_the_call(
    sandbox: Sandbox,
) -> None:
    """inject_create_failure(after_placing=True) answers 500 while the call is placed
    and rings, as when Twilio loses its answer to a create it carried out."""
    sandbox.emulator.inject_create_failure(500, 20500, "Internal Server Error", after_placing=True)
    body = await sandbox.create(expect=500, Twiml=SAY)
    assert body["code"] == 20500 and body["status"] == 500
    assert len(sandbox.emulator.calls) == 1
    (call,) = sandbox.emulator.calls.values()
    await sandbox.emulator.wait_for_status(call.sid, "completed", 10)


async def test_injected_create_failures(sandbox: Sandbox) -> None:
    """inject_create_failure fails the next N creates with the given error, then recovers."""
    sandbox.emulator.inject_create_failure(429, 20429, "Too Many Requests", count=2)
    for _ in range(2):
        body = await sandbox.create(expect=429, Twiml=SAY)
        assert body["code"] == 20429 and body["status"] == 429
    await sandbox.create(Twiml=SAY)
    assert len(sandbox.emulator.calls) == 1


async def test_refused_number_raises_through_the_sdk(sandbox: Sandbox) -> None:
    """refuse_number makes creates to that number fail with the given code."""
    sandbox.emulator.refuse_number(
        CALLEE,
        400,
        21219,
        "The number is unverified. Trial accounts may only make calls to verified numbers.",
    )
    with pytest.raises(TwilioRestException) as caught:
        await asyncio.to_thread(_client(sandbox).calls.create, to=CALLEE, from_=CALLER, twiml=SAY)
    assert caught.value.code == 21219
    await sandbox.create(Twiml=SAY, To="+14155550199")


async def test_delayed_create_still_creates_the_call(sandbox: Sandbox) -> None:
    """With delay_next_create the client times out, yet the call exists (ambiguous outcome)."""
    sandbox.emulator.delay_next_create(1.0)
    with pytest.raises(httpx.ReadTimeout):
        await sandbox.http.post(
            f"{sandbox.api_base}/2010-04-01/Accounts/{ACCOUNT_SID}/Calls.json",
            data={"To": CALLEE, "From": CALLER, "Twiml": SAY},
            auth=(ACCOUNT_SID, AUTH_TOKEN),
            timeout=0.3,
        )
    assert len(sandbox.emulator.calls) == 1
