"""Call lifecycle, status callbacks and signatures of the call simulator."""

from __future__ import annotations

import pytest

from tests.sandbox_twilio.conftest import ACCOUNT_SID, CALLEE, CALLER, Sandbox

ALL_EVENTS = ["initiated", "ringing", "answered", "completed"]


async def test_status_callbacks_in_order_with_sequence_numbers(sandbox: Sandbox) -> None:
    """Every requested event is posted in order, SequenceNumber from 0, durations on completed."""
    sandbox.receiver.twiml["/twiml"] = "<Response><Say>Hi</Say><Pause length='1'/></Response>"
    sid = (await sandbox.create(Url=sandbox.base_url + "/twiml", StatusCallbackEvent=ALL_EVENTS))[
        "sid"
    ]
    await sandbox.end(sid)
    posted = sandbox.receiver.posted("/status")
    assert [h.params["CallStatus"] for h in posted] == [
        "initiated",
        "ringing",
        "in-progress",
        "completed",
    ]
    assert [h.params["SequenceNumber"] for h in posted] == ["0", "1", "2", "3"]
    for hook in posted:
        assert hook.valid and hook.method == "POST"
        assert hook.params["CallSid"] == sid and hook.params["AccountSid"] == ACCOUNT_SID
        assert hook.params["From"] == CALLER and hook.params["To"] == CALLEE
        assert hook.params["Direction"] == "outbound-api"
        assert hook.params["ApiVersion"] == "2010-04-01"
        assert hook.params["CallbackSource"] == "call-progress-events"
        assert hook.params["Timestamp"].endswith("+0000")
    assert posted[-1].params["CallDuration"] == "1"
    assert posted[-1].params["Duration"] == "1"
    assert "CallDuration" not in posted[2].params


async def test_only_completed_is_posted_by_default(sandbox: Sandbox) -> None:
    """Without StatusCallbackEvent only the completed callback is sent, numbered 0."""
    sid = (await sandbox.create(Twiml="<Response><Say>Hi</Say></Response>"))["sid"]
    await sandbox.end(sid)
    posted = sandbox.receiver.posted("/status")
    assert [(h.params["CallStatus"], h.params["SequenceNumber"]) for h in posted] == [
        ("completed", "0")
    ]


async def test_twiml_fetch_carries_voice_params_and_signature(sandbox: Sandbox) -> None:
    """On answer the Url is requested with Method and the voice request parameters, signed."""
    sandbox.receiver.twiml["/twiml"] = "<Response/>"
    for method in ("POST", "GET"):
        sid = (await sandbox.create(Url=sandbox.base_url + "/twiml?a=1", Method=method))["sid"]
        await sandbox.end(sid)
        hook = sandbox.receiver.posted("/twiml")[-1]
        assert hook.method == method and hook.valid
        params = (
            hook.params
            if method == "POST"
            else dict(p.split("=", 1) for p in hook.url.split("?", 1)[1].split("&"))
        )
        assert params["CallStatus"] == "in-progress"
        assert params["CallSid"] == sid
        if method == "POST":
            assert params["Called"] == CALLEE and params["Caller"] == CALLER
        assert "a=1" in hook.url


@pytest.mark.parametrize(
    ("script", "status", "sip"),
    [
        ("busy", "busy", "486"),
        ("no-answer", "no-answer", "487"),
        ("reject", "busy", "603"),
        ("fail", "failed", "404"),
        ("answer=3", "no-answer", "487"),
    ],
)
async def test_unanswered_scripts_end_with_their_status(
    sandbox: Sandbox, script: str, status: str, sip: str
) -> None:
    """busy, no-answer (Timeout), reject and fail end the call unanswered with a SIP code."""
    sandbox.emulator.set_callee(CALLEE, script)
    sid = (await sandbox.create(Twiml="<Response/>", Timeout="1", StatusCallbackEvent=ALL_EVENTS))[
        "sid"
    ]
    call = await sandbox.end(sid)
    assert call.status == status and call.start_time is None
    posted = sandbox.receiver.posted("/status")
    assert [h.params["CallStatus"] for h in posted] == ["initiated", "ringing", status]
    assert posted[-1].params["SipResponseCode"] == sip
    assert posted[-1].params["CallDuration"] == "0"
    assert sandbox.receiver.posted("/twiml") == []


async def test_time_limit_hangs_up(sandbox: Sandbox) -> None:
    """A call that outlives TimeLimit is hung up and completes."""
    sid = (await sandbox.create(Twiml="<Response><Pause length='30'/></Response>", TimeLimit="1"))[
        "sid"
    ]
    call = await sandbox.end(sid, within=5)
    assert call.status == "completed" and call.end_reason == "time-limit"
    assert call.duration == 1


async def test_callee_hangup_script_ends_the_call(sandbox: Sandbox) -> None:
    """hangup=N makes the callee hang up N seconds after answering."""
    sandbox.emulator.set_callee(CALLEE, "answer=0,hangup=0.3")
    sid = (await sandbox.create(Twiml="<Response><Pause length='30'/></Response>"))["sid"]
    call = await sandbox.end(sid, within=5)
    assert call.status == "completed" and call.end_reason == "callee"


async def test_update_with_twiml_replaces_the_running_document(sandbox: Sandbox) -> None:
    """Updating a live call with Twiml stops the current TwiML and runs the new one."""
    sid = (await sandbox.create(Twiml="<Response><Pause length='30'/></Response>"))["sid"]
    await sandbox.emulator.wait_for_status(sid, "in-progress", 5)
    response = await sandbox.http.post(
        f"{sandbox.api_base}/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/{sid}.json",
        data={"Twiml": "<Response><Say>Bye now</Say></Response>"},
        auth=(ACCOUNT_SID, "sandbox-secret-token"),
    )
    assert response.status_code == 200
    call = await sandbox.end(sid, within=5)
    assert call.said == ["Bye now"] and call.end_reason == "twiml-ended"


async def test_failed_twiml_fetch_ends_the_call_with_11200(sandbox: Sandbox) -> None:
    """A TwiML URL that fails is recorded as error 11200 and the call completes."""
    sid = (await sandbox.create(Url="http://127.0.0.1:9/nothing"))["sid"]
    call = await sandbox.end(sid)
    assert call.status == "completed"
    assert call.errors[0][0] == 11200
