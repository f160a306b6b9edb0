"""Fixtures for the Twilio emulator: a real uvicorn serving the emulator and a receiver.

The receiver stands in for callbridge's own server: it records every webhook with
the full URL it was called at, checks ``X-Twilio-Signature`` with twilio-python's
``RequestValidator``, answers TwiML from a table, and runs a test-supplied
Media Streams handler on ``/media``.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.websockets import WebSocket
from twilio.request_validator import RequestValidator

from callbridge.sandbox.twilio.emulator import TwilioEmulator
from tests.support.server import serve

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "sandbox-secret-token"
CALLER = "+15005550006"
CALLEE = "+14155550100"


@dataclass
class Hook:
    """One request the emulator sent to the receiver."""

    method: str
    url: str
    path: str
    params: dict[str, str]
    signature: str | None
    valid: bool


@dataclass
class Receiver:
    """The app side: records webhooks, serves TwiML, runs a media handler."""

    token: str
    hooks: list[Hook] = field(default_factory=list)
    twiml: dict[str, str | Callable[[Hook], str]] = field(default_factory=dict)
    #: Paths that answer this HTTP status with an empty body (a server failing).
    failing: dict[str, int] = field(default_factory=dict)
    #: Paths that answer 200 with this (body, content type).
    typed: dict[str, tuple[str, str]] = field(default_factory=dict)
    ws_handshakes: list[Hook] = field(default_factory=list)
    media_handler: Callable[[WebSocket], Awaitable[None]] | None = None
    base_url: str = ""

    def posted(self, path: str) -> list[Hook]:
        """Webhooks received at ``path``."""
        return [h for h in self.hooks if h.path == path]

    async def hook(self, request: Request) -> Response:
        body = (await request.body()).decode()
        params = dict(parse_qsl(body, keep_blank_values=True))
        signature = request.headers.get("X-Twilio-Signature")
        url = str(request.url)
        valid = RequestValidator(self.token).validate(
            url, params if request.method == "POST" else {}, signature or ""
        )
        hook = Hook(request.method, url, request.url.path, params, signature, valid)
        self.hooks.append(hook)
        if request.url.path in self.failing:
            return Response(status_code=self.failing[request.url.path])
        if request.url.path in self.typed:
            body, media_type = self.typed[request.url.path]
            return Response(body, media_type=media_type)
        answer = self.twiml.get(request.url.path)
        if answer is None:
            return Response(status_code=204)
        text = answer(hook) if callable(answer) else answer
        return Response(text, media_type="text/xml")

    async def media(self, websocket: WebSocket) -> None:
        signature = websocket.headers.get("X-Twilio-Signature")
        url = str(websocket.url)
        valid = RequestValidator(self.token).validate(url, {}, signature or "")
        self.ws_handshakes.append(Hook("GET", url, websocket.url.path, {}, signature, valid))
        await websocket.accept()
        if self.media_handler is not None:
            await self.media_handler(websocket)


@dataclass
class Sandbox:
    """A running emulator plus receiver on one loopback server."""

    emulator: TwilioEmulator
    receiver: Receiver
    base_url: str
    http: httpx.AsyncClient

    @property
    def api_base(self) -> str:
        return self.base_url + "/sandbox/twilio"

    @property
    def ws_base(self) -> str:
        return self.base_url.replace("http://", "ws://")

    async def create(
        self, *, expect: int = 201, headers: dict[str, str] | None = None, **form: Any
    ) -> dict[str, Any]:
        """POST Calls.json with ``form`` (defaults: To, From, StatusCallback)."""
        data: dict[str, Any] = {
            "To": CALLEE,
            "From": CALLER,
            "StatusCallback": self.base_url + "/status",
        }
        data.update(form)
        data = {k: v for k, v in data.items() if v is not None}
        response = await self.http.post(
            f"{self.api_base}/2010-04-01/Accounts/{ACCOUNT_SID}/Calls.json",
            data=data,
            auth=(ACCOUNT_SID, AUTH_TOKEN),
            headers=headers or {},
        )
        assert response.status_code == expect, response.text
        body: dict[str, Any] = response.json()
        return body

    async def end(self, sid: str, within: float = 10.0) -> Any:
        return await self.emulator.wait_for_end(sid, within)


def ulaw_b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    """An emulator (answer fast, no Say time) and a receiver behind one uvicorn."""
    emulator = TwilioEmulator(
        account_sid=ACCOUNT_SID,
        auth_token=AUTH_TOKEN,
        callee_script="answer=0.05,hangup=10",
        say_seconds_per_char=0,
        dial_seconds=0.2,
    )
    receiver = Receiver(AUTH_TOKEN)
    app = Starlette(
        routes=[
            Mount("/sandbox/twilio", app=emulator.asgi_app),
            WebSocketRoute("/media", receiver.media),
            Route("/{path:path}", receiver.hook, methods=["GET", "POST"]),
        ]
    )
    async with serve(app) as base_url, httpx.AsyncClient(timeout=10) as http:
        receiver.base_url = base_url
        await emulator.start()
        try:
            yield Sandbox(emulator, receiver, base_url, http)
        finally:
            await emulator.aclose()
