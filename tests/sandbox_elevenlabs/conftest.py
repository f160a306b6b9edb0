"""Helpers for the ElevenLabs emulator tests: a mounted app on real uvicorn."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

from callbridge.sandbox.elevenlabs.emulator import ElevenLabsEmulator
from callbridge.sandbox.elevenlabs.voice import Voice
from tests.support.server import serve
from tests.support.wait import wait_until as support_wait_until

AGENT_ID = "agent_01demo"
API_KEY = "sk_test_key"
MOUNT = "/sandbox/elevenlabs"


def mounted(emulator: ElevenLabsEmulator) -> Starlette:
    """The emulator mounted where the main app mounts it."""
    return Starlette(routes=[Mount(MOUNT, app=emulator.asgi_app)])


def make_emulator(**kwargs: object) -> ElevenLabsEmulator:
    options: dict[str, object] = {
        "agent_id": AGENT_ID,
        "api_key": API_KEY,
        "ping_interval": 0.2,
        "voice": Voice(use_espeak=False),
        "stream_speed": 8.0,
        "init_wait": 0.3,
    }
    options.update(kwargs)
    return ElevenLabsEmulator(**options)  # type: ignore[arg-type]


@asynccontextmanager
async def webhook_receiver() -> AsyncIterator[tuple[str, list[tuple[bytes, str | None]]]]:
    """A loopback server that answers 200 to each POST to its hook URL and records it.

    Yields:
        The hook's URL and the deliveries so far: (body, ``ElevenLabs-Signature``).
    """
    received: list[tuple[bytes, str | None]] = []

    async def hook(request: Request) -> Response:
        received.append((await request.body(), request.headers.get("elevenlabs-signature")))
        return Response(status_code=200)

    async with serve(Starlette(routes=[Route("/hook", hook, methods=["POST"])])) as base:
        yield base + "/hook", received


async def wait_until(predicate: Callable[[], object], limit: float = 5.0) -> None:
    """Poll ``predicate`` until it is truthy (five seconds unless told)."""
    await support_wait_until(predicate, timeout=limit)


@pytest.fixture
async def emulator_url() -> AsyncIterator[tuple[ElevenLabsEmulator, str]]:
    emulator = make_emulator()
    async with serve(mounted(emulator)) as base:
        yield emulator, base + MOUNT
