"""How bridged calls end: agent tools, the agent failing, the agent not coming at all."""

from __future__ import annotations

import json
from typing import Any

from callbridge.adapters.twilio.twiml import APOLOGY, TRANSFER
from tests.integration.helpers import OWNER, finished, place, wait_until
from tests.support.app import Sandbox, running_sandbox

#: A quiet callee that presses 1 and would stay on the line for 20 s.
_LISTENER = "answer=0.2,digits=1,hangup=20"
#: A short first message keeps the agent's audio (and these tests) short.
_SHORT = {
    "CALLBRIDGE_SANDBOX_CALLEE": _LISTENER,
    "CALLBRIDGE_FIRST_MESSAGE": "Hi {{visitor_name}}, how can I help?",
}


async def _bridged(sb: Sandbox) -> tuple[dict[str, Any], Any]:
    body = await place(sb, name="Ada")
    sim = sb.twilio.calls[body["call_sid"]]
    await wait_until(lambda: sim.stream is not None and sim.stream.first_media_at, 10)
    return body, sim


def _marks_sent(sim: Any) -> list[str]:
    messages = [json.loads(m) for m in sim.stream.received]
    return [m["mark"]["name"] for m in messages if m["event"] == "mark"]


async def _status(sb: Sandbox, call_id: str) -> Any:
    call = await sb.container.store.get_call(call_id)
    assert call is not None
    return call


async def test_end_call_hangs_up_after_the_last_words() -> None:
    """The agent's end_call lets its audio play out (every mark echoed), then hangs up by REST."""
    async with running_sandbox(_SHORT) as sb:
        body, sim = await _bridged(sb)
        sb.twilio.callee_press(body["call_sid"], "*")
        await finished(sb, body)
        assert sim.end_reason == "rest"
        stream = sim.stream
        assert stream.clears == []
        sent = _marks_sent(sim)
        assert sent and stream.marks_echoed == sent
        assert len(stream.played) > 0
        assert APOLOGY not in sim.said
        record = next(iter(sb.elevenlabs.conversations.values()))
        assert record.responses[0] == "Hi Ada, how can I help?"
        assert [c["tool_name"] for c in record.tool_calls] == ["end_call"]
        assert record.tool_results[0]["is_error"] is False
        call = await _status(sb, body["call_id"])
        assert call.status.value == "completed"
        events = [(e.status, e.detail) for e in await sb.container.store.events(call.id)]
        assert ("tool_call", {"tool": "end_call"}) in events


async def test_transfer_to_human_dials_the_target_and_keeps_the_call() -> None:
    """transfer_to_human says a line, dials TARGET_PHONE_NUMBER; the stream closing ends nothing."""
    async with running_sandbox({**_SHORT, "TARGET_PHONE_NUMBER": OWNER}) as sb:
        body, sim = await _bridged(sb)
        sb.twilio.callee_press(body["call_sid"], "0")
        await finished(sb, body)
        assert sim.dialled == [OWNER]
        assert TRANSFER in sim.said
        assert APOLOGY not in sim.said
        assert sim.end_reason == "twiml-ended"
        dial = sim.documents[-1]
        assert f">{OWNER}</Dial>" in dial and f'callerId="{sb.container.from_number}"' in dial
        record = next(iter(sb.elevenlabs.conversations.values()))
        assert [c["tool_name"] for c in record.tool_calls] == ["transfer_to_human"]
        assert record.tool_results[0]["is_error"] is False
        call = await _status(sb, body["call_id"])
        assert call.status.value == "completed"
        assert "transfer" in [e.status for e in await sb.container.store.events(call.id)]


async def test_transfer_without_a_target_is_an_error_result() -> None:
    """With no TARGET_PHONE_NUMBER the transfer tool answers with an error; the call goes on."""
    async with running_sandbox(_SHORT) as sb:
        body, sim = await _bridged(sb)
        sb.twilio.callee_press(body["call_sid"], "0")
        record = next(iter(sb.elevenlabs.conversations.values()))
        await wait_until(lambda: record.tool_results, 5)
        assert record.tool_results[0]["is_error"] is True
        assert sim.dialled == []
        assert sim.status == "in-progress"
        sb.twilio.callee_hangup(body["call_sid"])
        await finished(sb, body)
        assert (await _status(sb, body["call_id"])).status.value == "completed"


