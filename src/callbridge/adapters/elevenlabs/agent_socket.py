"""The agent conversation socket: websockets' sans-I/O client driven from asyncio callbacks.

:class:`websockets.client.ClientProtocol` does the WebSocket work (the opening
handshake, framing and masking, UTF-8 checks, answering pings, the closing
handshake); :class:`_AgentProtocol` only moves its bytes to and from an asyncio
transport. Compared with websockets' asyncio ``ClientConnection`` there is no
coroutine, future or lock per message: a received frame is parsed inside
``data_received`` and a sent one is framed and written inside ``send``. Issue 12
measured the asyncio layer at ~31 % of the loop's busy time in one process (py-spy),
and this socket brought callbridge's CPU per call-minute from 1.09-1.18x the baseline
relay's to 1.01x (``callbridge bench``, 100 calls, two rounds each).

As websockets' ``connect`` (and httpx, for the REST clients), the socket follows the
environment's proxy settings: ``HTTPS_PROXY`` (``wss://``) or ``HTTP_PROXY``, ``ALL_PROXY``,
and ``NO_PROXY`` for the hosts reached directly, read by websockets' own
:func:`websockets.proxy.get_proxy`. An ``http://`` or ``https://`` proxy is asked for a
``CONNECT`` tunnel (websockets' ``connect_http_proxy``), and TLS to the agent runs inside
it; a SOCKS proxy is refused with a clear error (websockets needs ``python-socks`` for it).

Semantics kept from the asyncio connection: at most :data:`MAX_QUEUE` received
messages are held before reading pauses (TCP back-pressure on the agent), writes
wait while the transport's buffer is above :data:`WRITE_LIMIT`, a normal close is
one where both close frames carry 1000 or 1001 (``ConnectionClosedOK``), and
``close`` waits at most :data:`CLOSE_TIMEOUT` for the peer before dropping the socket.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any, cast

from websockets.asyncio.client import connect_http_proxy
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosedOK
from websockets.frames import Frame, Opcode
from websockets.http11 import USER_AGENT, Response
from websockets.protocol import CLOSED, OPEN
from websockets.proxy import Proxy, get_proxy, parse_proxy
from websockets.uri import WebSocketURI

from callbridge.errors import ErrorCategory, ProviderError

__all__ = ["CLOSE_TIMEOUT", "MAX_AGENT_MESSAGE", "AgentLink", "open_agent_socket"]

#: Agent messages are small JSON; audio chunks are well under this.
MAX_AGENT_MESSAGE = 1024 * 1024
#: Received messages held before reading pauses, and the level at which it resumes
#: (websockets' asyncio defaults, ``max_queue=16``).
MAX_QUEUE = 16
_QUEUE_LOW = MAX_QUEUE // 4
#: The transport's write buffer level above which ``send`` waits (websockets' default).
WRITE_LIMIT = 32 * 1024
#: Seconds the closing handshake may take before the socket is dropped (websockets' default).
CLOSE_TIMEOUT = 10.0


def _agent_error(message: str, category: ErrorCategory) -> ProviderError:
    return ProviderError(message, provider="elevenlabs", category=category)


class _AgentProtocol(asyncio.Protocol):
    """Bytes between an asyncio transport and a websockets ``ClientProtocol``."""

    def __init__(self, uri: WebSocketURI, loop: asyncio.AbstractEventLoop) -> None:
        self.ws = ClientProtocol(uri, max_size=MAX_AGENT_MESSAGE)  # no extensions: no compression
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = loop.create_future()
        self.lost: asyncio.Future[None] = loop.create_future()
        # A list, not a deque: a deque's first block alone is 528 bytes, held for the
        # whole call, and this queue holds a few messages at most (popping the head of
        # a list of ~16 costs nothing worth a deque).
        self.messages: list[str | bytes] = []
        self.recv_waiter: asyncio.Future[None] | None = None
        self.drain_waiter: asyncio.Future[None] | None = None
        self.write_paused = False
        self.read_paused = False
        self.fragments: list[bytes] = []
        self.fragment_opcode = Opcode.TEXT
        self.close_timer: asyncio.TimerHandle | None = None

    # --- asyncio callbacks ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        self.transport.set_write_buffer_limits(high=WRITE_LIMIT)
        request = self.ws.connect()
        request.headers["User-Agent"] = USER_AGENT  # as websockets' connect() sends it
        self.ws.send_request(request)
        self.flush()

    def data_received(self, data: bytes) -> None:
        self.ws.receive_data(data)
        self.handle_events()
        self.flush()
        if self.ws.close_expected() and self.close_timer is None and self.transport is not None:
            # The peer should now close TCP; drop the socket if it never does.
            self.close_timer = self.loop.call_later(CLOSE_TIMEOUT, self.transport.abort)

    def eof_received(self) -> bool | None:
        self.ws.receive_eof()
        self.handle_events()
        self.flush()
        return None  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.ws.receive_eof()  # idempotent; the state is CLOSED from here on
        self.handle_events()
        self.transport = None
        if self.close_timer is not None:
            self.close_timer.cancel()
        if not self.opened.done():
            failure = self.ws.handshake_exc or exc or ConnectionError("connection lost")
            self.opened.set_exception(failure)
            self.opened.exception()  # retrieved: open() may have given up already
        self.lost.set_result(None)
        self.wake_reader()
        self.resume_writing()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        waiter, self.drain_waiter = self.drain_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # --- the WebSocket ----------------------------------------------------------------

    def handle_events(self) -> None:
        """Settle the handshake and queue complete messages (fragments assembled)."""
        for event in self.ws.events_received():
            if isinstance(event, Response):
                if self.opened.done():
                    continue
                if self.ws.handshake_exc is not None:
                    self.opened.set_exception(self.ws.handshake_exc)
                    self.opened.exception()
                    if self.transport is not None:
                        self.transport.close()
                else:
                    self.opened.set_result(None)
                    # websockets' parser keeps the handshake's response for the life of
                    # the connection, and nothing reads its headers once the socket is
                    # open (~1 KB a call with the emulator's few; issue 12's memory).
                    event.headers.clear()
            elif isinstance(event, Frame):
                self.frame(event)
        if len(self.messages) > MAX_QUEUE and not self.read_paused and self.transport:
            self.read_paused = True
            self.transport.pause_reading()

    def frame(self, frame: Frame) -> None:
        """One data frame; control frames are websockets' (pongs are sent for pings)."""
        opcode = frame.opcode
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            if not frame.fin:
                self.fragment_opcode = opcode
                self.fragments = [bytes(frame.data)]
                frame.data = b""
                return
            data = frame.data
        elif opcode is Opcode.CONT:
            self.fragments.append(bytes(frame.data))
            if not frame.fin:
                frame.data = b""
                return
            opcode = self.fragment_opcode
            data = b"".join(self.fragments)
            self.fragments = []
        else:
            return
        # websockets has checked the UTF-8 of text (a bad one fails the connection, 1007).
        # A received payload is a bytearray: text is decoded from it, without a copy first.
        self.messages.append(str(data, "utf-8") if opcode is Opcode.TEXT else bytes(data))
        # websockets' parser keeps the last frame it read until the next one arrives
        # (between an agent's responses, seconds); the message is ours now, so the
        # frame lets its payload go (an audio chunk is ~2 KB, issue 12's memory).
        frame.data = b""
        self.wake_reader()

    def wake_reader(self) -> None:
        waiter = self.recv_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def flush(self) -> None:
        """Write what the protocol has to send; half-close when it says so."""
        transport = self.transport
        if transport is None:
            return
        for chunk in self.ws.data_to_send():
            if chunk:
                transport.write(chunk)
            elif transport.can_write_eof():
                try:
                    transport.write_eof()
                except (OSError, RuntimeError):  # uvloop may raise RuntimeError here
                    transport.close()
            else:  # TLS: no half-close
                transport.close()


