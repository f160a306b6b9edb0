"""The whole callbridge app in the sandbox, on a real uvicorn on loopback, for tests."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text
from starlette.types import ASGIApp
from twilio.request_validator import RequestValidator

from callbridge.bootstrap import Container, build
from callbridge.ports import Clock
from callbridge.settings import Settings, load_settings
from callbridge.web.app import create_app
from callbridge.web.stream_protocol import MediaStreamProtocol
from tests.support.server import free_port, serve

#: Fast defaults for tests: a callee that answers at once and presses 1, no long greeting.
TEST_ENV = {
    "CALLBRIDGE_SANDBOX": "true",
    "CALLBRIDGE_SANDBOX_CALLEE": "answer=0.2,digits=1,speak,hangup=4",
}


def settings_from(env: Mapping[str, str]) -> Settings:
    """The settings with ``env`` over this process's environment (no ``.env``), which is
    left as it was."""
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        return load_settings(_env_file=None)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


#: The key every test server with REDIS_URL shares (a test constant, no secret).
SHARED_TEST_KEY = "test-shared-key-" + "0" * 32


def twilio_signature(sb: Sandbox, url: str, params: Mapping[str, str] | None = None) -> str:
    """``X-Twilio-Signature`` as Twilio computes it with the account's auth token."""
    assert sb.container.auth_token
    validator = RequestValidator(sb.container.auth_token)
    return str(validator.compute_signature(url, dict(params or {})))


async def count_rows(sb: Sandbox, table: str, where: str = "") -> int:
    """How many rows one of our tables holds (to show that nothing was written)."""
    async with sb.container.store.engine.connect() as conn:
        query = f"SELECT count(*) FROM {table} {where}"  # noqa: S608 - test constants only
        return int((await conn.execute(text(query))).scalar_one())


@dataclass
class Sandbox:
    """A running sandbox app: its base URL, its container and an HTTP client on it."""

    base_url: str
    container: Container
    http: httpx.AsyncClient

    @property
    def twilio(self) -> Any:
        """The Twilio emulator."""
        assert self.container.sandbox is not None
        return self.container.sandbox.twilio

    @property
    def elevenlabs(self) -> Any:
        """The ElevenLabs emulator."""
        assert self.container.sandbox is not None
        return self.container.sandbox.elevenlabs

    async def token(self, origin: str | None = None) -> str:
        """A fresh call token (as the page gets it)."""
        headers = {"Origin": origin} if origin else {}
        response = await self.http.get("/api/call/session", headers=headers)
        response.raise_for_status()
        return str(response.json()["token"])

    async def request_call(
        self, number: str, *, origin: str | None = None, **fields: Any
    ) -> httpx.Response:
        """POST /api/call/outbound with a fresh token, as the page does."""
        headers = {"X-Callbridge-Token": await self.token(origin)}
        if origin:
            headers["Origin"] = origin
        return await self.http.post(
            "/api/call/outbound", json={"to_number": number, **fields}, headers=headers
        )


@asynccontextmanager
async def running_sandbox(
    env: Mapping[str, str] | None = None,
    *,
    tmp_path: Path | None = None,
    database_url: str | None = None,
    emulator_options: Mapping[str, Any] | None = None,
    front: Callable[[ASGIApp], ASGIApp] | None = None,
    clock: Clock | None = None,
) -> AsyncIterator[Sandbox]:
    """Run the app with both emulators mounted; yields a :class:`Sandbox`.

    Args:
        env: settings as environment variables (over :data:`TEST_ENV`).
        tmp_path: where the SQLite file goes (default: a fresh temp folder).
        database_url: another database (e.g. PostgreSQL) instead of SQLite.
        emulator_options: attributes to set on the Twilio emulator before start
            (e.g. ``{"_say_rate": 0.06}`` for a real-time greeting).
        front: wraps the app in an ASGI layer that sees every request first (e.g. a
            fault injected in front of one of our endpoints).
        clock: the app's clock (a test's hand-moved clock), instead of the system's.
    """
    import tempfile

    merged = {**TEST_ENV, **(env or {})}
    if "REDIS_URL" in merged:
        # Redis says other processes share the work: a server then needs a shared key.
        merged.setdefault("CALLBRIDGE_SECRET_KEY", SHARED_TEST_KEY)
    folder = tmp_path or Path(tempfile.mkdtemp(prefix="callbridge-test-"))
    merged.setdefault("DATABASE_URL", database_url or f"sqlite+aiosqlite:///{folder}/cb.db")
    settings = settings_from(merged)
    port = free_port()
    container = build(settings, host="127.0.0.1", port=port, clock=clock)
    assert container.sandbox is not None
    options = {"_say_rate": 0.0, "_dial_seconds": 0.5, **(emulator_options or {})}
    for name, value in options.items():
        setattr(container.sandbox.twilio, name, value)
    app: ASGIApp = create_app(container)
    if front is not None:
        app = front(app)
    # The WebSocket protocol `callbridge serve` runs: every media stream a test opens
    # meets the one production uses (the emulators' sockets share it, as in the demo).
    async with serve(app, port=port, ws=MediaStreamProtocol) as base_url:
        async with httpx.AsyncClient(base_url=base_url, timeout=20) as http:
            yield Sandbox(base_url=base_url, container=container, http=http)
