"""Serve an ASGI app with a real uvicorn on a free loopback port, for tests."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def serve(app: Any, port: int | None = None, *, ws: Any = "auto") -> AsyncIterator[str]:
    """Run ``app`` under uvicorn on loopback; yield its base URL (``http://127.0.0.1:PORT``).

    The server runs in the current event loop, so the test and the server share
    one loop; it is shut down (lifespan included) when the block exits. ``ws`` is
    uvicorn's WebSocket protocol (a name or a class).
    """
    port = port or free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="auto",
        proxy_headers=False,  # as `callbridge serve`: only CALLBRIDGE_TRUSTED_PROXIES counts
        ws=ws,
        ws_max_size=16 * 1024 * 1024,
        # As `callbridge serve`: a connection still open 5 s into shutdown is cancelled
        # rather than waited for without end (a test that leaves a call live at exit).
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("uvicorn stopped before it started")
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=15)
