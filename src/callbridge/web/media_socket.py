"""Starlette's WebSocket as the bridge's :class:`~callbridge.ports.MediaSocket`."""

from __future__ import annotations

from fastapi import WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState


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

    async def close(self, code: int = 1000) -> None:
        if self._closed:
            return
        self._closed = True
        if self._ws.application_state is WebSocketState.CONNECTED:
            try:
                await self._ws.close(code)
            except (WebSocketDisconnect, RuntimeError, OSError):
                return
