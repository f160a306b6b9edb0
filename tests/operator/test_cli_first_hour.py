"""Issue 16, the CLI: what a newcomer types in a terminal, each run as a real process."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from callbridge.ports import TranscriptTurn
from callbridge.sandbox.elevenlabs.agent import STAND_IN_TRANSCRIPT
from tests.operator.seed import NOW, seed
from tests.support.app import running_sandbox
from tests.support.server import free_port

EXE = str(Path(sys.executable).with_name("callbridge"))
_SCRUBBED = ("CALLBRIDGE_", "TWILIO_", "ELEVENLABS_", "PUBLIC_BASE_URL", "NEXT_PUBLIC_APP_URL")


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The process's environment: nothing of ours inherited, a narrow terminal, no .env."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED)}
    env.update({"COLUMNS": "80", "TZ": "UTC", "PYTHONUNBUFFERED": "1", **extra})
    env.setdefault("DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path}/cli.db")
    return env


def _run(tmp_path: Path, *args: str, timeout: float = 60, **env: str) -> tuple[int, str]:
    done = subprocess.run(  # noqa: S603 - our own script, fixed arguments
        [EXE, *args],
        env=_env(tmp_path, **env),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return done.returncode, done.stdout + done.stderr


async def _call(tmp_path: Path, base_url: str) -> tuple[int | None, str]:
    """``callbridge call +1 234 567 8900 --url BASE_URL`` without blocking the loop that
    serves the in-process sandbox: its exit code and output."""
    process = await asyncio.create_subprocess_exec(
        EXE,
        "call",
        "+1 234 567 8900",
        "--url",
        base_url,
        env=_env(tmp_path),
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    raw, _ = await asyncio.wait_for(process.communicate(), 90)
    return process.returncode, raw.decode()


@pytest.fixture
def seeded_db(tmp_path: Path) -> str:
    """The operator seed (four calls, ids ``call_alice_old`` … ``call_bob_new``), with a
    callee turn that is a bracketed stand-in text, as the sandbox's agent writes it."""

    async def make() -> str:
        s = await seed(tmp_path)
        await s.store.add_turn(
            TranscriptTurn(
                call_id=s.bob_new,
                role="user",
                text="[caller spoke for 1.2 s]",
                at=NOW - timedelta(hours=2) + timedelta(seconds=20),
            )
        )
        await s.store.aclose()
        return s.url

    return asyncio.run(make())


def test_call_without_url_and_nothing_listening_says_to_start_the_demo(tmp_path: Path) -> None:
    """``callbridge call`` with no ``--url`` and no server says to start ``make demo`` or
    pass ``--url``, naming the address it tried, and exits 2."""
    base = f"http://127.0.0.1:{free_port()}"
    code, out = _run(tmp_path, "call", "+1 234 567 8900", PUBLIC_BASE_URL=base)
    text = " ".join(out.split())
    assert code == 2, out
    assert f"could not reach {base}: is `make demo` running? Start it, or pass --url" in text
    assert "ConnectError" not in text


async def test_call_prints_initiated_and_each_turn_as_it_is_spoken(tmp_path: Path) -> None:
    """Right after ``make demo`` (the sandbox, no operator token anywhere), ``callbridge
    call`` prints ``initiated`` and, between ``in-progress`` and ``completed``, what the
    agent said and the callee's stand-in transcript, as they happen."""
    async with running_sandbox(
        {"CALLBRIDGE_SANDBOX_CALLEE": "answer=0.2,digits=1,speak,hangup=6"}, tmp_path=tmp_path
    ) as sb:
        code, out = await _call(tmp_path, sb.base_url)
    assert code == 0, out
    text = " ".join(out.split())  # the terminal is 80 columns: long turns wrap
    found = [
        re.search(pattern, text)
        for pattern in (
            r"\binitiated\b",
            r"\bringing\b",
            r"\bin-progress\b",
            r"Agent: \w",
            "Callee: " + re.escape(STAND_IN_TRANSCRIPT),
            r"\bcompleted\b",
        )
    ]
    assert all(found), out
    order = [m.start() for m in found if m is not None]
    assert order == sorted(order), out
    assert not re.search(r"Callee:\s*$", out, re.MULTILINE), out
    assert re.search(r"\d\d:\d\d:\d\d\+00:00\s+initiated", out), "local time with its offset"


def test_calls_keeps_ids_whole_and_show_takes_a_unique_prefix(
    tmp_path: Path, seeded_db: str
) -> None:
    """At 80 columns ``callbridge calls`` prints every id whole; ``calls show`` takes any
    unique start of one, and a start shared by several ids exits 2 naming them."""
    code, listing = _run(tmp_path, "calls", "--limit", "10", DATABASE_URL=seeded_db)
    assert code == 0, listing
    for call_id in ("call_alice_old", "call_alice_new", "call_bob_old", "call_bob_new"):
        assert re.search(rf"^{call_id}\s", listing, re.MULTILINE), listing
    code, shown = _run(tmp_path, "calls", "show", "call_bob_n", DATABASE_URL=seeded_db)
    assert code == 0, shown
    assert shown.startswith("call_bob_new"), shown
    code, ambiguous = _run(tmp_path, "calls", "show", "call_alice", DATABASE_URL=seeded_db)
    text = " ".join(ambiguous.split())
    assert code == 2, ambiguous
    assert "call_alice_old" in text and "call_alice_new" in text and "several" in text
    code, missing = _run(tmp_path, "calls", "show", "call_carol", DATABASE_URL=seeded_db)
    assert code == 2 and "no call" in missing, missing


