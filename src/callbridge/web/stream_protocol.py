"""uvicorn's websockets sans-I/O protocol with a lighter inbox and write flag per connection.

Issue 12's census of the objects alive per call (100 calls up, ``callbridge bench``)
found ~3.9 KB of each media stream's memory in two asyncio primitives uvicorn makes
for every WebSocket: an :class:`asyncio.Queue` for received messages (three deques
and an :class:`asyncio.Event`, each deque a 528-byte block allocated up front) and an
:class:`asyncio.Event` for "writable" (one more deque). The protocol uses only
``put_nowait``, ``get`` and ``empty`` of the first and ``set``, ``clear`` and ``wait``
of the second, so :class:`MediaStreamProtocol` replaces them, right after uvicorn's
own ``__init__``, by :class:`Inbox` and :class:`WriteFlag`: the same behaviour on
lists that are empty (56 bytes) while nothing waits. It also lets the handshake
request's headers go once uvicorn has copied them into the scope.

It also writes several text messages at once: the ASGI extension :data:`SEND_MANY`
(advertised in the scope's ``extensions``) takes ``{"type": SEND_MANY, "texts": [...]}``
and writes every message's frame to the socket in one ``transport.write``, where
``websocket.send`` makes one write, one system call, per message. An agent audio
chunk of 200 ms goes to Twilio as ten 20 ms ``media`` messages and a ``mark``
(security.md D34); measured with py-spy in one ``--role all`` process, 100 calls,
the write per message was 38% of the agent pump's time. Everything else is uvicorn's.

``callbridge serve`` names this class as uvicorn's ``ws`` protocol (so do the tests'
servers). A uvicorn that used another method of these attributes would fail the
tests at once (an ``AttributeError``), not in production silently.
"""

from __future__ import annotations

import asyncio
from contextlib import suppress
from typing import Any, Generic, TypeVar

from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import InvalidState
from websockets.http11 import Request

__all__ = ["SEND_MANY", "Inbox", "MediaStreamProtocol", "WriteFlag"]

#: The ASGI extension (and its event's type) for several text messages written at once.
SEND_MANY = "callbridge.websocket.send_many"

_T = TypeVar("_T")


class Inbox(Generic[_T]):
    """An unbounded FIFO with :class:`asyncio.Queue`'s ``put_nowait``, ``get`` and ``empty``.

    Getters are served in order; a getter cancelled after it was woken passes the
    wake-up on, as :meth:`asyncio.Queue.get` does.
    """

    __slots__ = ("_getters", "_items")

    def __init__(self) -> None:
        self._items: list[_T] = []
        self._getters: list[asyncio.Future[None]] = []

    def empty(self) -> bool:
        """Whether nothing is queued."""
        return not self._items

    def put_nowait(self, item: _T) -> None:
        """Queue ``item`` and wake the first waiting getter."""
        self._items.append(item)
        self._wake_next()

    async def get(self) -> _T:
        """The oldest item, waiting for one if none is queued."""
        while not self._items:
            getter = asyncio.get_running_loop().create_future()
            self._getters.append(getter)
            try:
                await getter
            except BaseException:
                getter.cancel()
                with suppress(ValueError):
                    self._getters.remove(getter)
                if self._items and not getter.cancelled():
                    self._wake_next()  # it was woken for an item it will not take
                raise
        return self._items.pop(0)

    def _wake_next(self) -> None:
        while self._getters:
            getter = self._getters.pop(0)
            if not getter.done():
                getter.set_result(None)
                return


class WriteFlag:
    """:class:`asyncio.Event`'s ``set``, ``clear``, ``is_set`` and ``wait``, set at first."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = True
        self._waiters: list[asyncio.Future[None]] = []

    def is_set(self) -> bool:
        """Whether the flag is set."""
        return self._set

    def set(self) -> None:
        """Set the flag and wake every waiter."""
        self._set = True
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        """Clear the flag: :meth:`wait` waits from now on."""
        self._set = False

    async def wait(self) -> bool:
        """Return at once if the flag is set, else once it is (always True)."""
        if self._set:
            return True
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            with suppress(ValueError):
                self._waiters.remove(waiter)
        return True


class MediaStreamProtocol(WebSocketsSansIOProtocol):
    """uvicorn's ``websockets-sansio`` protocol on :class:`Inbox` and :class:`WriteFlag`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The same interface as uvicorn's Queue and Event for what the protocol calls;
        # the replaced ones are freed here, before any message arrives.
        self.queue = Inbox()  # type: ignore[assignment]
        self.writable = WriteFlag()  # type: ignore[assignment]

    def handle_connect(self, event: Request) -> None:
        """uvicorn's handshake; then the request's headers are let go.

        uvicorn copies them into the ASGI scope here and never reads the request
        again, yet keeps it (and websockets' parser does too) for the connection's
        life: Twilio's headers, signature included, ~1.5 KB per call.
        """
        super().handle_connect(event)
        event.headers.clear()
        scope = getattr(self, "scope", None)  # none when the handshake was refused
        if scope is not None:
            scope["extensions"][SEND_MANY] = {}

    async def send(self, message: Any) -> None:
        """uvicorn's ASGI ``send``, and :data:`SEND_MANY` on an open connection.

        As uvicorn's ``websocket.send``: waits while the transport's buffer is full,
        and a client that is gone raises ``ClientDisconnected``. After our close (or
        before the handshake) the event is refused as uvicorn refuses a
        ``websocket.send`` then.
        """
        if message["type"] != SEND_MANY:
            await super().send(message)
            return
        await self.writable.wait()
        if self.disconnected:
            raise ClientDisconnected()
        if not self.handshake_complete or self.close_sent or self.initial_response is not None:
            raise RuntimeError(f"Unexpected ASGI message {SEND_MANY!r} now.")
        conn = self.conn
        try:
            for text in message["texts"]:
                conn.send_text(text.encode())
        except InvalidState:
            raise ClientDisconnected() from None
        self.transport.write(b"".join(conn.data_to_send()))
