"""The accepted media stream as the bridge's :class:`~callbridge.ports.MediaSocket`.

Two adapters with one behaviour: :class:`StarletteMediaSocket` over Starlette's
``WebSocket`` (the FastAPI route), and :class:`AsgiMediaSocket` straight over the
ASGI ``receive``/``send`` of the lean path in front of the middleware stack
(:class:`~callbridge.web.twilio_hooks.MediaStreamFastPath`), where every frame
skips Starlette's wrapper and the middlewares' per-message wrappers.
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import WebSocket
from starlette.types import Receive, Send
from starlette.websockets import WebSocketDisconnect, WebSocketState

from callbridge.web.stream_protocol import SEND_MANY


class StarletteMediaSocket:
    """Adapts an accepted Starlette WebSocket; closing twice or sending after close is harmless."""

    def __init__(self, websocket: WebSocket) -> None:
        self._ws = websocket
        self._closed = False

    async def recv(self) -> str | bytes | None:
        if self._closed:
            return None
        message = await self._ws.receive()
        if message["type"] == "websocket.disconnect":
            self._closed = True
            return None
        text = message.get("text")
        if text is not None:
            return str(text)
        data = message.get("bytes")
        return bytes(data) if data is not None else b""

    async def send(self, message: str) -> None:
        if self._closed or self._ws.application_state is not WebSocketState.CONNECTED:
            return
        try:
            await self._ws.send_text(message)
        except (WebSocketDisconnect, RuntimeError, OSError):
            self._closed = True

    async def send_many(self, messages: Sequence[str]) -> None:
        for message in messages:
            await self.send(message)

    async def close(self, code: int = 1000) -> None:
        if self._closed:
            return
        self._closed = True
        if self._ws.application_state is WebSocketState.CONNECTED:
            try:
                await self._ws.close(code)
            except (WebSocketDisconnect, RuntimeError, OSError):
                return


class AsgiMediaSocket:
    """An accepted WebSocket on the server's own ASGI ``receive``/``send``.

    Behaves as :class:`StarletteMediaSocket` does: ``None`` once the client is gone,
    sending after a close (ours or the client's) does nothing, a failed send (the
    server raises ``OSError`` for a vanished client) marks the socket closed.

    Args:
        receive: the connection's ASGI ``receive``, after ``websocket.accept`` was sent.
        send: its ASGI ``send``.
        send_many: the server takes :data:`~callbridge.web.stream_protocol.SEND_MANY`
            (its scope's ``extensions`` say so); without it, :meth:`send_many` sends
            the messages one by one.
    """

    __slots__ = ("_closed", "_many", "_receive", "_send")

    def __init__(self, receive: Receive, send: Send, *, send_many: bool = False) -> None:
        self._receive = receive
        self._send = send
        self._many = send_many
        self._closed = False

    async def recv(self) -> str | bytes | None:
        if self._closed:
            return None
        message = await self._receive()
        text = message.get("text")
        if text is not None:
            return str(text)
        if message["type"] == "websocket.disconnect":
            self._closed = True
            return None
        data = message.get("bytes")
        return bytes(data) if data is not None else b""

    async def send(self, message: str) -> None:
        if self._closed:
            return
        try:
            await self._send({"type": "websocket.send", "text": message})
        except (RuntimeError, OSError):
            self._closed = True

    async def send_many(self, messages: Sequence[str]) -> None:
        if not self._many:
            for message in messages:
                await self.send(message)
            return
        if self._closed:
            return
        try:
            await self._send({"type": SEND_MANY, "texts": messages})
        except (RuntimeError, OSError):
            self._closed = True

    async def close(self, code: int = 1000) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self._send({"type": "websocket.close", "code": code, "reason": ""})
        except (RuntimeError, OSError):
            return
