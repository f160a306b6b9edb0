"""The emulator's answering machine detection: parameters, verdicts per mode, timing order,
signed callbacks, synchronous AMD, and the new callee steps."""

from __future__ import annotations

import time

import pytest

from callbridge.errors import ValidationFailed
from callbridge.sandbox.callee import Answerer, parse_callee_script
from callbridge.sandbox.twilio.amd import AmdRequest, verdict_for
from tests.sandbox_twilio.conftest import ACCOUNT_SID, Sandbox
from tests.support.wait import wait_until

_FAST = {"MachineDetectionSpeechThreshold": "1000", "MachineDetectionSpeechEndThreshold": "500"}


def test_callee_steps_for_people_machines_and_faxes() -> None:
    """``human`` is the default; ``machine`` greets for 5 s, ``machine=N`` for N; ``fax``;
    ``amd=VALUE`` forces a documented verdict; conflicting or unknown ones are refused."""
    assert parse_callee_script("answer=1").answerer is Answerer.HUMAN
    machine = parse_callee_script("answer=1,machine")
    assert machine.answerer is Answerer.MACHINE and machine.greeting_s == 5.0
    assert parse_callee_script("machine=2.5").greeting_s == 2.5
    assert parse_callee_script("fax").answerer is Answerer.FAX
    assert parse_callee_script("human,amd=unknown").amd == "unknown"
    for bad in ("machine,fax", "human,machine=3", "amd=robot", "machine=-1", "fax=2"):
        with pytest.raises(ValidationFailed):
            parse_callee_script(bad)


@pytest.mark.parametrize(
    ("script", "mode", "verdict", "after"),
    [
        ("human", "Enable", "human", 1.7),
        ("human", "DetectMessageEnd", "human", 1.7),
        ("machine=6", "Enable", "machine_start", 2.4),
        ("machine=6", "DetectMessageEnd", "machine_end_beep", 6.0),
        ("fax", "Enable", "fax", 1.0),
        ("fax", "DetectMessageEnd", "fax", 1.0),
        ("machine=1", "DetectMessageEnd", "human", 2.2),  # too short to sound like a machine
        ("machine=45", "DetectMessageEnd", "unknown", 30.0),  # no decision in time
    ],
)
def test_verdicts_and_their_times_per_mode(
    script: str, mode: str, verdict: str, after: float
) -> None:
    """Enable answers as soon as the answerer is identified; DetectMessageEnd waits for the
    end of a machine's greeting; nothing decided within the timeout is ``unknown``."""
    got = verdict_for(parse_callee_script(script), AmdRequest(mode=mode))
    assert (got.answered_by, got.after_s) == (verdict, pytest.approx(after))


async def test_async_verdict_is_posted_signed_after_the_answer(sandbox: Sandbox) -> None:
    """The TwiML is fetched at the answer, and the verdict is POSTed later, signed, with
    exactly AccountSid, CallSid, AnsweredBy and MachineDetectionDuration."""
    sandbox.emulator.set_callee(None, "answer=0.05,human,hangup=3")
    sandbox.receiver.twiml["/twiml"] = "<Response><Pause length='3'/></Response>"
    sid = (
        await sandbox.create(
            Url=sandbox.base_url + "/twiml",
            MachineDetection="DetectMessageEnd",
            AsyncAmd="true",
            AsyncAmdStatusCallback=sandbox.base_url + "/amd?call_id=c1",
            AsyncAmdStatusCallbackMethod="POST",
            **_FAST,
        )
    )["sid"]
    call = await sandbox.end(sid)
    [twiml_hook] = sandbox.receiver.posted("/twiml")
    assert "AnsweredBy" not in twiml_hook.params  # async: the TwiML does not wait
    [hook] = sandbox.receiver.posted("/amd")
    assert hook.valid and hook.method == "POST" and hook.url.endswith("/amd?call_id=c1")
    assert hook.params == {
        "AccountSid": ACCOUNT_SID,
        "CallSid": sid,
        "AnsweredBy": "human",
        "MachineDetectionDuration": "1000",
    }
    order = [h.path for h in sandbox.receiver.hooks]
    assert order.index("/twiml") < order.index("/amd")
    assert call.answered_by == "human"
    fetched = await sandbox.http.get(
        f"{sandbox.api_base}/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/{sid}.json",
        auth=(ACCOUNT_SID, "sandbox-secret-token"),
    )
    assert fetched.json()["answered_by"] == "human"


