"""The agent socket through the environment's HTTP proxy: a CONNECT tunnel, TLS inside it.

A small CONNECT proxy on loopback stands in for an operator's egress proxy; the agent
is a websockets server (plain, or TLS with a certificate from a test CA).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx
import pytest
import trustme
from websockets.asyncio.server import ServerConnection, serve
from websockets.uri import parse_uri

from callbridge.adapters.elevenlabs.agent_link import AgentConnector
from callbridge.adapters.elevenlabs.agent_socket import open_agent_socket
from callbridge.errors import ErrorCategory, ProviderError

_PROXY_SETTINGS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


@dataclass
class ConnectProxy:
    """What the proxy was asked: each CONNECT's target, and its answer to give."""

    url: str = ""
    connects: list[str] = field(default_factory=list)
    refuse_with: int | None = None


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


@asynccontextmanager
async def connect_proxy() -> AsyncIterator[ConnectProxy]:
    """An HTTP proxy on loopback that tunnels CONNECT requests (or refuses them)."""
    proxy = ConnectProxy()

    async def tunnel(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        method, target, _ = head.split(b"\r\n", 1)[0].decode().split(" ", 2)
        assert method == "CONNECT", head
        proxy.connects.append(target)
        if proxy.refuse_with is not None:
            writer.write(f"HTTP/1.1 {proxy.refuse_with} Refused\r\n\r\n".encode())
            writer.close()
            return
        host, port = target.rsplit(":", 1)
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    server = await asyncio.start_server(tunnel, "127.0.0.1", 0)
    proxy.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    async with server:
        yield proxy


async def _echo(ws: ServerConnection) -> None:
    async for message in ws:
        await ws.send(f"echo {message}")


@asynccontextmanager
async def agent(tls: ssl.SSLContext | None = None) -> AsyncIterator[int]:
    """A websockets server answering each message with "echo ..."; yields its port."""
    async with serve(_echo, "127.0.0.1", 0, ssl=tls) as server:
        yield next(iter(server.sockets)).getsockname()[1]


async def _say_hello(url: str, ssl_context: ssl.SSLContext | None = None) -> None:
    """Open the agent socket to ``url``, and have one message answered through it."""
    link = await open_agent_socket(parse_uri(url), open_timeout=5.0, ssl_context=ssl_context)
    await link.send("hello")
    assert await link.recv() == "echo hello"
    await link.close()


@pytest.fixture
def proxy_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in _PROXY_SETTINGS:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    return monkeypatch


async def test_the_agent_socket_goes_through_the_environments_proxy(
    proxy_env: pytest.MonkeyPatch,
) -> None:
    """With HTTP_PROXY set, a ws:// agent is reached through one CONNECT tunnel to its
    host and port, and the conversation works through it."""
    async with connect_proxy() as proxy, agent() as port:
        proxy_env.setenv("HTTP_PROXY", proxy.url)
        await _say_hello(f"ws://127.0.0.1:{port}")
    assert proxy.connects == [f"127.0.0.1:{port}"]


async def test_tls_to_the_agent_runs_inside_the_tunnel(proxy_env: pytest.MonkeyPatch) -> None:
    """With HTTPS_PROXY set, a wss:// agent is reached through the tunnel, and its
    certificate is checked against the agent's name (the proxy sees no plain text)."""
    ca = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_tls)
    client_tls = ssl.create_default_context()
    ca.configure_trust(client_tls)
    async with connect_proxy() as proxy, agent(server_tls) as port:
        proxy_env.setenv("HTTPS_PROXY", proxy.url)
        await _say_hello(f"wss://127.0.0.1:{port}", client_tls)
        with pytest.raises(ssl.SSLCertVerificationError):  # a CA we do not trust
            await _say_hello(f"wss://127.0.0.1:{port}", ssl.create_default_context())
    assert proxy.connects == [f"127.0.0.1:{port}"] * 2


async def test_no_proxy_names_the_hosts_reached_directly(proxy_env: pytest.MonkeyPatch) -> None:
    """A host in NO_PROXY is reached without the proxy."""
    async with connect_proxy() as proxy, agent() as port:
        proxy_env.setenv("HTTP_PROXY", proxy.url)
        proxy_env.setenv("NO_PROXY", "127.0.0.1")
        await _say_hello(f"ws://127.0.0.1:{port}")
    assert proxy.connects == []


async def test_a_proxy_that_refuses_is_a_network_error(proxy_env: pytest.MonkeyPatch) -> None:
    """A proxy answering the CONNECT with 407 makes opening the agent a ProviderError
    (network), as any other failure to reach the agent."""
    async with connect_proxy() as proxy, agent() as port:
        proxy.refuse_with = 407
        proxy_env.setenv("HTTP_PROXY", proxy.url)
        async with httpx.AsyncClient() as http:  # unused: a public agent needs no signed URL
            connector = AgentConnector(
                api_base_url=f"http://127.0.0.1:{port}", agent_id="agent_x", api_key=None, http=http
            )
            with pytest.raises(ProviderError) as raised:
                await connector.open()
    assert raised.value.category is ErrorCategory.NETWORK
    assert proxy.connects == [f"127.0.0.1:{port}"]


@pytest.mark.parametrize(
    "proxy", ["ftp://proxy.invalid:21", "socks5h://127.0.0.1:9"], ids=["malformed", "socks"]
)
async def test_a_proxy_the_socket_cannot_use_is_a_network_error(
    proxy_env: pytest.MonkeyPatch, proxy: str
) -> None:
    """A malformed proxy setting, or a SOCKS proxy, makes opening the agent a network
    ProviderError naming only the kind of failure (a proxy URL may hold a password)."""
    proxy_env.setenv("HTTP_PROXY", proxy.replace("://", "://user:secret@"))
    proxy_env.setenv("ALL_PROXY", proxy.replace("://", "://user:secret@"))
    async with agent() as port, httpx.AsyncClient(trust_env=False) as http:  # unused
        connector = AgentConnector(
            api_base_url=f"http://127.0.0.1:{port}", agent_id="agent_x", api_key=None, http=http
        )
        with pytest.raises(ProviderError) as raised:
            await connector.open()
    assert raised.value.category is ErrorCategory.NETWORK
    assert "secret" not in str(raised.value)
