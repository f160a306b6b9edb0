"""The demo agent's conversation behaviour, driven over a real WebSocket."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from callbridge.media.agent_protocol import AgentCodec
from callbridge.media.ulaw import pcm16_to_ulaw
from callbridge.sandbox.elevenlabs.agent import STAND_IN_TRANSCRIPT
from callbridge.sandbox.elevenlabs.emulator import ElevenLabsEmulator
from tests.sandbox_elevenlabs.conftest import AGENT_ID, MOUNT, make_emulator, mounted, wait_until
from tests.support.server import serve

SILENCE = base64.b64encode(b"\xff" * 1600).decode()  # 200 ms of μ-law silence
_t = np.arange(1600) / 8000
LOUD = base64.b64encode(
    pcm16_to_ulaw((np.sin(2 * np.pi * 300 * _t) * 12000).astype("<i2").tobytes())
).decode()


BEEP = base64.b64encode(
    pcm16_to_ulaw((np.sin(2 * np.pi * 400 * _t[:800]) * 12000).astype("<i2").tobytes())
).decode()  # 100 ms
QUIET_400 = base64.b64encode(b"\xff" * 3200).decode()


class Client:
    """A bare conversation client that keeps every server message."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.messages: list[dict[str, Any]] = []

    async def send(self, message: dict[str, Any] | str) -> None:
        await self.ws.send(message if isinstance(message, str) else orjson.dumps(message).decode())

    async def until(
        self, predicate: Callable[[dict[str, Any]], bool], limit: float = 5.0
    ) -> dict[str, Any]:
        """Receive until a message matches (answering pings on the way)."""
        async with asyncio.timeout(limit):
            while True:
                message: dict[str, Any] = orjson.loads(await self.ws.recv())
                self.messages.append(message)
                if message["type"] == "ping":
                    await self.send(AgentCodec.pong(message["ping_event"]["event_id"]))
                if predicate(message):
                    return message

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["type"] == kind]


def is_type(kind: str) -> Callable[[dict[str, Any]], bool]:
    return lambda m: m["type"] == kind


@asynccontextmanager
async def conversation(emulator: ElevenLabsEmulator, **init: Any) -> AsyncIterator[Client]:
    async with serve(mounted(emulator)) as base:
        url = base.replace("http", "ws") + MOUNT + f"/v1/convai/conversation?agent_id={AGENT_ID}"
        async with connect(url, subprotocols=["convai"]) as ws:  # type: ignore[list-item]
            assert ws.subprotocol == "convai"
            client = Client(ws)
            if init:
                await client.send(AgentCodec.initiation(init))
            yield client


async def test_greeting_uses_dynamic_variables_and_streams_one_event_id() -> None:
    """Metadata comes first; the greeting names the visitor; its audio shares one event_id."""
    emulator = make_emulator()
    async with conversation(emulator, visitor_name="Grace", reason="pricing") as client:
        first = await client.until(lambda m: True)
        assert first["type"] == "conversation_initiation_metadata"
        meta = first["conversation_initiation_metadata_event"]
        assert meta["agent_output_audio_format"] == "ulaw_8000"
        assert meta["conversation_id"].startswith("conv_")
        response = await client.until(is_type("agent_response"))
        text = response["agent_response_event"]["agent_response"]
        assert text.startswith(
            "Hi Grace! This is the callbridge demo agent. You asked about pricing."
        )
        await client.until(lambda m: m["type"] == "audio" and len(client.of_type("audio")) >= 3)
        ids = {m["audio_event"]["event_id"] for m in client.of_type("audio")}
        assert ids == {response["agent_response_event"]["event_id"]}
        chunk = base64.b64decode(client.of_type("audio")[0]["audio_event"]["audio_base_64"])
        assert 800 <= len(chunk) <= 2000  # 100–250 ms of μ-law/8k
        record = emulator.conversations[meta["conversation_id"]]
        assert record.dynamic_variables == {"visitor_name": "Grace", "reason": "pricing"}