async def test_detect_message_end_reports_a_machine_at_its_beep(sandbox: Sandbox) -> None:
    """With DetectMessageEnd a machine's verdict comes when its greeting ends (the beep),
    and what is said after it is recorded apart."""
    sandbox.emulator.set_callee(None, "answer=0.05,machine=1.5,hangup=4")
    sandbox.receiver.twiml["/twiml"] = "<Response><Pause length='4'/></Response>"
    sandbox.receiver.twiml["/amd"] = "<Response/>"
    sid = (
        await sandbox.create(
            Url=sandbox.base_url + "/twiml",
            MachineDetection="DetectMessageEnd",
            AsyncAmd="true",
            AsyncAmdStatusCallback=sandbox.base_url + "/amd",
            **_FAST,
        )
    )["sid"]
    call = sandbox.emulator.calls[sid]
    await sandbox.emulator.wait_for_status(sid, "in-progress", 5)
    await wait_until(lambda: sandbox.receiver.posted("/amd"), 5)
    assert call.beep_at is not None and call.beep_at <= time.monotonic()
    [hook] = sandbox.receiver.posted("/amd")
    assert hook.params["AnsweredBy"] == "machine_end_beep"
    assert hook.params["MachineDetectionDuration"] == "1500"
    await sandbox.emulator.update_call(call, {"Twiml": "<Response><Say>Hi there</Say></Response>"})
    await sandbox.end(sid)
    assert call.said_after_beep == ["Hi there"]


async def test_synchronous_amd_holds_the_twiml_request_until_the_verdict(
    sandbox: Sandbox,
) -> None:
    """Without AsyncAmd the TwiML request waits for the verdict and carries it."""
    sandbox.emulator.set_callee(None, "answer=0.05,fax")
    sandbox.receiver.twiml["/twiml"] = "<Response><Hangup/></Response>"
    sid = (await sandbox.create(Url=sandbox.base_url + "/twiml", MachineDetection="Enable"))["sid"]
    await sandbox.end(sid)
    [hook] = sandbox.receiver.posted("/twiml")
    assert hook.params["AnsweredBy"] == "fax"
    assert hook.params["MachineDetectionDuration"] == "1000"
    assert not sandbox.receiver.posted("/amd")


async def test_async_amd_without_a_callback_logs_21262(sandbox: Sandbox) -> None:
    """AsyncAmd with no callback URL: Twilio's warning 21262, and no verdict posted."""
    sandbox.receiver.twiml["/twiml"] = "<Response><Pause length='1'/></Response>"
    sid = (
        await sandbox.create(
            Url=sandbox.base_url + "/twiml", MachineDetection="Enable", AsyncAmd="true"
        )
    )["sid"]
    call = await sandbox.end(sid)
    assert 21262 in [code for code, _ in call.errors]


async def test_a_bad_machine_detection_value_is_refused(sandbox: Sandbox) -> None:
    """MachineDetection must be Enable or DetectMessageEnd."""
    body = await sandbox.create(
        expect=400, Url=sandbox.base_url + "/twiml", MachineDetection="Always"
    )
    assert body["status"] == 400 and "MachineDetection" in body["message"]


async def test_a_verdict_not_yet_due_dies_with_the_call(sandbox: Sandbox) -> None:
    """A call that ends before AMD decides gets no verdict callback."""
    sandbox.emulator.set_callee(None, "answer=0.05,machine=8,hangup=0.5")
    sandbox.receiver.twiml["/twiml"] = "<Response><Pause length='5'/></Response>"
    sid = (
        await sandbox.create(
            Url=sandbox.base_url + "/twiml",
            MachineDetection="DetectMessageEnd",
            AsyncAmd="true",
            AsyncAmdStatusCallback=sandbox.base_url + "/amd",
        )
    )["sid"]
    await sandbox.end(sid)
    assert not sandbox.receiver.posted("/amd")
