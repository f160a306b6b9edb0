"""A media process asks Linux for a short CPU slice (callbridge.cpu_slice), as an operator runs it.

The real ``callbridge serve --role media`` runs in a subprocess; the slice is read where
the kernel shows it, ``/proc/PID/sched`` (``se.slice``, in nanoseconds).
"""

from __future__ import annotations

import asyncio
import os
import platform
import re
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from callbridge.cpu_slice import DEFAULT_SLICE_US, current_slice_ns
from callbridge.doctor import several_processes_missing
from callbridge.settings import load_settings
from tests.support.server import free_port
from tests.support.wait import wait_until

_EXE = str(Path(sys.executable).with_name("callbridge"))


def _slices_kept() -> bool:
    """Whether this kernel keeps a per-task slice (Linux 6.12+)."""
    match = re.match(r"(\d+)\.(\d+)", platform.release())
    return (
        sys.platform.startswith("linux")
        and match is not None
        and ((int(match[1]), int(match[2])) >= (6, 12))
    )


@asynccontextmanager
async def _media_process(tmp_path: Path, env: Mapping[str, str]) -> AsyncIterator[tuple[int, Path]]:
    """A `callbridge serve --role media` on SQLite, up (its /healthz answers); its pid and log."""
    port = free_port()
    log = tmp_path / "media.log"
    settings = {
        "CALLBRIDGE_SANDBOX": "true",
        "TWILIO_API_BASE_URL": "http://127.0.0.1:9",  # nothing is called here
        "ELEVENLABS_API_BASE_URL": "http://127.0.0.1:9",
        "CALLBRIDGE_SECRET_KEY": secrets.token_hex(32),
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/cb.db",
        "CALLBRIDGE_LOG_FORMAT": "json",
        **env,
    }
    with log.open("w") as out:
        process = await asyncio.create_subprocess_exec(
            *[_EXE, "serve", "--role", "media", "--host", "127.0.0.1", "--port", str(port)],
            env={**os.environ, **settings},
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        async with httpx.AsyncClient(timeout=1) as client:

            async def up() -> bool:
                assert process.returncode is None, log.read_text()
                try:
                    answer = await client.get(f"http://127.0.0.1:{port}/healthz")
                except httpx.TransportError:
                    return False
                return answer.status_code == 200

            await wait_until(up, timeout=60, interval=0.2)
        yield process.pid, log
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 30)


def _slice_ns(pid: int) -> int | None:
    for line in Path(f"/proc/{pid}/sched").read_text().splitlines():
        if line.startswith("se.slice"):
            return int(line.split(":")[1])
    return None


async def test_a_media_process_runs_its_loop_on_a_short_slice(tmp_path: Path) -> None:
    """By default the media process's event loop thread asks for a 0.1 ms slice: the
    kernel shows it (Linux 6.12+), or the process logs that it was not granted, and
    serves either way."""
    async with _media_process(tmp_path, {}) as (pid, log):
        if _slices_kept():
            assert _slice_ns(pid) == 100_000
            assert '"event": "media_slice"' in log.read_text()
        else:
            assert '"event": "media_slice_not_granted"' in log.read_text()


async def test_a_media_slice_of_zero_leaves_the_kernels_own(tmp_path: Path) -> None:
    """CALLBRIDGE_MEDIA_SLICE_US=0: no request, the process keeps the slice every task
    gets (this test process's, which asked for none)."""
    async with _media_process(tmp_path, {"CALLBRIDGE_MEDIA_SLICE_US": "0"}) as (pid, log):
        assert _slice_ns(pid) == current_slice_ns()
        assert "media_slice" not in log.read_text()


def test_the_doctor_says_when_the_kernel_keeps_no_slice(monkeypatch: pytest.MonkeyPatch) -> None:
    """The doctor's notes for several processes name the missing per-task slice only where
    the kernel keeps none (before Linux 6.12: the probe reads no slice). This kernel is
    asked for real; an older one can only be stood in for by the probe's answer."""
    settings = load_settings()
    assert settings.media_slice_us == DEFAULT_SLICE_US

    def noted() -> bool:
        return any("per-task CPU time slice" in f.text for f in several_processes_missing(settings))

    assert noted() is not _slices_kept()
    monkeypatch.setattr("callbridge.cpu_slice.current_slice_ns", lambda: None)
    assert noted()
    assert not any(f.blocking for f in several_processes_missing(settings) if "slice" in f.text)
    off = settings.model_copy(update={"media_slice_us": 0})
    assert not any("slice" in f.text for f in several_processes_missing(off))
