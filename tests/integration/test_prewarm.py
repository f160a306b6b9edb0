"""Pre-warming: the agent session is opened while the callee hears the greeting."""

from __future__ import annotations

import time

import pytest

from tests.integration.helpers import finished, place, wait_until
from tests.support.app import running_sandbox

#: No consent gate: the greeting plays (for real, about 2 s) right before the stream.
_GREETED = {"CALLBRIDGE_CONSENT": "off", "CALLBRIDGE_SANDBOX_CALLEE": "answer=0.2,hangup=3.5"}


@pytest.mark.parametrize("prewarm", [True, False])
async def test_the_agent_is_opened_before_the_stream_only_when_prewarming(prewarm: bool) -> None:
    """With pre-warming the agent session exists before the stream's start; without, after."""
    env = {**_GREETED, "CALLBRIDGE_PREWARM": str(prewarm).lower()}
    async with running_sandbox(env, emulator_options={"_say_rate": 0.01}) as sb:
        wall_minus_mono = time.time() - time.monotonic()
        body = await place(sb, name="Ada")
        sim = sb.twilio.calls[body["call_sid"]]
        await wait_until(lambda: sim.stream is not None and sim.stream.first_media_at, 10)
        stream = sim.stream
        record = next(iter(sb.elevenlabs.conversations.values()))
        opened = record.started_at - wall_minus_mono  # on the monotonic clock
        assert stream.started_at is not None and stream.first_media_at is not None
        first_audio_ms = 1000 * (stream.first_media_at - stream.started_at)
        print(
            f"prewarm={prewarm}: agent opened {1000 * (opened - stream.started_at):+.0f} ms "
            f"from start; first agent audio {first_audio_ms:.0f} ms after start"
        )
        if prewarm:
            assert opened < stream.started_at
        else:
            assert opened > stream.started_at
        assert len(sb.elevenlabs.conversations) == 1
        await finished(sb, body)
        assert record.dynamic_variables["visitor_name"] == "Ada"
        assert record.closed_by == "client"


async def test_a_held_agent_does_not_time_out_before_the_callee_heard_it() -> None:
    """The pre-warmed agent says "Hello." (under a second) at once, then waits through a
    four-second greeting. With a two-second turn timeout it would ask "Are you still
    there?" during the hold, and the callee would hear that right after "Hello.". The
    held session's user_activity keeps it from timing out; the callee then speaks, so
    no later silence can time out either. (Without user_activity: one timeout.)"""
    env = {
        "CALLBRIDGE_CONSENT": "off",
        "CALLBRIDGE_PREWARM": "true",
        "CALLBRIDGE_FIRST_MESSAGE": "Hello.",
        "CALLBRIDGE_GREETING": "x" * 100,  # 100 characters at 0.04 s: four seconds
        "CALLBRIDGE_SANDBOX_CALLEE": "answer=0.2,speak,hangup=7",
    }
    async with running_sandbox(env, emulator_options={"_say_rate": 0.04}) as sb:
        sb.elevenlabs.turn_timeout = 2.0
        body = await place(sb, name="Ada")
        await finished(sb, body)
        record = next(iter(sb.elevenlabs.conversations.values()))
        assert record.responses[0] == "Hello."
        assert any(m.get("type") == "user_activity" for m in record.messages)
        assert record.turn_timeouts == 0, record.responses
