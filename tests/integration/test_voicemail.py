"""Issue 14: answering machines and voicemail, end to end over real HTTP and WebSockets.

Every call asks Twilio's asynchronous AMD; the emulator answers as a person, an
answering machine (a greeting, then a beep) or a fax and posts the verdict, signed,
when Twilio would. The thresholds are lowered (speech 1 s, speech end 0.5 s) so a
person is judged after 1 s and a machine's start after 1 s.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import pytest_asyncio
from rich.console import Console

from callbridge.follow import place_and_follow
from tests.integration.helpers import place, signed_post, twiml, wait_for_status
from tests.support.app import Sandbox, count_rows, running_sandbox
from tests.support.wait import wait_until

pytestmark = pytest.mark.asyncio(loop_scope="module")

FAST = {"CALLBRIDGE_AMD_SPEECH_THRESHOLD": "1000", "CALLBRIDGE_AMD_SPEECH_END_THRESHOLD": "500"}
_ENDED = {"completed", "voicemail", "busy", "no-answer", "canceled", "failed", "agent_failed"}
_numbers = iter(f"+1202555{n:04d}" for n in range(110, 199))


async def call_with(sb: Sandbox, script: str, **fields: Any) -> tuple[dict[str, Any], Any, Any]:
    """Place a call to a fresh number whose callee follows ``script``; wait for its end.

    Returns the API's answer, the emulated call and our stored call.
    """
    number = next(_numbers)
    sb.twilio.set_callee(number, script)
    body = await place(sb, number, **fields)
    sim = await sb.twilio.wait_for_end(body["call_sid"], 30)
    call = await wait_for_status(sb, body["call_id"], _ENDED)
    return body, sim, call


def amd_hooks(sim: Any) -> list[Any]:
    """The asynchronous AMD callbacks the emulator sent."""
    return [w for w in sim.webhooks if w.kind == "amd"]


def conversations_of(sb: Sandbox, call_id: str) -> list[Any]:
    """The agent conversations opened for one call, oldest first."""
    records = [
        r
        for r in sb.elevenlabs.conversations.values()
        if r.dynamic_variables.get("call_id") == call_id
    ]
    return sorted(records, key=lambda r: r.started_at)


async def all_closed(sb: Sandbox) -> bool:
    """Every agent conversation the emulator saw is over."""
    return not sb.elevenlabs.live


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def message_sb() -> AsyncIterator[Sandbox]:
    """CALLBRIDGE_VOICEMAIL=message (the default), consent on (the default)."""
    async with running_sandbox(FAST) as sb:
        yield sb


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def hangup_sb() -> AsyncIterator[Sandbox]:
    """CALLBRIDGE_VOICEMAIL=hangup, consent off: the agent is on from the answer."""
    async with running_sandbox(
        {**FAST, "CALLBRIDGE_VOICEMAIL": "hangup", "CALLBRIDGE_CONSENT": "off"}
    ) as sb:
        yield sb


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def direct_sb() -> AsyncIterator[Sandbox]:
    """CALLBRIDGE_VOICEMAIL=message, consent off: the agent is on from the answer."""
    async with running_sandbox({**FAST, "CALLBRIDGE_CONSENT": "off"}) as sb:
        yield sb


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def agent_sb() -> AsyncIterator[Sandbox]:
    """CALLBRIDGE_VOICEMAIL=agent, consent off."""
    async with running_sandbox(
        {**FAST, "CALLBRIDGE_VOICEMAIL": "agent", "CALLBRIDGE_CONSENT": "off"}
    ) as sb:
        yield sb


# ----- what calls.create asks for ---------------------------------------------------


async def test_create_asks_for_async_amd_with_a_signed_callback(message_sb: Sandbox) -> None:
    """With a message to leave, the call asks DetectMessageEnd, AsyncAmd and a POSTed
    callback to /api/call/amd naming our call id, with the status callbacks' retry
    overrides; a knob left at Twilio's default
    (the timeout) is not sent, a changed one is."""
    body, sim, _ = await call_with(message_sb, "answer=0.1,human,hangup=1.5")
    amd = sim.amd
    assert amd.mode == "DetectMessageEnd"
    assert amd.asynchronous is True
    base = message_sb.container.public_base_url
    url, _, overrides = amd.callback.partition("#")
    assert url == f"{base}/api/call/amd?call_id={body['call_id']}"
    assert "rc=" in overrides  # retried like the status callbacks
    assert amd.callback_method == "POST"
    assert amd.speech_threshold_s == 1.0 and amd.speech_end_threshold_s == 0.5
    assert amd.timeout_s == 30.0  # Twilio's default: ours was left alone
    assert (0, "") not in sim.errors


async def test_hangup_mode_asks_for_the_quicker_verdict(hangup_sb: Sandbox) -> None:
    """With nothing to leave, the call asks MachineDetection=Enable (no wait for the beep)."""
    _, sim, _ = await call_with(hangup_sb, "answer=0.1,human,hangup=1.5")
    assert sim.amd.mode == "Enable" and sim.amd.asynchronous is True


# ----- a person -----------------------------------------------------------------------


async def test_a_person_changes_nothing(message_sb: Sandbox) -> None:
    """``human``: the signed verdict is recorded with its detection time, the person
    goes on to the agent, and the call ends completed with no voicemail."""
    body, sim, call = await call_with(message_sb, "answer=0.1,human,digits=1,hangup=3")
    [hook] = amd_hooks(sim)
    assert hook.status_code == 204
    assert set(hook.params) == {"AccountSid", "CallSid", "AnsweredBy", "MachineDetectionDuration"}
    assert hook.params["AnsweredBy"] == "human"
    assert call.status.value == "completed"
    assert call.answered_by == "human"
    assert call.amd_duration_ms == 1000
    assert call.message_left is None
    assert sim.streams  # the agent was connected
    view = (await message_sb.http.get(f"/api/call/{body['call_id']}")).json()
    assert view["status"] == "completed" and view["message_left"] is None


async def test_unknown_is_treated_as_a_person(message_sb: Sandbox) -> None:
    """``unknown`` (AMD could not tell): nobody is hung up on; the call completes."""
    _, sim, call = await call_with(message_sb, "answer=0.1,amd=unknown,digits=1,hangup=3")
    assert [h.params["AnsweredBy"] for h in amd_hooks(sim)] == ["unknown"]
    assert call.status.value == "completed"
    assert call.answered_by == "unknown"
    assert sim.streams and sim.end_reason == "callee"


# ----- a machine, message mode -----------------------------------------------------------


@pytest.mark.parametrize(
    "script, verdict",
    [
        ("answer=0.1,machine=2", "machine_end_beep"),
        ("answer=0.1,machine=2,amd=machine_end_silence", "machine_end_silence"),
        ("answer=0.1,machine=2,amd=machine_end_other", "machine_end_other"),
    ],
)
async def test_a_machine_gets_the_message_after_the_beep(
    message_sb: Sandbox, script: str, verdict: str
) -> None:
    """A machine's greeting ends (beep, silence, other): with consent on, the prompt it
    heard is cut off, the message (who, why, how to reach us) is said only after the
    beep, and the call ends ``voicemail`` with a message left; no agent is opened."""
    body, sim, call = await call_with(message_sb, script, reason="the team plan")
    assert [h.params["AnsweredBy"] for h in amd_hooks(sim)] == [verdict]
    assert call.status.value == "voicemail"
    assert call.answered_by == verdict
    assert call.message_left is True
    [message] = sim.said_after_beep
    assert "our website" in message and "about the team plan" in message
    assert message not in sim.said[: len(sim.said) - 1]  # never said before the beep
    assert any("press 1" in text for text in sim.said)  # consent was asked at once
    assert not sim.streams
    assert not conversations_of(message_sb, body["call_id"])
    view = (await message_sb.http.get(f"/api/call/{body['call_id']}")).json()
    assert view["status"] == "voicemail" and view["message_left"] is True


async def test_a_machine_that_hangs_up_mid_message_has_none_left(message_sb: Sandbox) -> None:
    """The message counts as left only if it was said to its end: a machine that cuts
    the recording short ends ``voicemail`` with no message left."""
    message_sb.twilio._say_rate = 0.05  # the message takes a few seconds to say
    try:
        _, sim, call = await call_with(message_sb, "answer=0.1,machine=2,hangup=3")
    finally:
        message_sb.twilio._say_rate = 0.0
    assert sim.said_after_beep  # it started after the beep
    assert call.status.value == "voicemail"
    assert call.message_left is False


async def test_a_machine_start_without_an_end_is_hung_up(message_sb: Sandbox) -> None:
    """``machine_start`` (no end will follow) in message mode: hung up, nothing said after."""
    _, sim, call = await call_with(message_sb, "answer=0.1,machine=3,amd=machine_start")
    assert call.status.value == "voicemail"
    assert call.message_left is False
    assert sim.said_after_beep == []
    assert sim.end_reason == "rest"


async def test_a_fax_is_hung_up_and_reported(message_sb: Sandbox) -> None:
    """``fax``: hung up at once; the visitor is told a fax answered (failed/fax)."""
    body, sim, call = await call_with(message_sb, "answer=0.1,fax")
    assert [h.params["AnsweredBy"] for h in amd_hooks(sim)] == ["fax"]
    assert sim.end_reason == "rest"
    assert call.status.value == "failed" and call.failure_code == "fax"
    view = (await message_sb.http.get(f"/api/call/{body['call_id']}")).json()
    assert view["failure"]["code"] == "fax" and "fax" in view["failure"]["message"]


async def test_the_page_stream_says_voicemail(message_sb: Sandbox) -> None:
    """The page's event stream ends with ``voicemail`` and whether a message was left."""
    number = next(_numbers)
    message_sb.twilio.set_callee(number, "answer=0.1,machine=2")
    body = await place(message_sb, number)
    events: list[dict[str, Any]] = []
    async with message_sb.http.stream("GET", f"/api/call/{body['call_id']}/events") as sse:
        async for line in sse.aiter_lines():
            if line.startswith("data: "):
                events.append(orjson.loads(line[6:]))
    assert events[-1]["status"] == "voicemail"
    assert events[-1]["message_left"] is True