async def test_greeting_falls_back_without_initiation_data() -> None:
    """With no initiation data the agent still greets, with fallbacks."""
    async with conversation(make_emulator()) as client:
        response = await client.until(is_type("agent_response"))
        assert response["agent_response_event"]["agent_response"].startswith(
            "Hi there! This is the callbridge demo agent. You asked about a call back."
        )


async def test_speaking_over_the_agent_interrupts_it() -> None:
    """Loud audio while the greeting plays gets an interruption for its event_id;
    silence afterwards gets a user_transcript and a new, higher-id response."""
    emulator = make_emulator(stream_speed=2.0)
    async with conversation(emulator, visitor_name="Ada") as client:
        greeting = await client.until(is_type("agent_response"))
        greeting_id = greeting["agent_response_event"]["event_id"]
        await client.until(is_type("audio"))
        for _ in range(3):
            await client.send({"user_audio_chunk": LOUD})
        interruption = await client.until(is_type("interruption"))
        assert interruption["interruption_event"] == {"event_id": greeting_id}
        correction = await client.until(is_type("agent_response_correction"))
        assert correction["agent_response_correction_event"]["event_id"] == greeting_id
        for _ in range(4):
            await client.send({"user_audio_chunk": SILENCE})
        transcript = await client.until(is_type("user_transcript"))
        assert transcript["user_transcription_event"]["user_transcript"] == (
            f"{STAND_IN_TRANSCRIPT} (0.6 s of speech)"
        )
        answer = await client.until(is_type("agent_response"))
        assert "Ada" in answer["agent_response_event"]["agent_response"]
        assert "0.6 seconds" in answer["agent_response_event"]["agent_response"]
        assert answer["agent_response_event"]["event_id"] > greeting_id
        after = client.messages[client.messages.index(interruption) :]
        assert not [
            m for m in after if m["type"] == "audio" and m["audio_event"]["event_id"] == greeting_id
        ]
        record = next(iter(emulator.conversations.values()))
        assert record.interruptions == [greeting_id]
        assert record.user_audio_bytes == 7 * 1600


async def test_beeps_do_not_interrupt_and_each_utterance_gets_its_own_reply() -> None:
    """100 ms beeps every 500 ms (line noise, Chromium's fake microphone) neither cut the
    greeting off nor join the speech that follows: the interruption comes with the real
    utterance, whose stand-in transcript gives its own length; a second utterance gets a
    different reply, again naming the visitor and how long they spoke."""
    emulator = make_emulator(stream_speed=2.0)
    async with conversation(emulator, visitor_name="Ada") as client:
        greeting = await client.until(is_type("agent_response"))
        greeting_id = greeting["agent_response_event"]["event_id"]
        await client.until(is_type("audio"))
        for _ in range(4):
            await client.send({"user_audio_chunk": BEEP})
            await client.send({"user_audio_chunk": QUIET_400})
        for chunk in (LOUD, LOUD, SILENCE, SILENCE, SILENCE, SILENCE):
            await client.send({"user_audio_chunk": chunk})
        interruption = await client.until(is_type("interruption"))
        assert interruption["interruption_event"] == {"event_id": greeting_id}
        first = await client.until(is_type("user_transcript"))
        assert first["user_transcription_event"]["user_transcript"] == (
            f"{STAND_IN_TRANSCRIPT} (0.4 s of speech)"
        )
        reply = await client.until(
            lambda m: (
                is_type("agent_response")(m) and m["agent_response_event"]["event_id"] > greeting_id
            )
        )
        for chunk in (LOUD, LOUD, LOUD, SILENCE, SILENCE, SILENCE, SILENCE):
            await client.send({"user_audio_chunk": chunk})
        await client.until(lambda m: len(client.of_type("user_transcript")) == 2)
        second = await client.until(lambda m: len(client.of_type("agent_response")) == 3)
        texts = [r["agent_response_event"]["agent_response"] for r in (reply, second)]
        assert texts[0] != texts[1]
        assert "Ada" in texts[0] and "0.4 seconds" in texts[0]
        assert "Ada" in texts[1] and "0.6 seconds" in texts[1]
        record = next(iter(emulator.conversations.values()))
        assert record.interruptions[0] == greeting_id  # then, maybe, the first reply


