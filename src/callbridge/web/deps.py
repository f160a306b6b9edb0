"""FastAPI dependencies: the container of the running app."""

from __future__ import annotations

from fastapi import Request, WebSocket

from callbridge.bootstrap import Container


def container_of(request: Request) -> Container:
    """The app's :class:`~callbridge.bootstrap.Container`."""
    container: Container = request.app.state.container
    return container


def ws_container_of(websocket: WebSocket) -> Container:
    """The app's container, for WebSocket routes."""
    container: Container = websocket.app.state.container
    return container
