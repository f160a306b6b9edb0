"""Several processes from the command line: the shared key, the doctor, ``demo --workers``.

Each test runs the real ``callbridge`` command in a subprocess, as an operator would.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import httpx
import pytest

from callbridge.bootstrap import build
from callbridge.settings import load_settings
from tests.support.server import free_port
from tests.support.wait import wait_until

_EXE = str(Path(sys.executable).with_name("callbridge"))


def _run(args: list[str], env: Mapping[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own command
        [_EXE, *args],
        env={**os.environ, "COLUMNS": "400", **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_server_expecting_company_refuses_to_start_without_a_shared_key(
    tmp_path: Path,
) -> None:
    """With REDIS_URL set and no CALLBRIDGE_SECRET_KEY, `callbridge serve` in the sandbox
    (where each process would make up its own key) exits 2 with one sentence."""
    env = {
        "CALLBRIDGE_SANDBOX": "true",
        "REDIS_URL": "redis://127.0.0.1:9/0",
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/cb.db",
    }
    result = _run(["serve", "--port", str(free_port())], env, tmp_path)
    assert result.returncode == 2
    out = " ".join((result.stdout + result.stderr).split())
    assert "REDIS_URL is set" in out
    assert "set the same CALLBRIDGE_SECRET_KEY" in out
    assert "Traceback" not in out


async def test_a_key_derived_from_the_real_twilio_token_counts_as_shared(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Outside the sandbox, REDIS_URL and no CALLBRIDGE_SECRET_KEY is fine: every process
    derives the same key from the same TWILIO_AUTH_TOKEN."""
    token = secrets.token_hex(16)
    for name, value in {
        "TWILIO_ACCOUNT_SID": "AC" + secrets.token_hex(16),
        "TWILIO_AUTH_TOKEN": token,
        "TWILIO_PHONE_NUMBER": "+12025550100",
        "ELEVENLABS_AGENT_ID": "agent_x",
        "PUBLIC_BASE_URL": "https://calls.example.com",
        "REDIS_URL": "redis://127.0.0.1:9/0",
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/cb.db",
    }.items():
        monkeypatch.setenv(name, value)
    containers = [build(load_settings(_env_file=None)) for _ in range(2)]
    try:
        assert containers[0].secret_key == containers[1].secret_key
    finally:
        for c in containers:
            await c.http.aclose()
            await c.store.aclose()
            assert c.redis is not None
            await c.redis.aclose()


def test_doctor_says_what_several_processes_lack(tmp_path: Path) -> None:
    """Without REDIS_URL the doctor lists, as notes for several processes, the missing
    shared key, Redis, a database beyond SQLite and one sandbox; with REDIS_URL set,
    in-process emulators are a problem (exit 1)."""
    base = {
        "CALLBRIDGE_SANDBOX": "true",
        "CALLBRIDGE_ADMIN_TOKEN": secrets.token_hex(16),
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/cb.db",
        "CALLBRIDGE_MEDIA_SLICE_US": "0",  # the kernel's slice: tests/roles/test_media_slice
    }
    alone = _run(["doctor"], base, tmp_path)
    out = " ".join((alone.stdout + alone.stderr).split())
    assert out.count("for several processes:") == 4, out
    assert "CALLBRIDGE_SECRET_KEY is not set" in out
    assert "REDIS_URL is not set" in out
    assert "DATABASE_URL is SQLite" in out
    assert "run `callbridge sandbox` once" in out

    shared = {**base, "REDIS_URL": "redis://127.0.0.1:9/0", "CALLBRIDGE_SECRET_KEY": "k" * 40}
    company = _run(["doctor"], shared, tmp_path)
    out = " ".join((company.stdout + company.stderr).split())
    assert company.returncode == 1
    assert "✗ The sandbox's emulators run inside each process" in out
    assert "for several processes: DATABASE_URL is SQLite" in out  # a note: one machine works
    assert "REDIS_URL is not set" not in out


def _two_free_ports() -> int:
    """A port P with P+1 free too (for the two servers of ``--workers 2``)."""
    for _ in range(50):
        port = free_port()
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no two consecutive free ports")


async def _call_through(base: str) -> str:
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        token = (await http.get("/api/call/session")).json()["token"]
        placed = await http.post(
            "/api/call/outbound",
            json={"to_number": f"+1 202 555 01{secrets.randbelow(90) + 10}"},
            headers={"X-Callbridge-Token": token},
        )
        assert placed.status_code == 200, placed.text
        call_id = str(placed.json()["call_id"])

        async def completed() -> bool:
            return bool((await http.get(f"/api/call/{call_id}")).json()["status"] == "completed")

        await wait_until(completed, timeout=60, interval=0.2)
        return call_id


async def test_demo_with_two_workers_serves_calls_through_each(tmp_path: Path) -> None:
    """`callbridge demo --workers 2` starts one sandbox and two servers sharing a key, a
    database and a Redis it starts itself; a call placed through each server completes,
    and its price comes from the one emulator. SIGTERM stops them all."""
    port, sandbox_port = _two_free_ports(), free_port()
    admin = secrets.token_hex(16)
    env = {
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/demo.db",
        "CALLBRIDGE_SANDBOX_CALLEE": "answer=0.2,digits=1,speak,hangup=2",
        "CALLBRIDGE_ADMIN_TOKEN": admin,
    }
    args = ["demo", "--workers", "2", "--port", str(port), "--sandbox-port", str(sandbox_port)]
    log = (tmp_path / "demo.log").open("wb")
    proc = subprocess.Popen(  # noqa: S603, ASYNC220 - our own command, started once
        [_EXE, *args], env={**os.environ, **env}, cwd=tmp_path, stdout=log, stderr=log
    )
    servers = [f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port + 1}"]
    try:

        async def ready() -> bool:
            assert proc.poll() is None, (tmp_path / "demo.log").read_text()
            try:
                async with httpx.AsyncClient(timeout=2) as http:
                    answers = [await http.get(f"{s}/readyz") for s in servers]
            except httpx.HTTPError:
                return False
            return all(a.status_code == 200 for a in answers)

        await wait_until(ready, timeout=120, interval=0.5)
        ids = await asyncio.gather(*(_call_through(s) for s in servers))
        for server, call_id in zip(servers, ids, strict=True):

            async def priced(s: str = server, c: str = call_id) -> bool:
                async with httpx.AsyncClient(timeout=10) as http:
                    detail = await http.get(
                        f"{s}/api/admin/calls/{c}", headers={"Authorization": f"Bearer {admin}"}
                    )
                return detail.status_code == 200 and detail.json()["price"] is not None

            await wait_until(priced, timeout=60, interval=0.5)
        text = (tmp_path / "demo.log").read_text()
        assert f"server 2: {servers[1]}/" in " ".join(text.split())
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
        log.close()
    assert code == 0
    with socket.socket() as probe:  # the emulators stopped with it
        assert probe.connect_ex(("127.0.0.1", sandbox_port)) != 0