async def test_turns_are_told_as_sent_and_a_cut_response_again_cut() -> None:
    """The turn listener (the sandbox phone's captions) hears each agent response with its
    event_id and the call_id variable, then the interrupted one again, cut to what was
    heard, then the stand-in transcript."""
    told: list[tuple[str, str, str, int]] = []
    emulator = make_emulator(stream_speed=2.0, on_turn=lambda *turn: told.append(turn))
    async with conversation(emulator, visitor_name="Ada", call_id="call_1") as client:
        greeting = await client.until(is_type("agent_response"))
        greeting_id = greeting["agent_response_event"]["event_id"]
        text = greeting["agent_response_event"]["agent_response"]
        await client.until(is_type("audio"))
        for chunk in (LOUD, LOUD, SILENCE, SILENCE, SILENCE, SILENCE):
            await client.send({"user_audio_chunk": chunk})
        correction = await client.until(is_type("agent_response_correction"))
        transcript = await client.until(is_type("user_transcript"))
    cut = correction["agent_response_correction_event"]["corrected_agent_response"]
    event = transcript["user_transcription_event"]
    assert told[:3] == [
        ("call_1", "agent", text, greeting_id),
        ("call_1", "agent", cut, greeting_id),
        ("call_1", "user", event["user_transcript"], event["event_id"]),
    ]


async def test_pings_increase_and_pongs_are_recorded() -> None:
    """Pings carry increasing ids, the first without ping_ms; pongs are recorded."""
    emulator = make_emulator(ping_interval=0.1)
    async with conversation(emulator) as client:
        await client.until(lambda m: len(client.of_type("ping")) >= 3)
        pings = [m["ping_event"] for m in client.of_type("ping")]
        assert pings[0]["ping_ms"] is None
        assert isinstance(pings[2]["ping_ms"], int)
        ids = [p["event_id"] for p in pings]
        assert ids == sorted(set(ids))
        record = next(iter(emulator.conversations.values()))
        await wait_until(lambda: len(record.pongs) >= 3)
        assert record.pongs[:3] == ids


@pytest.mark.parametrize(
    ("key", "tool", "parameters"),
    [("0", "transfer_to_human", {"reason": "caller asked"}), ("*", "end_call", {})],
)
async def test_keypad_updates_trigger_client_tools(
    key: str, tool: str, parameters: dict[str, str]
) -> None:
    """A keypad contextual update asks for a client tool; its result is recorded."""
    emulator = make_emulator()
    async with conversation(emulator) as client:
        await client.until(is_type("conversation_initiation_metadata"))
        await client.send(AgentCodec.contextual_update(f"Caller pressed keypad key: {key}"))
        call = (await client.until(is_type("client_tool_call")))["client_tool_call"]
        assert call["tool_name"] == tool and call["parameters"] == parameters
        await client.send(AgentCodec.tool_result(call["tool_call_id"], "ok", False))
        record = next(iter(emulator.conversations.values()))
        await wait_until(lambda: record.tool_results)
        assert record.tool_results[0]["tool_call_id"] == call["tool_call_id"]
        assert record.contextual_updates == [f"Caller pressed keypad key: {key}"]
        if tool == "end_call":
            with pytest.raises(ConnectionClosed):
                await client.until(lambda m: False)
            assert client.ws.close_code == 1000
        else:
            said = await client.until(
                lambda m: (
                    m["type"] == "agent_response"
                    and "person" in m["agent_response_event"]["agent_response"]
                )
            )
            assert said