# ----- a machine with the agent already on (consent off) ---------------------------------


async def test_a_machine_after_the_stream_started_closes_the_agent(direct_sb: Sandbox) -> None:
    """Consent off: the agent greets the machine from the answer; at the beep the call is
    redirected, the stream and the agent conversation end, and the message follows."""
    body, sim, call = await call_with(direct_sb, "answer=0.1,machine=2")
    [stream] = sim.streams
    assert stream.started_at is not None and sim.beep_at is not None
    assert stream.started_at < sim.beep_at  # the verdict came after the stream started
    assert call.status.value == "voicemail" and call.message_left is True
    [record] = conversations_of(direct_sb, body["call_id"])
    assert record.ended_at is not None and record.closed_by != "server"
    assert sim.end_time is not None
    assert record.ended_at < sim.end_time.timestamp()  # closed before the message was over
    assert await all_closed(direct_sb)


async def test_a_verdict_before_the_stream_closes_the_prewarmed_agent() -> None:
    """A verdict that comes while the greeting is still being said (before the stream):
    the pre-warmed agent session is closed, no stream is ever opened."""
    env = {**FAST, "CALLBRIDGE_CONSENT": "off"}
    async with running_sandbox(env, emulator_options={"_say_rate": 0.03}) as sb:
        _, sim, call = await call_with(sb, "answer=0.1,machine=1.5")
        assert call.status.value == "voicemail" and call.message_left is True
        assert not sim.streams
        await wait_until(lambda: all_closed(sb), 5)
        for record in sb.elevenlabs.conversations.values():
            assert record.user_audio_bytes == 0  # it never heard the machine


