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
request's headers go once uvicorn has copied them into the scope. Everything else
is uvicorn's.

``callbridge serve`` names this class as uvicorn's ``ws`` protocol (so do the tests'
servers). A uvicorn that used another method of these attributes would fail the
tests at once (an ``AttributeError``), not in production silently.
"""

from __future__ import annotations

import asyncio
from contextlib import suppress
from typing import Any, Generic, TypeVar

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import Request

__all__ = ["Inbox", "MediaStreamProtocol", "WriteFlag"]

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
