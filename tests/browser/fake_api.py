"""A throwaway app for page-logic tests: the real pages router beside fake call endpoints.

The fake follows the server contract the pages are written against (``GET
/api/call/session``, ``POST /api/call/outbound``, ``GET /api/call/{id}``, the SSE stream
and the sandbox phone hub) with scripted behaviour, and records what the browser sent.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse

from callbridge.media.ulaw import pcm16_to_ulaw
from callbridge.web.pages import PageConfig, build_pages_router, static_app

TERMINAL = {"completed", "busy", "no-answer", "canceled", "failed", "agent_failed"}


@dataclass
class Step:
    """One status change, ``after`` seconds after the call was requested."""

    after: float
    status: str
    duration: int | None = None


@dataclass
class FakeState:
    """What the fake serves next and what it has seen."""

    script: list[Step] = field(
        default_factory=lambda: [
            Step(0.3, "initiated"),
            Step(0.8, "ringing"),
            Step(1.4, "in-progress"),
            Step(2.4, "completed", 225),
        ]
    )
    outbound_error: tuple[int, dict[str, Any], dict[str, str]] | None = None
    sse_broken: bool = False
    failure: dict[str, str] | None = None
    sessions: int = 0
    outbound: list[dict[str, Any]] = field(default_factory=list)
    event_streams: int = 0
    polls: int = 0
    created_at: float | None = None
    phone_messages: list[dict[str, Any]] = field(default_factory=list)
    phone_ring_after: float = 0.3
    phone_tone_frames: int = 100

    def status_at(self, now: float) -> tuple[str, int | None]:
        """Return the scripted status (and duration) at monotonic time ``now``."""
        status, duration = "queued", None
        if self.created_at is None:
            return status, duration
        for step in self.script:
            if now - self.created_at >= step.after:
                status, duration = step.status, step.duration
        return status, duration


def tone_frame(index: int, freq: float = 440.0, amplitude: int = 8000) -> bytes:
    """Return the ``index``-th 20 ms μ-law frame of a sine tone at 8 kHz."""
    samples = [
        int(amplitude * math.sin(2 * math.pi * freq * (index * 160 + n) / 8000)) for n in range(160)
    ]
    pcm = b"".join(s.to_bytes(2, "little", signed=True) for s in samples)
    return pcm16_to_ulaw(pcm)


def build_fake_app(
    state: FakeState,
    *,
    sandbox: bool = True,
    public_base_url: str = "http://127.0.0.1",
    cors_origins: tuple[str, ...] = (),
    agent_id: str | None = None,
) -> FastAPI:
    """Build the fake app: pages router, static files and scripted ``/api/call/*``."""
    app = FastAPI()
    if cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Content-Type", "X-Callbridge-Token", "X-Turnstile-Token"],
            allow_credentials=False,
        )
    config = PageConfig(
        agent_id=agent_id, sandbox=sandbox, public_base_url=public_base_url, owner_name="Ada"
    )
    app.include_router(build_pages_router(config))
    app.mount("/static", static_app(), name="static")

    @app.get("/about")
    async def about() -> HTMLResponse:
        return HTMLResponse(
            '<!doctype html><html lang=en><head><title>About</title><link rel=icon href="data:,">'
            '<link rel="stylesheet" href="/static/callbridge.css"></head>'
            "<body><main class=wrap><h1>About us</h1><p>Another page of the site.</p></main>"
            '<script src="/static/callbridge.js"></script></body></html>'
        )

    @app.get("/api/call/session")
    async def session() -> JSONResponse:
        state.sessions += 1
        return JSONResponse({"token": f"tok-{state.sessions}", "expires_in": 300})

    @app.post("/api/call/outbound")
    async def outbound(request: Request) -> JSONResponse:
        body = await request.json()
        state.outbound.append(
            {
                "body": body,
                "token": request.headers.get("x-callbridge-token"),
                "origin": request.headers.get("origin"),
                "cookie": request.headers.get("cookie"),
            }
        )
        if state.outbound_error is not None:
            status, payload, headers = state.outbound_error
            return JSONResponse(payload, status_code=status, headers=headers)
        state.created_at = time.monotonic()
        return JSONResponse(
            {
                "success": True,
                "message": "Call initiated successfully",
                "call_sid": "CA" + "0" * 32,
                "status": "queued",
                "call_id": "call-1",
                "to": "+1•••••••8900",
            }
        )

    @app.get("/api/call/{call_id}")
    async def call(call_id: str) -> JSONResponse:
        state.polls += 1
        if call_id != "call-1" or state.created_at is None:
            return JSONResponse(
                {"success": False, "error": {"code": "not_found", "message": "No such call."}},
                status_code=404,
            )
        status, duration = state.status_at(time.monotonic())
        return JSONResponse(
            {
                "call_id": call_id,
                "status": status,
                "to": "+1•••••••8900",
                "created_at": "2025-01-01T00:00:00Z",
                "answered_at": None,
                "ended_at": None,
                "duration": duration,
                "failure": state.failure if status in {"failed", "agent_failed"} else None,
            }
        )

    @app.get("/api/call/{call_id}/events", response_model=None)
    async def events(call_id: str) -> Response:
        state.event_streams += 1
        if state.sse_broken or state.created_at is None:
            return JSONResponse({"error": "broken"}, status_code=503)
        created = state.created_at

        async def stream() -> AsyncIterator[str]:
            yield "retry: 1000\n\n"
            for step in state.script:
                delay = created + step.after - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                data = {
                    "call_id": call_id,
                    "status": step.status,
                    "at": "2025-01-01T00:00:00Z",
                    "duration": step.duration,
                }
                yield f"event: status\ndata: {json.dumps(data)}\n\n"
                if step.status in TERMINAL:
                    return

        return StreamingResponse(
            stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store"}
        )

    @app.websocket("/sandbox/twilio/phone/ws")
    async def phone_hub(ws: WebSocket) -> None:
        await ws.accept()
        await asyncio.sleep(state.phone_ring_after)
        await ws.send_text(
            json.dumps(
                {"type": "ring", "call_sid": "CA1", "from": "+15550001111", "to": "+15550002222"}
            )
        )
        answered_at = 0.0
        try:
            while True:
                msg = json.loads(await ws.receive_text())
                state.phone_messages.append(msg)
                kind = msg.get("type")
                if kind == "answer":
                    answered_at = time.monotonic()
                    await ws.send_text(json.dumps({"type": "status", "status": "in-progress"}))
                    await ws.send_text(
                        json.dumps({"type": "say", "text": "Hello from the fake line."})
                    )
                    for i in range(state.phone_tone_frames):
                        payload = base64.b64encode(tone_frame(i)).decode()
                        await ws.send_text(json.dumps({"type": "media", "payload": payload}))
                    await ws.send_text(json.dumps({"type": "say", "text": "Press 1 to talk."}))
                elif kind == "dtmf":
                    await ws.send_text(
                        json.dumps({"type": "say", "text": f"You pressed {msg['digit']}."})
                    )
                elif kind in {"hangup", "decline"}:
                    duration = round(time.monotonic() - answered_at) if answered_at else 0
                    status = "completed" if kind == "hangup" else "busy"
                    await ws.send_text(
                        json.dumps({"type": "ended", "status": status, "duration": duration})
                    )
        except WebSocketDisconnect:
            return

    return app
