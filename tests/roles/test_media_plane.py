"""A control process and two media processes on PostgreSQL and Redis, with one sandbox.

Each is a real uvicorn on loopback with its own container, as ``callbridge serve
--role`` builds it; the emulators are the standalone ``callbridge sandbox`` app. The
media processes sit behind a round-robin TCP relay (the load balancer), and reach the
database through a relay that delays every chunk: nothing on their media path may wait
on it.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import text

from callbridge.bootstrap import Container, build
from callbridge.sandbox.standalone import build_standalone
from callbridge.settings import Role
from callbridge.web.app import create_app
from tests.store.conftest import postgres_url  # noqa: F401 - a fixture, re-exported
from tests.support.app import settings_from
from tests.support.relay import tcp_relay
from tests.support.server import free_port, serve
from tests.support.wait import wait_until

pytestmark = pytest.mark.postgres

CALLS = 4


@dataclass
class Cluster:
    """The running processes (in this test's loop) and what the test reads from them."""

    control: Container
    control_url: str
    media: list[Container]
    twilio: Any
    elevenlabs: Any


@pytest_asyncio.fixture
async def cluster(
    postgres_url: str,  # noqa: F811
    redis_url: str,  # noqa: F811
) -> AsyncIterator[Cluster]:
    sandbox_port, control_port = free_port(), free_port()
    media_ports = [free_port(), free_port()]
    shared = {
        "CALLBRIDGE_SANDBOX": "true",
        "CALLBRIDGE_SANDBOX_CALLEE": "answer=0.2,digits=1,speak,hangup=3",
        "CALLBRIDGE_SECRET_KEY": secrets.token_hex(32),
        "TWILIO_ACCOUNT_SID": "AC" + secrets.token_hex(16),
        "TWILIO_AUTH_TOKEN": secrets.token_hex(16),
        "TWILIO_API_BASE_URL": f"http://127.0.0.1:{sandbox_port}/sandbox/twilio",
        "ELEVENLABS_API_BASE_URL": f"http://127.0.0.1:{sandbox_port}/sandbox/elevenlabs",
        "REDIS_URL": redis_url,
        "DATABASE_URL": postgres_url,
    }
    async with AsyncExitStack() as stack:
        balancer = await stack.enter_async_context(
            tcp_relay([("127.0.0.1", port) for port in media_ports])
        )
        shared["CALLBRIDGE_MEDIA_BASE_URL"] = f"http://127.0.0.1:{balancer}"
        app, twilio, elevenlabs = build_standalone(settings_from(shared))
        twilio._say_rate = 0.0  # no long greeting
        await stack.enter_async_context(serve(app, port=sandbox_port))
        control_env = {**shared, "PUBLIC_BASE_URL": f"http://127.0.0.1:{control_port}"}
        control = build(settings_from(control_env), port=control_port, role=Role.CONTROL)
        control_url = await stack.enter_async_context(serve(create_app(control), port=control_port))
        media = []
        for port in media_ports:
            # PUBLIC_BASE_URL is the site's (the control's); the media base is the balancer.
            container = build(settings_from(control_env), port=port, role=Role.MEDIA)
            await stack.enter_async_context(serve(create_app(container), port=port))
            media.append(container)
        yield Cluster(control, control_url, media, twilio, elevenlabs)


async def _place(http: httpx.AsyncClient, number: str) -> str:
    token = (await http.get("/api/call/session")).json()["token"]
    response = await http.post(
        "/api/call/outbound",
        json={"to_number": number, "name": "Ada"},
        headers={"X-Callbridge-Token": token},
    )
    assert response.status_code == 200, response.text
    return str(response.json()["call_id"])


async def _finished(http: httpx.AsyncClient, call_id: str) -> str:
    async def status() -> str | None:
        value = (await http.get(f"/api/call/{call_id}")).json()["status"]
        return str(value) if value in ("completed", "failed", "agent_failed") else None

    return str(await wait_until(status, timeout=60, interval=0.2))


async def _calls(cluster: Cluster) -> list[str]:
    async with httpx.AsyncClient(base_url=cluster.control_url, timeout=30) as http:
        ids = [await _place(http, f"+1 202 555 01{10 + i}") for i in range(CALLS)]
        statuses = await asyncio.gather(*(_finished(http, call_id) for call_id in ids))
    assert statuses == ["completed"] * CALLS
    return ids


def _frames_to_agent(container: Container) -> float:
    """``callbridge_frames_total{direction="to_agent"}`` as the process's registry reads it
    (a pump's count is added when it ends: read after the streams are over)."""
    value = container.metrics.registry.get_sample_value(
        "callbridge_frames_total", {"direction": "to_agent"}
    )
    return value or 0.0


async def test_calls_placed_by_control_stream_through_both_media_processes(
    cluster: Cluster,
) -> None:
    """Calls placed through the control process stream through the media processes (each
    takes its share) and complete with their transcripts stored."""
    ids = await _calls(cluster)
    served = [_frames_to_agent(m) for m in cluster.media]
    assert all(count > 0 for count in served), served
    assert cluster.control.bridge.active == 0
    assert _frames_to_agent(cluster.control) == 0
    for call_id in ids:
        turns = await wait_until(lambda c=call_id: cluster.control.store.turns(c), timeout=30)
        assert any(turn.role == "agent" for turn in turns)


async def test_a_locked_transcript_table_holds_up_no_frame(cluster: Cluster) -> None:
    """While the transcript table is locked (its writes wait), every call streams to its
    end and every frame the callee sent reaches the agent; the turns wait in the
    background writer's queue, which drains once the lock is gone, and none is dropped."""
    engine = cluster.control.store.engine
    async with engine.connect() as locker:
        await locker.execute(text("BEGIN"))
        await locker.execute(text("LOCK TABLE transcript_turns IN ACCESS EXCLUSIVE MODE"))
        async with httpx.AsyncClient(base_url=cluster.control_url, timeout=30) as http:
            ids = [await _place(http, f"+1 202 555 01{20 + i}") for i in range(CALLS)]
            await wait_until(lambda: len(cluster.twilio.calls) == CALLS, timeout=30)
            await wait_until(
                lambda: all(
                    sim.stream is not None and sim.stream.ended_by is not None
                    for sim in cluster.twilio.calls.values()
                ),
                timeout=60,
                interval=0.1,
            )
            # Every stream is over; their turns are still queued behind the lock.
            assert sum(m.writer.pending for m in cluster.media) > 0
            sent = sum(sim.stream.frames_sent for sim in cluster.twilio.calls.values())
            forwarded = sum(_frames_to_agent(m) for m in cluster.media)
            await locker.execute(text("ROLLBACK"))
            statuses = await asyncio.gather(*(_finished(http, call_id) for call_id in ids))
    assert statuses == ["completed"] * CALLS
    heard = sum(r.user_audio_chunks for r in cluster.elevenlabs.conversations.values())
    assert sent > 0
    assert forwarded == sent
    assert heard == sent
    for media in cluster.media:
        await wait_until(lambda m=media: m.writer.pending == 0, timeout=30)
        assert media.metrics.registry.get_sample_value(
            "callbridge_writer_dropped_total", {"kind": "turns", "reason": "full"}
        ) in (None, 0.0)
    for call_id in ids:
        assert await cluster.control.store.turns(call_id)
