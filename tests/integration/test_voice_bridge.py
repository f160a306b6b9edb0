"""Issue 3, "Done when": the callee talks with the agent through the bridge (one shared call)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio

from callbridge.sandbox.elevenlabs.agent import STAND_IN_TRANSCRIPT
from tests.integration.helpers import finished, place, speech_wav, wait_until
from tests.support.app import Sandbox, running_sandbox

pytestmark = pytest.mark.asyncio(loop_scope="module")


@dataclass
class Conversation:
    sb: Sandbox
    answer: dict[str, Any]
    sim: Any
    record: Any
    turns: list[Any]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def talk(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Conversation]:
    # The callee answers, presses 1, talks over the greeting half a second in (0.8 s of
    # speech), and hangs up 4 s after answering.
    speech = speech_wav(tmp_path_factory.mktemp("callee"))
    script = f"answer=0.2,digits=1,speak={speech},hangup=4"
    async with running_sandbox({"CALLBRIDGE_SANDBOX_CALLEE": script}) as sb:
        sb.elevenlabs.ping_interval = 0.4
        answer = await place(sb, name="Ada", reason="the team plan")
        sid = answer["call_sid"]
        sim = sb.twilio.calls[sid]
        await wait_until(lambda: sim.stream is not None and sim.stream.first_media_at, 10)
        sb.twilio.callee_press(sid, "5")
        await sb.twilio.wait_for_end(sid, 15)
        await finished(sb, answer)
        record = next(iter(sb.elevenlabs.conversations.values()))
        await wait_until(lambda: record.ended_at is not None, 5)
        turns = list(await sb.container.store.turns(answer["call_id"]))
        yield Conversation(sb, answer, sim, record, turns)


def _sent(conversation: Conversation) -> list[dict[str, Any]]:
    assert conversation.sim.stream is not None
    return [json.loads(m) for m in conversation.sim.stream.received]


async def test_the_agent_greets_the_callee_by_the_visitors_name(talk: Conversation) -> None:
    """The web chat's name reaches the agent as a dynamic variable and the agent says it."""
    variables = talk.record.dynamic_variables
    assert variables["visitor_name"] == "Ada"
    assert variables["reason"] == "the team plan"
    assert variables["call_id"] == talk.answer["call_id"]
    assert talk.record.responses[0].startswith("Hi Ada!")
    agent_turns = [t for t in talk.turns if t.role == "agent"]
    assert agent_turns[0].text.startswith("Hi Ada!")
    assert talk.sim.stream.played  # the callee heard the agent's audio


async def test_only_opaque_ids_travel_through_twilio(talk: Conversation) -> None:
    """The stream's parameters are the call id and token; the name never goes through Twilio."""
    parameters = talk.sim.stream.custom_parameters
    assert set(parameters) == {"call_id", "token"}
    assert all("Ada" not in document for document in talk.sim.documents)


async def test_talking_over_the_agent_clears_its_audio(talk: Conversation) -> None:
    """The agent's interruption becomes Twilio's clear; the interrupted audio stops there."""
    stream = talk.sim.stream
    assert talk.record.interruptions == [1]
    assert len(stream.clears) >= 1
    # The callee's speech starts 25 frames (0.5 s) into the stream: the clear comes after it.
    speech_started = stream.started_at + 0.5
    assert stream.clears[0] > speech_started
    print(
        f"clear {1000 * (stream.clears[0] - speech_started):.0f} ms after the callee "
        "started talking (energy detection included)"
    )
    sent = _sent(talk)
    clear_at = next(i for i, m in enumerate(sent) if m["event"] == "clear")
    assert any(m["event"] == "media" for m in sent[:clear_at])
    later_marks = [m["mark"]["name"] for m in sent[clear_at:] if m["event"] == "mark"]
    assert not any(name.startswith("a1.") for name in later_marks)
    assert all(m["streamSid"] == stream.stream_sid for m in sent)


async def test_every_message_the_bridge_sends_twilio_is_valid(talk: Conversation) -> None:
    """Twilio drops (31951) a stream message with a missing or extra field, a wrong
    streamSid or an unknown event, and (31931) audio beyond 10 minutes buffered: the
    bridge's media, mark and clear messages draw none of these."""
    stream = talk.sim.stream
    assert stream.rejected == [] and stream.errors == []
    assert stream.discarded_bytes == 0
    assert {m["event"] for m in _sent(talk)} == {"media", "mark", "clear"}


async def test_the_transcript_is_stored_honestly(talk: Conversation) -> None:
    """User and agent turns are stored; the cut-off agent turn keeps what was heard."""
    roles = [t.role for t in talk.turns]
    assert "user" in roles and roles.count("agent") >= 2
    first = next(t for t in talk.turns if t.role == "agent" and t.event_id == 1)
    assert first.interrupted
    assert first.heard_text is not None and len(first.heard_text) < len(first.text)
    last = [t for t in talk.turns if t.role == "agent"][-1]
    assert last.event_id != 1
    if last.interrupted:  # the callee hung up while it played: only the heard part counts
        assert last.heard_text is not None and len(last.heard_text) < len(last.text)
    else:
        assert last.heard_text == last.text
    user = next(t for t in talk.turns if t.role == "user")
    assert user.text == f"{STAND_IN_TRANSCRIPT} (0.8 s of speech)"
    assert user.at >= first.at


async def test_pings_are_answered_with_pongs(talk: Conversation) -> None:
    """Every ping the agent sent before the call ended got a pong with its event id."""
    assert len(talk.record.pings) >= 3
    answered = set(talk.record.pongs)
    assert set(talk.record.pings[:-1]) <= answered
    assert answered <= set(talk.record.pings)


async def test_keypad_presses_reach_the_agent_as_contextual_updates(talk: Conversation) -> None:
    """A key the callee presses mid-call is passed to the agent as a contextual update."""
    assert talk.sim.stream.dtmf_sent == ["5"]
    assert talk.record.contextual_updates == ["Caller pressed keypad key: 5"]


async def test_when_the_callee_hangs_up_the_agent_session_closes(talk: Conversation) -> None:
    """The callee's hang-up closes the agent session normally, from our side."""
    assert talk.sim.end_reason == "callee"
    assert talk.record.closed_by == "client"
    assert talk.record.close_code == 1000
    assert talk.sb.elevenlabs.live == []
    ended = talk.sim.end_time.timestamp()
    print(f"agent closed {1000 * (talk.record.ended_at - ended):.0f} ms after the call ended")
    call = await talk.sb.container.store.get_call(talk.answer["call_id"])
    assert call is not None
    assert call.status.value == "completed"
    assert call.agent_conversation_id == talk.record.conversation_id