async def test_hangup_mode_ends_a_machine_call_and_its_agent(hangup_sb: Sandbox) -> None:
    """Hangup mode: ``machine_start`` after 1 s ends the call before the greeting is over,
    and the agent that was greeting it is closed."""
    _, sim, call = await call_with(hangup_sb, "answer=0.1,machine=4")
    assert [h.params["AnsweredBy"] for h in amd_hooks(sim)] == ["machine_start"]
    assert sim.end_reason == "rest"
    assert sim.beep_at is None  # hung up during the greeting
    assert call.status.value == "voicemail" and call.message_left is False
    assert call.answered_by == "machine_start"
    await wait_until(lambda: all_closed(hangup_sb), 5)


# ----- agent mode ------------------------------------------------------------------------


async def test_agent_mode_leaves_the_message_with_a_voicemail_first_message(
    agent_sb: Sandbox,
) -> None:
    """Agent mode: at the beep the greeting agent is closed and a second stream opens an
    agent whose first message is the voicemail; it is heard after the beep, the machine's
    audio goes to no agent, and the call ends ``voicemail`` with a message left."""
    body, sim, call = await call_with(agent_sb, "answer=0.1,machine=2", reason="pricing")
    assert call.status.value == "voicemail" and call.message_left is True
    assert len(sim.streams) == 2
    assert len(sim.heard_after_beep) > 8000  # over a second of the agent's message
    greeter, voicemail = conversations_of(agent_sb, body["call_id"])
    assert greeter.ended_at is not None and greeter.ended_at <= voicemail.started_at
    first = voicemail.overrides["agent"]["first_message"]
    assert "about pricing" in first
    assert voicemail.user_audio_bytes == 0
    await wait_until(lambda: all_closed(agent_sb), 5)


