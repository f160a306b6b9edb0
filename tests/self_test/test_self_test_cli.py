"""``callbridge call --self-test`` as a real process against ``callbridge serve`` (sandbox)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.server import free_port

EXE = Path(sys.executable).with_name("callbridge")
TARGET = "+12345678900"
ADMIN_TOKEN = "admin-token-" + "x" * 24


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """A running sandbox ``callbridge serve``, and the environment it was started with."""
    port = free_port()
    env = {
        **os.environ,
        "CALLBRIDGE_SANDBOX": "true",
        "TARGET_PHONE_NUMBER": TARGET,
        "CALLBRIDGE_ADMIN_TOKEN": ADMIN_TOKEN,
        "CALLBRIDGE_SANDBOX_CALLEE": "answer=1,digits=1,speak,hangup=8",
        "CALLBRIDGE_GREETING": "Hello, this is a test call.",
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/selftest.db",
        "CALLBRIDGE_SECRET_KEY": "s" * 32,
        "COLUMNS": "200",
    }
    proc = subprocess.Popen(  # noqa: S603 - our own script, fixed arguments
        [str(EXE), "serve", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, "callbridge serve exited"
            assert time.monotonic() < deadline, "callbridge serve did not start"
            time.sleep(0.1)
        yield base, env
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def run(env: dict[str, str], tmp: Path, *args: str) -> tuple[int, str, str]:
    done = subprocess.run(  # noqa: S603 - our own script, fixed arguments
        [str(EXE), *args], env=env, cwd=tmp, capture_output=True, text=True, timeout=120
    )
    return done.returncode, done.stdout, " ".join(done.stderr.split())


def test_the_self_test_walks_every_stage_and_is_marked_as_a_test(
    server: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    """One call to TARGET_PHONE_NUMBER: every stage has a time, the stored transcript and
    the price are printed, exit 0; the call list marks the call as a test."""
    base, env = server
    code, _out, err = run(env, tmp_path, "call", "--self-test", "--url", base, "--wait", "30")
    assert code == 0, err
    for stage in (
        "create",
        "ringing",
        "answer",
        "consent",
        "stream start",
        "first agent audio",
        "hang-up",
    ):
        assert f" {stage} " in err, err
    assert "did not happen" not in err, err
    assert "Transcript Agent:" in err, err
    assert "price: 0.014 USD" in err, err  # one format with the web (issue 16)
    assert TARGET not in err  # masked

    code, listed, err = run(env, tmp_path, "calls", "--json")
    assert code == 0, err
    rows = [json.loads(line) for line in listed.splitlines()]
    assert [(r["status"], r["test"]) for r in rows] == [("completed", True)]
    api = httpx.get(
        f"{base}/api/admin/calls", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    ).json()
    assert api["calls"][0]["test"] is True


def test_the_self_test_needs_the_admin_token_and_takes_no_number(
    server: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    """Without the right token the server refuses (exit 2); a number on the command line
    is refused before asking (the self-test only calls TARGET_PHONE_NUMBER); nothing is
    placed."""
    base, env = server
    code, _out, err = run(
        env | {"CALLBRIDGE_ADMIN_TOKEN": "wrong-token-" + "y" * 24},
        tmp_path,
        "call",
        "--self-test",
        "--url",
        base,
    )
    assert code == 2, err
    assert "refused (401)" in err, err
    code, _out, err = run(env, tmp_path, "call", "--self-test", "+12025550143", "--url", base)
    assert code == 2 and "give no number" in err, err
    listed = httpx.get(
        f"{base}/api/admin/calls", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    ).json()
    assert listed["calls"] == []


def test_the_self_test_is_refused_by_the_policy_like_any_call(
    server: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    """With the owner's number on the do-not-call list the self-test is refused with the
    policy's sentence (exit 2) and no call is placed."""
    base, env = server
    code, _out, err = run(env, tmp_path, "dnc", "add", TARGET)
    assert code == 0, err
    code, _out, err = run(env, tmp_path, "call", "--self-test", "--url", base)
    assert code == 2, err
    assert "refused (4" in err and TARGET not in err, err
    listed = httpx.get(
        f"{base}/api/admin/calls", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    ).json()
    assert listed["calls"] == []
