"""Sites missing from CALLBRIDGE_ALLOWED_ORIGINS: the server says so, and doctor shows
the origins in force. Real uvicorn on loopback, and ``callbridge doctor`` as a process."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from structlog.testing import capture_logs

from tests.support.app import running_sandbox

ALLOWED = "https://shop.example.com"


async def test_a_refused_origin_is_logged_once_with_the_setting_to_change() -> None:
    """A call-token request from a site not on the list is refused 403 and logged, naming
    the origin and CALLBRIDGE_ALLOWED_ORIGINS; the same site again is refused without a
    second line, another site gets its own; an allowed site logs nothing."""
    async with running_sandbox({"CALLBRIDGE_ALLOWED_ORIGINS": ALLOWED}) as sb:
        with capture_logs() as logs:
            for origin in (
                "https://blog.example.net",
                "https://blog.example.net",
                "https://other.example.org",
                ALLOWED,
            ):
                response = await sb.http.get("/api/call/session", headers={"Origin": origin})
                expected = 200 if origin == ALLOWED else 403
                assert response.status_code == expected, response.text
            response = await sb.http.post(
                "/api/call/outbound",
                json={"to_number": "+12015550123"},
                headers={"Origin": "https://blog.example.net"},
            )
            assert response.status_code == 403
    refused = [e for e in logs if e["event"] == "origin_refused"]
    assert [e["origin"] for e in refused] == [
        "https://blog.example.net",
        "https://other.example.org",
    ]
    assert all("CALLBRIDGE_ALLOWED_ORIGINS" in e["fix"] for e in refused)
    assert ALLOWED in refused[0]["allowed"]
    assert all(e["log_level"] == "warning" for e in refused)


async def test_doctor_shows_the_origins_in_force(tmp_path: Path) -> None:
    """``callbridge doctor`` lists the sites that may ask for calls: the configured ones,
    callbridge's own and, in the sandbox, its loopback aliases."""
    env = {
        **os.environ,
        "CALLBRIDGE_SANDBOX": "true",
        "CALLBRIDGE_ALLOWED_ORIGINS": f"{ALLOWED},https://blog.example.net",
        "PUBLIC_BASE_URL": "http://127.0.0.1:8000",
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/cb.db",
    }
    cli = str(Path(sys.executable).with_name("callbridge"))
    process = await asyncio.create_subprocess_exec(
        cli,
        "doctor",
        env=env,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    text = output.decode()
    line = next(x for x in text.splitlines() if x.startswith("sites that may ask for calls"))
    for origin in (
        ALLOWED,
        "https://blog.example.net",
        "http://127.0.0.1:8000",
        "http://localhost:8000",
    ):
        assert origin in line, text