def test_an_unknown_status_exits_2_and_lists_the_valid_ones(tmp_path: Path, seeded_db: str) -> None:
    """``calls --status bogus`` lists nothing, exits 2 and names every valid status and
    outcome; a valid one still lists."""
    code, out = _run(tmp_path, "calls", "--status", "bogus", DATABASE_URL=seeded_db)
    text = " ".join(out.split())
    assert code == 2, out
    for value in ("requested", "in-progress", "completed", "no-answer", "opted_out", "no_consent"):
        assert value in text, text
    assert "call_alice" not in out
    code, out = _run(tmp_path, "calls", "--status", "completed", DATABASE_URL=seeded_db)
    assert code == 0 and "call_alice_new" in out, out


def test_calls_show_prints_every_spoken_turn_and_the_shared_price(
    tmp_path: Path, seeded_db: str
) -> None:
    """The transcript has no empty "Callee:" line (a bracketed stand-in text is shown as
    text), and the price reads as on the web: ``0.013 USD``, not Twilio's ``-0.0130``."""
    code, out = _run(tmp_path, "calls", "show", "call_bob_new", DATABASE_URL=seeded_db)
    assert code == 0, out
    assert "Callee: [caller spoke for 1.2 s]" in out, out
    assert "Callee: About my order." in out
    assert not re.search(r"Callee:\s*$", out, re.MULTILINE), out
    assert re.search(r"price\s+0\.013 USD", out), out
    assert "-0.0130" not in out
    assert "+00:00" in out  # times in the terminal's zone, with the offset


def test_doctor_after_make_demo_finds_nothing_wrong(tmp_path: Path) -> None:
    """In the sandbox (what ``make demo`` runs) no operator password is asked for:
    ``doctor`` exits 0."""
    code, out = _run(tmp_path, "doctor")
    assert code == 0, out
    assert "ADMIN_PASSWORD nor" not in " ".join(out.split())
    assert "no problems found" in out


def test_doctor_lists_every_production_problem_at_once(tmp_path: Path) -> None:
    """With real credentials but much missing, ``doctor`` names every problem in one run
    and exits 1."""
    code, out = _run(
        tmp_path,
        "doctor",
        TWILIO_ACCOUNT_SID="AC" + "0" * 32,
        TWILIO_AUTH_TOKEN="x" * 32,
        PUBLIC_BASE_URL="http://calls.example.com",
    )
    text = " ".join(out.split())
    assert code == 1, out
    for problem in (
        "PUBLIC_BASE_URL must start with https://",
        "TWILIO_PHONE_NUMBER is not set",
        "ELEVENLABS_AGENT_ID is not set",
        "ELEVENLABS_WEBHOOK_SECRET is not set",
        "CALLBRIDGE_ALLOWED_ORIGINS is empty",
        "Neither CALLBRIDGE_ADMIN_PASSWORD nor CALLBRIDGE_ADMIN_TOKEN is set",
    ):
        assert problem in text, (problem, text)


def test_the_demo_banner_keeps_each_command_on_one_line(tmp_path: Path) -> None:
    """At 80 columns, the banner of ``callbridge demo`` prints the ``callbridge call …
    --url`` command whole on one line, so it can be copied."""
    port = free_port()
    process = subprocess.Popen(  # noqa: S603 - our own script, fixed arguments
        [EXE, "demo", "--port", str(port)],
        env=_env(tmp_path),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen: list[str] = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            seen.append(line)
            if "Place a call" in line:
                break
    finally:
        process.terminate()
        process.wait(timeout=30)
    banner = "".join(seen)
    command = f'callbridge call "+1 234 567 8900" --url http://127.0.0.1:{port}'
    assert any(command in line for line in seen), banner


async def test_call_without_the_operator_token_still_follows_the_statuses(
    tmp_path: Path,
) -> None:
    """Where the server has an operator token and the terminal does not, ``callbridge
    call`` follows the statuses to the end and says how to see the turns."""
    async with running_sandbox(
        {
            "CALLBRIDGE_ADMIN_TOKEN": "adm-" + "t0ken" * 8,
            "CALLBRIDGE_SANDBOX_CALLEE": "answer=0.2,digits=1,hangup=2",
        },
        tmp_path=tmp_path,
    ) as sb:
        code, out = await _call(tmp_path, sb.base_url)
    assert code == 0, out
    assert "set CALLBRIDGE_ADMIN_TOKEN" in " ".join(out.split())
    assert re.search(r"\bin-progress\b", out) and re.search(r"\bcompleted\b", out), out
    assert "Agent:" not in out
