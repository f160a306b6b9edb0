"""The agent socket (websockets' sans-I/O client on an asyncio.Protocol) over loopback.

The ElevenLabs emulator (real uvicorn) covers the conversation cases; a websockets
server stands in where the emulator cannot act (fragmented frames, a protocol ping
whose answer is awaited, held messages), since Starlette sends neither.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import orjson
import pytest
import uvicorn
from websockets.asyncio.server import ServerConnection, serve
from websockets.uri import parse_uri

from callbridge.adapters.elevenlabs.agent_link import AgentConnector
from callbridge.adapters.elevenlabs.agent_socket import AgentLink, open_agent_socket
from callbridge.errors import ErrorCategory, ProviderError
from callbridge.media.agent_protocol import AgentCodec
from callbridge.sandbox.elevenlabs.emulator import ElevenLabsEmulator
from tests.sandbox_elevenlabs.conftest import AGENT_ID, MOUNT, make_emulator, mounted
from tests.support.server import free_port
from tests.support.server import serve as serve_app
from tests.support.wait import wait_until


@asynccontextmanager
async def open_emulator(
    emulator: ElevenLabsEmulator, agent_id: str = AGENT_ID
) -> AsyncIterator[AgentLink]:
    """Yield a link opened by the product's connector to the emulator on uvicorn."""
    async with serve_app(mounted(emulator)) as base, httpx.AsyncClient() as http:
        connector = AgentConnector(
            api_base_url=base + MOUNT, agent_id=agent_id, api_key=None, http=http
        )
        link = await connector.open()
        try:
            yield link
        finally:
            await link.close()


async def open_local(port: int) -> AgentLink:
    return await open_agent_socket(
        parse_uri(f"ws://127.0.0.1:{port}"), open_timeout=5.0, ssl_context=None
    )


async def test_the_emulators_normal_close_gives_none_and_code_1000() -> None:
    """A conversation the agent ends at its maximum duration (1000) ends recv with None."""
    emulator = make_emulator(max_duration_seconds=0.5)
    async with open_emulator(emulator) as link:
        await link.send(AgentCodec.initiation({}, first_message="Hi."))
        got: list[str | bytes] = []
        while (message := await link.recv()) is not None:
            got.append(message)
        assert got, "the agent said something before it closed"
        assert link.close_code == 1000
        with pytest.raises(ProviderError) as raised:
            await link.send('{"type": "user_activity"}')
        assert raised.value.category is ErrorCategory.NETWORK


async def test_the_emulators_refusal_is_a_provider_error_with_its_close_code() -> None:
    """An unknown agent gets an error event, then close 1008: recv raises with 1008."""
    emulator = make_emulator()
    async with open_emulator(emulator, agent_id="agent_unknown") as link:
        first = await link.recv()
        assert isinstance(first, str) and orjson.loads(first)["type"] == "error"
        with pytest.raises(ProviderError, match="close code 1008") as raised:
            await link.recv()
        assert raised.value.category is ErrorCategory.NETWORK
        assert link.close_code == 1008
        await link.close()  # idempotent after the close
        assert link.close_code == 1008


async def test_a_refused_handshake_is_a_network_provider_error() -> None:
    """The emulator refusing the handshake (HTTP 403) makes open() raise NETWORK."""
    emulator = make_emulator()
    emulator.refuse_connections = True
    async with serve_app(mounted(emulator)) as base, httpx.AsyncClient() as http:
        connector = AgentConnector(
            api_base_url=base + MOUNT, agent_id=AGENT_ID, api_key=None, http=http
        )
        with pytest.raises(ProviderError, match="InvalidStatus") as raised:
            await connector.open()
    assert raised.value.category is ErrorCategory.NETWORK


