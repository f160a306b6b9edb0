"""TwiML verbs carried out by the call simulator."""

from __future__ import annotations

import asyncio

import pytest

from callbridge.sandbox.twilio.twiml import (
    Connect,
    Gather,
    Say,
    TwimlError,
    parse_twiml,
)
from tests.sandbox_twilio.conftest import CALLEE, Sandbox


async def test_gather_posts_digits_to_action(sandbox: Sandbox) -> None:
    """The callee presses its scripted digits; Digits is posted to action, its TwiML runs."""
    sandbox.emulator.set_callee(CALLEE, "answer=0,digits=42")
    sandbox.receiver.twiml["/twiml"] = (
        "<Response><Gather numDigits='2' action='/gathered' timeout='2'>"
        "<Say>Press 42</Say></Gather><Say>No input</Say></Response>"
    )
    sandbox.receiver.twiml["/gathered"] = "<Response><Say>Thanks</Say></Response>"
    sid = (await sandbox.create(Url=sandbox.base_url + "/twiml"))["sid"]
    call = await sandbox.end(sid)
    (hook,) = sandbox.receiver.posted("/gathered")
    assert hook.valid and hook.params["Digits"] == "42" and hook.params["CallSid"] == sid
    assert call.said == ["Press 42", "Thanks"]
    assert call.gathered == ["42"]


async def test_gather_without_action_posts_to_the_document_url(sandbox: Sandbox) -> None:
    """A Gather with no action posts Digits back to the URL of its document."""
    sandbox.emulator.set_callee(CALLEE, "answer=0,digits=1")
    sandbox.receiver.twiml["/menu"] = lambda hook: (
        "<Response><Say>Got it</Say></Response>"
        if "Digits" in hook.params
        else "<Response><Gather numDigits='1'/></Response>"
    )
    sid = (await sandbox.create(Url=sandbox.base_url + "/menu"))["sid"]
    call = await sandbox.end(sid)
    assert [h.params.get("Digits") for h in sandbox.receiver.posted("/menu")] == [None, "1"]
    assert call.said == ["Got it"]


async def test_gather_timeout_continues_with_next_verb(sandbox: Sandbox) -> None:
    """A Gather that gets no digits before its timeout falls through to the next verb."""
    sid = (
        await sandbox.create(
            Twiml="<Response><Gather timeout='0.2' action='/x'/>"
            "<Say>Nothing pressed</Say></Response>"
        )
    )["sid"]
    call = await sandbox.end(sid)
    assert call.said == ["Nothing pressed"]
    assert sandbox.receiver.posted("/x") == []


async def test_live_press_reaches_a_gather(sandbox: Sandbox) -> None:
    """callee_press during a Gather is collected up to finishOnKey."""
    sandbox.receiver.twiml["/g"] = "<Response/>"
    sid = (
        await sandbox.create(
            Twiml=f"<Response><Gather timeout='3' action='{sandbox.base_url}/g'/></Response>"
        )
    )["sid"]
    await sandbox.emulator.wait_for_status(sid, "in-progress", 5)
    await asyncio.sleep(0.1)
    sandbox.emulator.callee_press(sid, "12#")
    await sandbox.end(sid)
    (hook,) = sandbox.receiver.posted("/g")
    assert hook.params["Digits"] == "12" and hook.params["FinishedOnKey"] == "#"


async def test_redirect_fetches_and_runs(sandbox: Sandbox) -> None:
    """Redirect requests its URL with the given method and runs the returned TwiML."""
    sandbox.receiver.twiml["/next"] = "<Response><Say>Redirected</Say></Response>"
    sid = (
        await sandbox.create(
            Twiml=f"<Response><Redirect method='GET'>{sandbox.base_url}"
            "/next</Redirect><Say>never</Say></Response>"
        )
    )["sid"]
    call = await sandbox.end(sid)
    (hook,) = sandbox.receiver.posted("/next")
    assert hook.method == "GET" and hook.valid
    assert call.said == ["Redirected"]


async def test_redirect_loop_stops_after_ten(sandbox: Sandbox) -> None:
    """Twilio follows at most 10 redirects in a row, then ends the call with 11215."""
    sandbox.receiver.twiml["/loop"] = "<Response><Redirect>/loop</Redirect></Response>"
    sid = (await sandbox.create(Url=sandbox.base_url + "/loop"))["sid"]
    call = await sandbox.end(sid)
    assert len(sandbox.receiver.posted("/loop")) == 11
    assert call.errors[-1][0] == 11215 and call.status == "completed"


async def test_dial_records_the_number_and_continues(sandbox: Sandbox) -> None:
    """Dial records the dialled number, stays up dial_seconds, then TwiML continues."""
    sid = (
        await sandbox.create(
            Twiml="<Response><Dial callerId='+15005550006'>"
            "<Number>+14155550123</Number></Dial>"
            "<Say>After dial</Say></Response>"
        )
    )["sid"]
    call = await sandbox.end(sid)
    assert call.dialled == ["+14155550123"] and call.said == ["After dial"]
    assert call.duration is not None


async def test_hangup_ends_before_later_verbs(sandbox: Sandbox) -> None:
    """Hangup ends the call; verbs after it never run."""
    sid = (await sandbox.create(Twiml="<Response><Say>a</Say><Hangup/><Say>b</Say></Response>"))[
        "sid"
    ]
    call = await sandbox.end(sid)
    assert call.said == ["a"] and call.status == "completed"


def test_parse_rejects_doctype_and_entities() -> None:
    """A document with a DOCTYPE or entity declaration is refused with 12100."""
    bomb = (
        '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaa">]><Response><Say>&a;</Say></Response>'
    )
    with pytest.raises(TwimlError) as caught:
        parse_twiml(bomb)
    assert caught.value.twilio_code == 12100


@pytest.mark.parametrize(
    "text", ["", "<Response>", "<Foo/>", "plain words", "<Response><Pause length='x'/></Response>"]
)
def test_parse_rejects_non_twiml(text: str) -> None:
    """Text that is not a TwiML Response is refused with 12100."""
    with pytest.raises(TwimlError):
        parse_twiml(text)


def test_parse_reads_connect_stream_parameters() -> None:
    """Connect/Stream/Parameter and nested Gather prompts parse into typed verbs."""
    verbs = parse_twiml(
        '<?xml version="1.0" encoding="UTF-8"?><Response><Gather numDigits="1">'
        "<Say>Press 1</Say></Gather><Connect action='/after'><Stream url='wss://h/m'>"
        "<Parameter name='call_id' value='a &amp; b'/></Stream></Connect></Response>"
    )
    assert verbs[0] == Gather(num_digits=1, prompt=(Say("Press 1"),))
    connect = verbs[1]
    assert isinstance(connect, Connect) and connect.action == "/after"
    assert connect.stream is not None
    assert connect.stream.url == "wss://h/m"
    assert connect.stream.parameters == {"call_id": "a & b"}