class AgentLink:
    """One open agent conversation socket."""

    def __init__(self, protocol: _AgentProtocol) -> None:
        self._protocol = protocol

    async def send(self, message: str) -> None:
        """Send one text message, waiting while the transport's buffer is full.

        Raises:
            ProviderError: the socket is closed (or closing).
        """
        protocol = self._protocol
        if protocol.ws.state is not OPEN or protocol.transport is None:
            raise _agent_error("the agent connection closed", ErrorCategory.NETWORK)
        protocol.ws.send_text(message.encode())
        protocol.flush()
        if protocol.write_paused:
            waiter = protocol.drain_waiter
            if waiter is None:
                waiter = protocol.drain_waiter = protocol.loop.create_future()
            await asyncio.shield(waiter)  # shared by concurrent senders

    async def recv(self) -> str | bytes | None:
        """The next message, or None once the agent closed the conversation normally.

        Safe to cancel: a message leaves the queue only when this returns it.

        Raises:
            ProviderError: the connection dropped abnormally.
        """
        protocol = self._protocol
        while not protocol.messages:
            if protocol.ws.state is CLOSED:
                self._raise_unless_normal()
                return None
            waiter = protocol.recv_waiter = protocol.loop.create_future()
            try:
                await waiter
            finally:
                protocol.recv_waiter = None
        message = protocol.messages.pop(0)
        if protocol.read_paused and len(protocol.messages) <= _QUEUE_LOW:
            protocol.read_paused = False
            if protocol.transport is not None:
                protocol.transport.resume_reading()
        return message

    def _raise_unless_normal(self) -> None:
        exc = self._protocol.ws.close_exc
        if isinstance(exc, ConnectionClosedOK):
            return None
        code = exc.rcvd.code if exc.rcvd else None
        raise _agent_error(
            f"the agent connection dropped (close code {code})", ErrorCategory.NETWORK
        ) from exc

    @property
    def close_code(self) -> int | None:
        """The close code once closed."""
        return self._protocol.ws.close_code

    async def close(self, code: int = 1000) -> None:
        """Close the socket (idempotent), waiting at most :data:`CLOSE_TIMEOUT` for the peer."""
        protocol = self._protocol
        if protocol.ws.state is OPEN:
            protocol.ws.send_close(code)
            protocol.flush()
        if protocol.lost.done():
            return
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await asyncio.shield(protocol.lost)
        except TimeoutError:
            if protocol.transport is not None:
                protocol.transport.abort()


