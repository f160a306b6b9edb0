"""The baseline relay's job with no coroutine per frame: how close Python gets to Node.

Same command line and behaviour as ``baseline_relay.py``. Where ``lean_relay.py``
keeps websockets' asyncio connections (a task per direction, a future and a lock
per message), this one drives websockets' sans-I/O protocol objects
(:class:`~websockets.server.ServerProtocol`, :class:`~websockets.client.ClientProtocol`)
from plain :class:`asyncio.Protocol` callbacks on uvloop, as Node's ``ws`` runs on
libuv callbacks: bytes in, frames parsed, the audio sliced out and framed for the
other side, bytes out, all in one ``data_received`` call. The WebSocket rules (masking,
control frames, the closing handshake) stay websockets'.

Measure it with ``callbridge bench --baseline-script benchmarks/sansio_relay.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any

import orjson
import uvloop
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import OPEN, Protocol
from websockets.server import ServerProtocol
from websockets.uri import WebSocketURI, parse_uri

_PAYLOAD = b'"payload":"'
_MEDIA = b'{"event":"media"'
_TO_AGENT = (b'{"user_audio_chunk":"', b'"}')


class _Side(asyncio.Protocol):
    """One socket spoken through a websockets sans-I/O protocol."""

    ws: Protocol
    transport: asyncio.Transport | None = None

    def flush(self) -> None:
        """Write what the protocol has to send; close the socket when it says so."""
        transport = self.transport
        if transport is None:
            return
        for chunk in self.ws.data_to_send():
            if chunk:
                transport.write(chunk)
            else:
                transport.close()
                return

    def send(self, message: bytes) -> None:
        """Send one text message (UTF-8 bytes) if the connection is open."""
        if self.ws.state is OPEN:
            self.ws.send_text(message)
            self.flush()

    def close(self) -> None:
        """Start the closing handshake (or drop a socket that never opened)."""
        if self.ws.state is OPEN:
            self.ws.send_close()
            self.flush()
        elif self.transport is not None:
            self.transport.close()

    def eof_received(self) -> bool | None:
        self.ws.receive_eof()
        self.flush()
        return None


class CalleeSide(_Side):
    """Twilio's media stream, as the server end."""

    def __init__(self, agent: WebSocketURI) -> None:
        self.ws = ServerProtocol()
        self.agent_uri = agent
        self.agent: AgentSide | None = None
        self.connecting: asyncio.Task[Any] | None = None
        self.stream_sid = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment] # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        self.ws.receive_data(data)
        for event in self.ws.events_received():
            if isinstance(event, Request):
                self.ws.send_response(self.ws.accept(event))
            elif isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                self.message(event.data)
        self.flush()

    def message(self, data: bytes) -> None:
        agent = self.agent
        if agent is not None and data.startswith(_MEDIA):
            at = data.find(_PAYLOAD)
            if at >= 0:
                at += len(_PAYLOAD)
                agent.send_or_keep(_TO_AGENT[0] + data[at : data.index(b'"', at)] + _TO_AGENT[1])
                return
        event: dict[str, Any] = orjson.loads(data)
        kind = event.get("event")
        if kind == "start" and agent is None:
            self.stream_sid = event["start"]["streamSid"].encode()
            params = event["start"].get("customParameters", {})
            self.agent = side = AgentSide(self, self.agent_uri, params)
            loop = asyncio.get_running_loop()
            uri = self.agent_uri
            self.connecting = loop.create_task(
                loop.create_connection(lambda: side, uri.host, uri.port)
            )
            self.connecting.add_done_callback(self._connected)
        elif kind == "media" and agent is not None:
            agent.send_or_keep(orjson.dumps({"user_audio_chunk": event["media"]["payload"]}))
        elif kind == "stop":
            self.close()
            if agent is not None:
                agent.close()

    def _connected(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled() or task.exception() is not None:
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.agent is not None:
            self.agent.close()


class AgentSide(_Side):
    """The agent conversation, as the client end."""

    def __init__(self, callee: CalleeSide, uri: WebSocketURI, params: dict[str, str]) -> None:
        self.ws = ClientProtocol(uri)
        self.callee = callee
        self.params = params
        self.early: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment] # uvloop's is no subclass
        self.ws.send_request(self.ws.connect())
        self.flush()

    def send_or_keep(self, message: bytes) -> None:
        """Send now, or once the handshake is done."""
        if self.ws.state is OPEN:
            self.send(message)
        else:
            self.early.append(message)

    def data_received(self, data: bytes) -> None:
        self.ws.receive_data(data)
        sid = self.callee.stream_sid
        for event in self.ws.events_received():
            if isinstance(event, Response):
                if self.ws.state is not OPEN:
                    self.callee.close()
                    continue
                init = {"type": "conversation_initiation_client_data"}
                self.send(orjson.dumps({**init, "dynamic_variables": self.params}))
                for message in self.early:
                    self.send(message)
                self.early.clear()
            elif isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                data_ = orjson.loads(event.data)
                kind = data_.get("type")
                if kind == "audio":
                    payload = data_["audio_event"]["audio_base_64"].encode()
                    self.callee.send(
                        b'{"event":"media","streamSid":"'
                        + sid
                        + b'","media":{"payload":"'
                        + payload
                        + b'"}}'
                    )
                elif kind == "interruption":
                    self.callee.send(b'{"event":"clear","streamSid":"' + sid + b'"}')
                elif kind == "ping":
                    event_id = data_["ping_event"]["event_id"]
                    self.send(orjson.dumps({"type": "pong", "event_id": event_id}))
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.callee.close()


async def main() -> None:
    """Serve until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8200)
    parser.add_argument("--agent-url", required=True, help="the agent's conversation ws:// URL")
    args = parser.parse_args()
    agent = parse_uri(args.agent_url)
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.cancel)
    server = await loop.create_server(lambda: CalleeSide(agent), args.host, args.port)
    try:
        await stop
    except asyncio.CancelledError:
        pass
    server.close()


if __name__ == "__main__":
    uvloop.run(main())
