"""A lean ElevenLabs conversation WebSocket server: the agent side of every benchmark call.

It speaks the agent protocol as the emulator does (protocols.md §4.2–4.6,
:mod:`callbridge.sandbox.elevenlabs.agent`): it waits for
``conversation_initiation_client_data``, answers ``conversation_initiation_metadata``
with ``ulaw_8000`` both ways, then talks about half of the time: each response is
an ``agent_response`` followed by 200 ms ``audio`` chunks streamed four times
faster than real time, then the agent listens about as long as it spoke and sends
a ``user_transcript``. About one response in four is cut off by an
``interruption`` (and an ``agent_response_correction``) while it still plays at
the callee. It pings every two seconds. Every chunk carries a stamp
(:mod:`callbridge.bench.wire`) so the callee can time it.

The call is found by the ``call_id`` dynamic variable, which both callbridge and
the baseline relay send.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable

import orjson
import websockets
from websockets.asyncio.server import Server, ServerConnection, serve

from callbridge.bench.probe import CallProbe, Registry
from callbridge.bench.wire import StampedAudio, read_stamp

__all__ = ["AgentPeer", "TalkPlan"]

_CHUNK_MS = 200
_CHUNK_BYTES = 8 * _CHUNK_MS
_SPEED = 4.0
_PING_S = 2.0
_INIT_TIMEOUT_S = 15.0


class TalkPlan:
    """The agent's schedule for one call, drawn from a seeded generator (same load every run)."""

    def __init__(self, seed: int, interrupt_share: float = 0.25) -> None:
        self._rng = random.Random(seed)  # noqa: S311 - a reproducible load, not security
        self._share = interrupt_share

    def response(self) -> tuple[int, int | None]:
        """Chunks in the next response, and after which chunk it is interrupted (or None)."""
        chunks = round(self._rng.uniform(1.5, 3.0) * 1000 / _CHUNK_MS)
        cut = self._rng.randrange(2, chunks) if self._rng.random() < self._share else None
        return chunks, cut

    def listen_s(self) -> float:
        """How long the agent listens before it answers."""
        return self._rng.uniform(1.5, 3.0)