async def test_agent_mode_leaves_our_message_when_no_agent_can_be_had(
    agent_sb: Sandbox,
) -> None:
    """Agent mode, but the agent cannot be reached for the voicemail: the machine still
    gets a message (ours, after the beep), and the call ends ``voicemail``, not failed."""
    number = next(_numbers)
    agent_sb.twilio.set_callee(number, "answer=0.1,machine=2")
    body = await place(agent_sb, number)
    try:
        await wait_until(lambda: conversations_of(agent_sb, body["call_id"]), 10)
        agent_sb.elevenlabs.refuse_connections = True  # from the greeting on: no agent
        sim = await agent_sb.twilio.wait_for_end(body["call_sid"], 30)
    finally:
        agent_sb.elevenlabs.refuse_connections = False
    call = await wait_for_status(agent_sb, body["call_id"], _ENDED)
    assert call.status.value == "voicemail" and call.message_left is True
    [message] = sim.said_after_beep
    assert "Someone asked us to call" in message
    assert len(conversations_of(agent_sb, body["call_id"])) == 1


# ----- the doors -------------------------------------------------------------------------


async def test_a_replayed_verdict_changes_nothing_and_a_forged_one_is_refused(
    message_sb: Sandbox,
) -> None:
    """The AMD door checks the signature (a forged verdict writes nothing) and a replay
    of a verdict is recorded once."""
    body, sim, call = await call_with(message_sb, "answer=0.1,human,digits=1,hangup=2")
    events = await count_rows(message_sb, "call_events", f"WHERE call_id = '{body['call_id']}'")
    path = f"/api/call/amd?call_id={body['call_id']}"
    params = dict(amd_hooks(sim)[0].params)
    forged = await signed_post(message_sb, path, params | {"AnsweredBy": "fax"}, forged="x")
    assert forged.status_code == 403
    replay = await signed_post(message_sb, path, params)
    assert replay.status_code == 204
    again = await message_sb.container.store.get_call(body["call_id"])
    assert again.answered_by == "human"
    where = f"WHERE call_id = '{body['call_id']}'"
    assert await count_rows(message_sb, "call_events", where) == events