async def test_user_message_gets_a_response() -> None:
    """A typed user_message is answered with an agent_response."""
    emulator = make_emulator()
    async with conversation(emulator) as client:
        await client.until(is_type("conversation_initiation_metadata"))
        await client.send(AgentCodec.user_message("call me at noon"))
        await client.until(
            lambda m: (
                m["type"] == "agent_response"
                and "call me at noon" in m["agent_response_event"]["agent_response"]
            )
        )


async def test_drop_all_closes_live_sessions() -> None:
    """drop_all closes every live conversation with the given code."""
    emulator = make_emulator()
    async with conversation(emulator) as client:
        await client.until(is_type("conversation_initiation_metadata"))
        assert len(emulator.live) == 1
        await emulator.drop_all(1011)
        with pytest.raises(ConnectionClosed):
            await client.until(lambda m: False)
        assert client.ws.close_code == 1011
    await wait_until(lambda: not emulator.live)


async def test_no_user_input_closes_1002() -> None:
    """Without user input for input_timeout, the agent sends an error and closes 1002."""
    emulator = make_emulator(input_timeout=0.5)
    async with conversation(emulator) as client:
        with pytest.raises(ConnectionClosed):
            await client.until(lambda m: False)
        assert client.ws.close_code == 1002
        assert client.of_type("error")[0]["error_event"]["error_type"] == (
            "transport_receive_timeout"
        )


async def test_max_duration_closes_1000() -> None:
    """At max_duration_seconds the conversation ends with 1000."""
    emulator = make_emulator(max_duration_seconds=0.5)
    async with conversation(emulator) as client:
        with pytest.raises(ConnectionClosed):
            await client.until(lambda m: False)
        assert client.ws.close_code == 1000
        assert client.ws.close_reason == "max_duration_exceeded"


async def test_refused_and_delayed_connections() -> None:
    """refuse_connections fails the handshake; connect_delay delays it; both are counted."""
    emulator = make_emulator()
    emulator.refuse_connections = True
    async with serve(mounted(emulator)) as base:
        url = base.replace("http", "ws") + MOUNT + f"/v1/convai/conversation?agent_id={AGENT_ID}"
        with pytest.raises(InvalidStatus):
            async with connect(url):
                pass
        emulator.refuse_connections = False
        emulator.connect_delay = 0.3
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with connect(url) as ws:
            await ws.recv()
        assert loop.time() - started >= 0.3
    assert emulator.connection_attempts == 2


async def test_a_silent_user_is_asked_if_still_there_once_after_the_turn_timeout() -> None:
    """After its words end (by its own clock) and the turn timeout passes in silence, the
    agent asks "Are you still there?", and only once."""
    emulator = make_emulator(stream_speed=8.0)
    emulator.turn_timeout = 0.5
    async with conversation(emulator) as client:
        await client.send(AgentCodec.initiation({}, first_message="Hi."))
        prompt = await client.until(
            lambda m: (
                m["type"] == "agent_response"
                and m["agent_response_event"]["agent_response"] == "Are you still there?"
            )
        )
        with pytest.raises(TimeoutError):  # well past another timeout: no second prompt
            await client.until(lambda m: m["type"] == "agent_response", limit=2.0)
        record = next(iter(emulator.conversations.values()))
        assert record.turn_timeouts == 1 and prompt["agent_response_event"]["event_id"] > 1


async def test_user_activity_keeps_the_turn_timeout_from_running_out() -> None:
    """user_activity every 0.2 s holds off a 0.5 s turn timeout for as long as it comes."""
    emulator = make_emulator(stream_speed=8.0)
    emulator.turn_timeout = 0.5
    async with conversation(emulator) as client:
        await client.send(AgentCodec.initiation({}, first_message="Hi."))
        await client.until(is_type("agent_response"))
        for _ in range(15):
            await client.send(AgentCodec.user_activity())
            with pytest.raises(TimeoutError):  # read (and answer pings) for 0.2 s
                await client.until(lambda m: False, limit=0.2)
        record = next(iter(emulator.conversations.values()))
        assert record.turn_timeouts == 0 and record.responses == ["Hi."]
