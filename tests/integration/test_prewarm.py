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
        print(f"prewarm={prewarm}: agent opened {1000 * (opened - stream.started_at):+.0f} ms "
              f"from start; first agent audio {first_audio_ms:.0f} ms after start")
        if prewarm:
            assert opened < stream.started_at
        else:
            assert opened > stream.started_at
        assert len(sb.elevenlabs.conversations) == 1
        await finished(sb, body)
        assert record.dynamic_variables["visitor_name"] == "Ada"
        assert record.closed_by == "client"