class AgentPeer:
    """Serves the conversation WebSocket on loopback for the calls of one run."""

    def __init__(
        self,
        registry: Registry,
        *,
        clock: Callable[[], int] = time.monotonic_ns,
        first_audio_delay_s: float = 0.0,
    ) -> None:
        self.registry = registry
        #: How long the agent "thinks" (LLM + TTS) before its first words, as a real one does.
        self.first_audio_delay_s = first_audio_delay_s
        self._clock = clock
        self._audio = StampedAudio(_CHUNK_BYTES)
        self._server: Server | None = None
        self.port = 0
        self.conversations = 0
        self.errors: list[str] = []

    async def start(self, port: int = 0) -> None:
        """Listen on ``127.0.0.1:port`` (0: any free port; see :attr:`port`)."""
        self._server = await serve(
            self._serve,
            "127.0.0.1",
            port,
            compression=None,
            ping_interval=None,
            max_size=1 << 20,
            subprotocols=None,
        )
        self.port = int(next(iter(self._server.sockets)).getsockname()[1])

    async def aclose(self) -> None:
        """Stop listening and close every conversation."""
        if self._server is not None:
            self._server.close()
            await asyncio.wait_for(self._server.wait_closed(), 10)
            self._server = None

    @property
    def base_url(self) -> str:
        """What ``ELEVENLABS_API_BASE_URL`` must be for a server to reach this agent."""
        return f"http://127.0.0.1:{self.port}"

    async def _serve(self, ws: ServerConnection) -> None:
        try:
            async with asyncio.timeout(_INIT_TIMEOUT_S):
                first = await ws.recv()
        except (TimeoutError, websockets.ConnectionClosed):
            self.errors.append("no initiation data")
            return
        init = orjson.loads(first)
        variables = init.get("dynamic_variables") or {} if isinstance(init, dict) else {}
        probe = self.registry.by_id.get(str(variables.get("call_id", "")))
        if probe is None:
            self.errors.append("a conversation for an unknown call")
            await ws.close(1008, "unknown call")
            return
        probe.agent_connected = True
        self.conversations += 1
        metadata = {
            "type": "conversation_initiation_metadata",
            "conversation_initiation_metadata_event": {
                "conversation_id": "conv_" + probe.call_id,
                "agent_output_audio_format": "ulaw_8000",
                "user_input_audio_format": "ulaw_8000",
            },
        }
        await ws.send(orjson.dumps(metadata).decode())
        try:
            async with asyncio.TaskGroup() as group:
                talker = group.create_task(self._talk(ws, probe))
                pinger = group.create_task(self._ping(ws))
                await self._listen(ws, probe)
                talker.cancel()
                pinger.cancel()
        except* websockets.ConnectionClosed:
            pass

    async def _listen(self, ws: ServerConnection, probe: CallProbe) -> None:
        """Count and time the caller's audio until the bridge closes the conversation."""
        way = probe.to_agent
        clock = self._clock
        try:
            async for message in ws:
                now = clock()
                data = orjson.loads(message)
                payload = data.get("user_audio_chunk") if type(data) is dict else None
                if type(payload) is not str:
                    continue
                stamp = read_stamp(payload)
                probe.arrived(way, stamp.sent_ns if stamp else None, now)
        except websockets.ConnectionClosed:
            return

    async def _ping(self, ws: ServerConnection) -> None:
        event_id = 1_000_000
        while True:
            await asyncio.sleep(_PING_S)
            event_id += 1
            await ws.send(
                '{"type":"ping","ping_event":{"event_id":' + str(event_id) + ',"ping_ms":null}}'
            )

    async def _talk(self, ws: ServerConnection, probe: CallProbe) -> None:
        plan = TalkPlan(probe.index)
        way = probe.to_callee
        clock = self._clock
        event_id = 0
        sequence = 0
        chunk_s = _CHUNK_MS / 1000
        await asyncio.sleep(self.first_audio_delay_s)
        while True:
            event_id += 1
            chunks, cut = plan.response()
            if event_id == 1:
                cut = -1  # like a real agent: its first message is not talked over by itself
            elif probe.to_agent.received == 0:
                # ... and it says nothing more until it has heard the caller.
                while probe.to_agent.received == 0:  # noqa: ASYNC110 - counted by _listen
                    await asyncio.sleep(0.05)
            await ws.send(
                orjson.dumps(
                    {
                        "type": "agent_response",
                        "agent_response_event": {
                            "agent_response": f"Response {event_id} of the benchmark agent.",
                            "event_id": event_id,
                        },
                    }
                ).decode()
            )
            began = time.monotonic()
            for k in range(chunks):
                now = clock()
                if probe.cutoff_ns is not None and now >= probe.cutoff_ns:
                    return  # quiet until the callee hangs up
                sequence += 1
                payload = self._audio.payload(probe.index, sequence, now)
                await ws.send(
                    '{"type":"audio","audio_event":{"audio_base_64":"'
                    + payload
                    + '","event_id":'
                    + str(event_id)
                    + "}}"
                )
                way.sent += 1
                if k == cut:
                    await self._interrupt(ws, probe, event_id)
                    break
                await asyncio.sleep(chunk_s / _SPEED)
            else:
                await asyncio.sleep(max(0.0, began + chunks * chunk_s - time.monotonic()))
            await asyncio.sleep(plan.listen_s())
            await ws.send(
                orjson.dumps(
                    {
                        "type": "user_transcript",
                        "user_transcription_event": {
                            "user_transcript": "Yes, please tell me more.",
                            "event_id": event_id,
                        },
                    }
                ).decode()
            )

    async def _interrupt(self, ws: ServerConnection, probe: CallProbe, event_id: int) -> None:
        # The callee still hears this response (it was sent faster than real time).
        await asyncio.sleep(0.1)
        probe.interrupt_ns = self._clock()
        probe.interruptions += 1
        await ws.send(
            '{"type":"interruption","interruption_event":{"event_id":' + str(event_id) + "}}"
        )
        await ws.send(
            orjson.dumps(
                {
                    "type": "agent_response_correction",
                    "agent_response_correction_event": {
                        "original_agent_response": f"Response {event_id} of the benchmark agent.",
                        "corrected_agent_response": f"Response {event_id}...",
                        "event_id": event_id,
                    },
                }
            ).decode()
        )