async def _kill_agent(sb: Sandbox) -> tuple[dict[str, Any], Any]:
    body, sim = await _bridged(sb)
    sb.elevenlabs.refuse_connections = True  # the one reconnect will fail too
    await sb.elevenlabs.drop_all()
    await finished(sb, body)
    return body, sim


async def test_a_dead_agent_ends_in_the_apology_and_agent_failed() -> None:
    """The agent drops and one reconnect fails: the callee hears the apology; agent_failed."""
    async with running_sandbox(_SHORT) as sb:
        body, sim = await _kill_agent(sb)
        assert APOLOGY in sim.said
        assert sim.end_reason == "twiml-ended"
        assert sim.status == "completed"
        assert sb.elevenlabs.connection_attempts == 2  # the session and one reconnect
        call = await _status(sb, body["call_id"])
        assert call.status.value == "agent_failed"
        assert call.failure_code == "agent_failed"
        assert call.ended_at is not None
        view = (await sb.http.get(f"/api/call/{body['call_id']}")).json()
        assert view["status"] == "agent_failed"
        assert view["failure"]["code"] == "agent_failed"
        assert "(" not in view["failure"]["message"]


async def test_a_dead_agent_is_transferred_when_configured() -> None:
    """With CALLBRIDGE_AGENT_FAILURE=transfer a dead agent hands the callee to a person."""
    env = {**_SHORT, "TARGET_PHONE_NUMBER": OWNER, "CALLBRIDGE_AGENT_FAILURE": "transfer"}
    async with running_sandbox(env) as sb:
        body, sim = await _kill_agent(sb)
        assert sim.dialled == [OWNER]
        assert TRANSFER in sim.said
        assert APOLOGY not in sim.said
        assert (await _status(sb, body["call_id"])).status.value == "agent_failed"


async def test_an_agent_that_does_not_connect_in_time_is_agent_failed() -> None:
    """An agent not connected within CALLBRIDGE_AGENT_CONNECT_TIMEOUT: apology, agent_failed."""
    env = {**_SHORT, "CALLBRIDGE_AGENT_CONNECT_TIMEOUT": "1"}
    async with running_sandbox(env) as sb:
        sb.elevenlabs.connect_delay = 3.0
        body = await place(sb)
        sim = await finished(sb, body)
        assert APOLOGY in sim.said
        assert sim.stream is not None and not sim.stream.played
        call = await _status(sb, body["call_id"])
        assert call.status.value == "agent_failed"
        assert call.agent_conversation_id is None


async def test_an_agent_failure_frees_the_calls_slot() -> None:
    """After a call ends agent_failed its concurrency slot is free for the next call."""
    async with running_sandbox({**_SHORT, "CALLBRIDGE_MAX_CONCURRENT_CALLS": "1"}) as sb:
        await _kill_agent(sb)
        sb.elevenlabs.refuse_connections = False
        again = await sb.request_call("+12025550143")
        assert again.status_code == 200, again.text


async def test_a_stalled_agent_is_given_up_after_the_stall_timeout() -> None:
    """An agent that goes silent (no audio, no pings) for CALLBRIDGE_AGENT_STALL_TIMEOUT is
    treated as dropped: one reconnect, and when that fails, the apology and agent_failed."""
    env = {**_SHORT, "CALLBRIDGE_AGENT_STALL_TIMEOUT": "2"}
    async with running_sandbox(env) as sb:
        sb.elevenlabs.ping_interval = 3600.0  # the emulated agent never pings: a stall
        body, sim = await _bridged(sb)
        sb.elevenlabs.refuse_connections = True
        await finished(sb, body)
        assert APOLOGY in sim.said
        assert sb.elevenlabs.connection_attempts == 2
        assert (await _status(sb, body["call_id"])).status.value == "agent_failed"
