"""FastAPI dependencies: the container of the running app."""

from __future__ import annotations

from fastapi import Request, WebSocket

from callbridge.bootstrap import Container


async def container_of(request: Request) -> Container:
    """The app's :class:`~callbridge.bootstrap.Container`.

    ``async`` so that FastAPI calls it on the loop: a plain ``def`` dependency runs in
    its thread pool, a thread hop per request (and a wait for the GIL while the loop
    pumps media).
    """
    container: Container = request.app.state.container
    return container


def ws_container_of(websocket: WebSocket) -> Container:
    """The app's container, for WebSocket routes."""
    container: Container = websocket.app.state.container
    return container