async def open_agent_socket(
    uri: WebSocketURI, *, open_timeout: float, ssl_context: ssl.SSLContext | None
) -> AgentLink:
    """Connect and do the opening handshake.

    Args:
        uri: the conversation URL, parsed.
        open_timeout: seconds for the TCP connect, TLS and the handshake together.
        ssl_context: the TLS context for ``wss://`` (unused for ``ws://``).

    Raises:
        TimeoutError: not open in time.
        OSError: the connection failed.
        websockets.InvalidHandshake: the server refused the handshake (an HTTP status).
    """
    loop = asyncio.get_running_loop()
    transport: asyncio.Transport | None = None
    proxy = get_proxy(uri)
    try:
        async with asyncio.timeout(open_timeout):
            if proxy is None:
                transport, protocol = await loop.create_connection(
                    lambda: _AgentProtocol(uri, loop),
                    uri.host,
                    uri.port,
                    ssl=ssl_context if uri.secure else None,
                    server_hostname=uri.host if uri.secure else None,
                )
            else:
                transport, protocol = await _through_proxy(uri, parse_proxy(proxy), ssl_context)
            await protocol.opened
    except BaseException:
        if transport is not None:
            transport.abort()
        raise
    return AgentLink(protocol)


async def _through_proxy(
    uri: WebSocketURI, proxy: Proxy, ssl_context: ssl.SSLContext | None
) -> tuple[asyncio.Transport, _AgentProtocol]:
    """A ``CONNECT`` tunnel to the agent through an HTTP(S) proxy, TLS inside it for wss."""
    if not proxy.scheme.startswith("http"):
        raise OSError(f"the agent socket cannot use a {proxy.scheme} proxy (HTTP(S) only)")
    loop = asyncio.get_running_loop()
    proxy_tls: dict[str, Any] = {"ssl": True} if proxy.scheme == "https" else {}
    transport = await connect_http_proxy(proxy, uri, user_agent_header=USER_AGENT, **proxy_tls)
    try:
        protocol = _AgentProtocol(uri, loop)
        transport.set_protocol(protocol)
        if uri.secure:
            tls = await loop.start_tls(
                transport,
                protocol,
                ssl_context or ssl.create_default_context(),
                server_hostname=uri.host,
            )
            assert tls is not None  # start_tls returns None only for a closing transport
            transport = tls
        protocol.connection_made(transport)
    except BaseException:
        transport.abort()
        raise
    return transport, protocol
