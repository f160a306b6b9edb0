"""SIGTERM drain (security.md E.36): not ready at once, no new calls, a goodbye for live calls."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from callbridge.adapters.twilio.twiml import DRAINING
from tests.operator.conftest import ADMIN_ENV, TOKEN, VISITOR, admin_sandbox
from tests.support.app import running_sandbox
from tests.support.server import free_port
from tests.support.wait import wait_until

LONG_CALL = {"CALLBRIDGE_SANDBOX_CALLEE": "answer=0.2,digits=1,speak,hangup=120"}


async def _wait_status(get: Any, wanted: set[str], within: float) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while True:
        body: dict[str, Any] = await get()
        if body.get("status") in wanted:
            return body
        assert time.monotonic() < deadline, f"status stayed {body.get('status')}"
        await asyncio.sleep(0.1)


async def test_drain_ends_a_live_call_with_a_goodbye(tmp_path: Path) -> None:
    """Draining turns readiness off and refuses calls at once; after the grace period the live
    call hears the goodbye, is hung up and ends completed, with the drain on its timeline."""
    env = {**LONG_CALL, "CALLBRIDGE_DRAIN_SECONDS": "1"}
    async with admin_sandbox(tmp_path, env) as sb:
        placed = (await sb.request_call(VISITOR)).json()
        store = sb.container.store

        async def status() -> dict[str, Any]:
            call = await store.get_call(placed["call_id"])
            assert call is not None
            return {"status": call.status.value}

        await _wait_status(status, {"in-progress"}, 15)
        # Live means bridged: answered is not enough, since a stream that opens after the
        # drain began is refused, and the call then ends inside the grace period by itself.
        await wait_until(lambda: placed["call_id"] in sb.container.bridge.bridged_call_ids(), 15)
        drain = asyncio.create_task(sb.container.operator.drain.drain())
        await asyncio.sleep(0.05)
        ready = await sb.http.get("/readyz")
        assert ready.status_code == 503 and "draining" in ready.json()["problems"]
        refused = await sb.request_call("+12025550177")
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "draining"
        assert "retry-after" in refused.headers
        report = await asyncio.wait_for(drain, 30)
        assert report.ended == [placed["call_id"]] and report.still_live == []
        sim = await sb.twilio.wait_for_end(placed["call_sid"], 10)
        assert any(DRAINING in said for said in sim.said)
        await _wait_status(status, {"completed"}, 10)
        events = [e.status for e in await store.events(placed["call_id"])]
        assert "drain_goodbye" in events
        assert events.index("drain_goodbye") < events.index("completed")


async def test_a_call_that_ends_within_the_grace_period_is_left_alone(tmp_path: Path) -> None:
    """A call that hangs up by itself during the grace period gets no goodbye."""
    env = {
        "CALLBRIDGE_SANDBOX_CALLEE": "answer=0.2,digits=1,hangup=1",
        "CALLBRIDGE_DRAIN_SECONDS": "20",
    }
    async with admin_sandbox(tmp_path, env) as sb:
        placed = (await sb.request_call(VISITOR)).json()
        started = time.monotonic()
        report = await asyncio.wait_for(sb.container.operator.drain.drain(), 30)
        assert report.ended == [] and report.finished_in_grace == 1
        assert time.monotonic() - started < 15
        sim = await sb.twilio.wait_for_end(placed["call_sid"], 10)
        assert not any(DRAINING in said for said in sim.said)


def _serve(port: int, folder: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "CALLBRIDGE_SANDBOX": "true",
        "CALLBRIDGE_ADMIN_TOKEN": TOKEN,
        "CALLBRIDGE_DRAIN_SECONDS": "3",
        "DATABASE_URL": f"sqlite+aiosqlite:///{folder}/serve.db",
        **LONG_CALL,
    }
    exe = Path(sys.executable).with_name("callbridge")
    return subprocess.Popen(
        [str(exe), "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(folder / "serve.log", "wb"),  # noqa: SIM115 - closed with the process
        cwd=folder,
    )


async def test_sigterm_drains_callbridge_serve(tmp_path: Path) -> None:
    """``callbridge serve`` on SIGTERM: /readyz is 503 at once, new calls get 503, the call in
    progress is ended with the goodbye after CALLBRIDGE_DRAIN_SECONDS, and the process exits
    cleanly well before a 30 s kill deadline."""
    port = free_port()
    proc = _serve(port, tmp_path)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if (await http.get("/readyz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert proc.poll() is None, (tmp_path / "serve.log").read_text()
                assert time.monotonic() < deadline, "callbridge serve never became ready"
                await asyncio.sleep(0.2)

            async def place(number: str) -> httpx.Response:
                token = (await http.get("/api/call/session")).json()["token"]
                return await http.post(
                    "/api/call/outbound",
                    json={"to_number": number},
                    headers={"X-Callbridge-Token": token},
                )

            placed = (await place(VISITOR)).json()
            call_url = f"/api/admin/calls/{placed['call_id']}"

            async def detail() -> dict[str, Any]:
                body: dict[str, Any] = (await http.get(call_url, headers=auth)).json()
                return body

            await _wait_status(detail, {"in-progress"}, 20)
            signalled = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.2)
            ready = await http.get("/readyz")
            assert ready.status_code == 503 and time.monotonic() - signalled < 1.5
            refused = await place("+12025550177")
            assert refused.status_code == 503
            assert (await detail())["status"] == "in-progress"  # still talking in the grace

            ended = await _wait_status(detail, {"completed"}, 25)
            assert time.monotonic() - signalled >= 3
            timeline = [e["status"] for e in ended["timeline"]]
            assert "drain_goodbye" in timeline

        code = await asyncio.to_thread(proc.wait, 20)
        assert code == 0, (tmp_path / "serve.log").read_text()
        assert time.monotonic() - signalled < 30
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_behind_a_load_balancer_a_drain_ends_only_its_own_calls(
    tmp_path: Path,
    redis_url: str,  # noqa: F811
) -> None:
    """Two servers share one database and Redis. Draining B, while A bridges a call,
    neither waits for nor ends A's call: B's drain returns at once, and A's call goes on
    with no goodbye. (Looking at every live call in the database, B would wait out its
    grace period, then try to end A's call.)"""
    db = f"sqlite+aiosqlite:///{tmp_path}/shared.db"
    env = {**ADMIN_ENV, **LONG_CALL, "REDIS_URL": redis_url}
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    async with (
        running_sandbox(
            {**env, "CALLBRIDGE_DRAIN_SECONDS": "1"}, tmp_path=tmp_path / "a", database_url=db
        ) as a,
        running_sandbox(
            {**env, "CALLBRIDGE_DRAIN_SECONDS": "20"}, tmp_path=tmp_path / "b", database_url=db
        ) as b,
    ):
        placed = (await a.request_call(VISITOR)).json()

        async def status() -> dict[str, Any]:
            call = await b.container.store.get_call(placed["call_id"])
            assert call is not None
            return {"status": call.status.value}

        await _wait_status(status, {"in-progress"}, 15)
        # "in-progress" comes with Twilio's answer, before the consent step and the
        # stream: the call is A's own only once A bridges its media.
        await wait_until(lambda: placed["call_id"] in a.container.bridge.bridged_call_ids(), 15)
        report = await asyncio.wait_for(b.container.operator.drain.drain(), 10)
        assert (report.finished_in_grace, report.ended, report.still_live) == (0, [], [])
        assert (await status())["status"] == "in-progress"
        assert (await a.http.get("/readyz")).status_code == 200
        own = await asyncio.wait_for(a.container.operator.drain.drain(), 60)
        assert own.ended == [placed["call_id"]]
        events = [e.status for e in await a.container.store.events(placed["call_id"])]
        assert events.count("drain_goodbye") == 1