async def test_a_verdict_that_beats_the_twiml_request_keeps_the_agent_away(
    message_sb: Sandbox,
) -> None:
    """A machine verdict recorded before Twilio asks for the call's TwiML: the TwiML is
    the message, never the consent prompt or the agent."""
    number = next(_numbers)
    message_sb.twilio.set_callee(number, "answer=20")
    body = await place(message_sb, number)
    sim = message_sb.twilio.calls[body["call_sid"]]
    await wait_until(lambda: sim.status == "ringing")
    verdict = {
        "AccountSid": sim.account_sid,
        "CallSid": sim.sid,
        "AnsweredBy": "machine_end_beep",
        "MachineDetectionDuration": "4100",
    }
    answer = await signed_post(message_sb, f"/api/call/amd?call_id={body['call_id']}", verdict)
    assert answer.status_code == 204
    twiml_params = {"CallSid": sim.sid, "AccountSid": sim.account_sid, "CallStatus": "in-progress"}
    response = await signed_post(message_sb, "/api/call/twiml", twiml_params)
    document = twiml(response.text)
    assert [el.tag for el in document] == ["Say", "Redirect"]
    assert "voicemail_left" in (document[1].text or "")
    message_sb.twilio.callee_hangup(sim.sid)
    await message_sb.twilio.wait_for_end(sim.sid, 10)


# ----- everyone sees it ------------------------------------------------------------------


async def test_metrics_count_outcomes_by_answered_by(message_sb: Sandbox) -> None:
    """/metrics counts finished calls by verdict and status, and the detection time."""
    await call_with(message_sb, "answer=0.1,machine=2")
    text = (await message_sb.http.get("/metrics")).text
    assert 'callbridge_amd_outcomes_total{answered_by="machine_end_beep",status="voicemail"}' in (
        text
    )
    assert 'callbridge_amd_detection_seconds_count{answered_by="machine_end_beep"}' in text


async def test_the_cli_prints_voicemail(message_sb: Sandbox) -> None:
    """``callbridge call`` follows a call a machine took and says a message was left."""
    number = next(_numbers)
    message_sb.twilio.set_callee(number, "answer=0.1,machine=2")
    out = io.StringIO()
    console = Console(file=out, width=120, color_system=None)
    code = await asyncio.wait_for(
        place_and_follow(message_sb.base_url, number, None, None, console), 30
    )
    printed = out.getvalue()
    assert "voicemail" in printed
    assert "went to voicemail; we left a message" in printed
    assert code == 0


async def test_the_reconciler_takes_a_lost_verdict_from_twilios_call_record(
    hangup_sb: Sandbox,
) -> None:
    """A call left unfinished whose AMD verdict never reached us is settled as ``voicemail``
    from Twilio's own ``answered_by``."""
    from datetime import timedelta

    from sqlalchemy import text

    body, _, _ = await call_with(hangup_sb, "answer=0.1,machine=4")
    async with hangup_sb.container.store.engine.begin() as conn:
        await conn.execute(
            text("UPDATE calls SET status = 'in-progress', answered_by = NULL WHERE id = :id"),
            {"id": body["call_id"]},
        )
    reconciler = hangup_sb.container.jobs.reconciler
    reconciler._grace = timedelta(seconds=-60)  # everything counts as stale
    assert await reconciler.run_once() >= 1
    settled = await hangup_sb.container.store.get_call(body["call_id"])
    assert settled.status.value == "voicemail"
    assert settled.answered_by == "machine_start"


async def test_owner_mode_leaves_our_message_even_in_agent_mode() -> None:
    """Owner mode has no agent: a machine gets our message after the beep (the person
    being dialled is dropped), whatever CALLBRIDGE_VOICEMAIL says beyond hangup."""
    env = {
        **FAST,
        "CALLBRIDGE_MODE": "owner",
        "TARGET_PHONE_NUMBER": "+12025550187",
        "CALLBRIDGE_VOICEMAIL": "agent",
    }
    async with running_sandbox(env, emulator_options={"_dial_seconds": 10.0}) as sb:
        body, sim, call = await call_with(sb, "answer=0.1,machine=2")
        assert sim.dialled == ["+12025550187"]
        assert call.status.value == "voicemail" and call.message_left is True
        assert len(sim.said_after_beep) == 1
        assert not conversations_of(sb, body["call_id"])