async def test_a_fragmented_message_arrives_whole_text_and_binary() -> None:
    """Messages sent as several frames come out of recv as one str or one bytes."""

    async def agent(ws: ServerConnection) -> None:
        await ws.send(["hel", "lo ", "agent"])
        await ws.send([b"\x00\x01", b"\x02"])
        await ws.send("after")
        await ws.wait_closed()

    async with serve(agent, "127.0.0.1", 0, compression=None) as server:
        link = await open_local(next(iter(server.sockets)).getsockname()[1])
        try:
            assert await link.recv() == "hello agent"
            assert await link.recv() == b"\x00\x01\x02"
            assert await link.recv() == "after"
        finally:
            await link.close()
        assert link.close_code == 1000


async def test_an_abnormal_close_raises_with_its_code_after_the_queued_messages() -> None:
    """Messages sent before close 4000 are still returned; then recv raises with 4000."""

    async def agent(ws: ServerConnection) -> None:
        await ws.send("one")
        await ws.send("two")
        await ws.close(4000, "gone")

    async with serve(agent, "127.0.0.1", 0, compression=None) as server:
        link = await open_local(next(iter(server.sockets)).getsockname()[1])
        assert await link.recv() == "one"
        assert await link.recv() == "two"
        with pytest.raises(ProviderError, match="close code 4000"):
            await link.recv()
        assert link.close_code == 4000


async def test_cancelling_recv_loses_no_message() -> None:
    """A recv cancelled just as a message lands leaves it for the next recv, in order."""
    sent = asyncio.Event()

    async def agent(ws: ServerConnection) -> None:
        for n in range(20):
            await ws.send(f"m{n}")
        sent.set()
        await ws.wait_closed()

    async with serve(agent, "127.0.0.1", 0, compression=None) as server:
        link = await open_local(next(iter(server.sockets)).getsockname()[1])
        try:
            got: list[str | bytes | None] = []
            while len(got) < 20:
                waiting = asyncio.create_task(link.recv())
                await asyncio.sleep(0)  # it may or may not have taken a message
                waiting.cancel()
                try:
                    got.append(await waiting)
                except asyncio.CancelledError:
                    got.append(await link.recv())
            assert got == [f"m{n}" for n in range(20)]
        finally:
            await link.close()


async def test_the_servers_websocket_ping_is_answered() -> None:
    """A protocol-level ping from the server gets its pong while the app only reads."""
    answered = asyncio.Event()

    async def agent(ws: ServerConnection) -> None:
        pong = await ws.ping(b"are you there")
        await pong
        answered.set()
        await ws.send("after the pong")
        await ws.wait_closed()

    async with serve(agent, "127.0.0.1", 0, compression=None, ping_interval=None) as server:
        link = await open_local(next(iter(server.sockets)).getsockname()[1])
        try:
            assert await link.recv() == "after the pong"
            assert answered.is_set()
        finally:
            await link.close()


async def test_the_emulators_server_pings_are_answered() -> None:
    """Under uvicorn pinging every 50 ms with a 50 ms pong timeout, a conversation
    outlives many pings: the link answers each protocol ping while the app only reads
    (an unanswered one would close it 1011)."""
    emulator = make_emulator(ping_interval=0.2)
    port = free_port()
    config = uvicorn.Config(
        mounted(emulator),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        ws_ping_interval=0.05,
        ws_ping_timeout=0.05,
    )
    server = uvicorn.Server(config)
    running = asyncio.create_task(server.serve())
    try:
        await wait_until(lambda: server.started)
        async with httpx.AsyncClient() as http:
            connector = AgentConnector(
                api_base_url=f"http://127.0.0.1:{port}{MOUNT}",
                agent_id=AGENT_ID,
                api_key=None,
                http=http,
            )
            link = await connector.open()
            try:
                await link.send(AgentCodec.initiation({}, first_message="Hi."))
                record = None
                # The emulator's own (application) pings mark the time: five of them is
                # a second, twenty uvicorn pings.
                while record is None or len(record.pings) < 5:
                    assert await link.recv() is not None
                    record = next(iter(emulator.conversations.values()), None)
                assert link.close_code is None
            finally:
                await link.close()
            assert link.close_code == 1000
    finally:
        server.should_exit = True
        await asyncio.wait_for(running, timeout=15)
