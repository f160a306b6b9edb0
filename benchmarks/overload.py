"""Overload: a burst of call requests against one callbridge process, and what it leaves behind.

Starts the standalone sandbox (``callbridge sandbox``: Twilio and ElevenLabs emulators,
in their own process) and one ``callbridge serve`` pointed at it, on SQLite (or the
``--database-url`` given), with the quotas raised so that only the server's capacity
limits the burst. Then it sends ``--requests`` call requests spread evenly over
``--seconds`` (each a fresh ``GET /api/call/session`` and a ``POST /api/call/outbound``),
and follows every accepted call until Twilio (the emulator) has ended it and callbridge
has recorded its end, or until 60 s after Twilio ended it.

It prints:

* the answer time of ``POST /api/call/outbound`` (p50, p95, max), in all and by answer;
* how many requests were accepted, shed (503 ``overloaded``) or answered otherwise;
* how long after Twilio's end callbridge recorded each call's end (p50, p95, max), and
  how many calls were still not ended 60 s after Twilio ended them (the goal: 0).

Usage (from the repository, with its virtualenv)::

    .venv/bin/python benchmarks/overload.py --requests 400 --seconds 10
    .venv/bin/python benchmarks/overload.py --server-setting CALLBRIDGE_MAX_SETUPS_IN_FLIGHT=0

``--server-setting KEY=VALUE`` (repeatable) is passed to the server under test;
``CALLBRIDGE_MAX_SETUPS_IN_FLIGHT=0`` switches the overload gate off (the old behaviour).
Times are read on this machine's clock at one-second resolution for the call ends.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sqlite3
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from callbridge.bench.loadgen import bench_number
from callbridge.bench.procs import Managed, clean_env, free_port, python
from callbridge.bench.runner import LIFTED_LIMITS

_AGENT_ID = "agent_overload_bench"
_OURS_ENDED = {"completed", "busy", "no-answer", "canceled", "failed", "agent_failed"}
_TWILIO_ENDED = {"completed", "busy", "no-answer", "canceled", "failed"}
_STUCK_AFTER_S = 60.0


@dataclass
class Attempt:
    """One call request and what became of it."""

    index: int
    status: int = 0
    code: str = ""
    answer_s: float = 0.0
    call_id: str | None = None
    call_sid: str | None = None
    twilio_ended_at: float | None = None
    ours_ended_at: float | None = None


def _cli(argv: list[str]) -> list[str]:
    return [python(), "-c", "from callbridge.cli import main; main()", *argv]


async def _request(http: httpx.AsyncClient, base: str, attempt: Attempt, at: float) -> None:
    await asyncio.sleep(max(0.0, at - time.monotonic()))
    try:
        token = (await http.get(f"{base}/api/call/session")).json()["token"]
        started = time.monotonic()
        response = await http.post(
            f"{base}/api/call/outbound",
            json={"to_number": bench_number(attempt.index), "name": "Bench"},
            headers={"X-Callbridge-Token": token},
        )
        attempt.answer_s = time.monotonic() - started
    except httpx.HTTPError as exc:
        attempt.code = type(exc).__name__
        return
    attempt.status = response.status_code
    body: dict[str, Any] = response.json()
    if response.status_code == 200:
        attempt.call_id, attempt.call_sid = body["call_id"], body["call_sid"]
    else:
        attempt.code = str(body.get("error", {}).get("code", ""))


async def _follow(
    attempts: list[Attempt], sandbox: str, account_sid: str, auth: tuple[str, str], db: Path
) -> None:
    """Poll the emulator's calls and our database every second until every call is settled."""
    placed = [a for a in attempts if a.call_sid]
    by_sid = {a.call_sid: a for a in placed}
    url = f"{sandbox}/sandbox/twilio/2010-04-01/Accounts/{account_sid}/Calls.json"
    async with httpx.AsyncClient(auth=auth, timeout=30) as http:
        while True:
            now = time.time()
            listing = (await http.get(url, params={"PageSize": 1000})).json()
            for call in listing.get("calls", []):
                attempt = by_sid.get(call["sid"])
                if attempt and attempt.twilio_ended_at is None and call["status"] in _TWILIO_ENDED:
                    attempt.twilio_ended_at = now
            for call_id, status in await asyncio.to_thread(_our_statuses, db):
                for attempt in placed:
                    if attempt.call_id == call_id and attempt.ours_ended_at is None:
                        if status in _OURS_ENDED:
                            attempt.ours_ended_at = now
            pending = [
                a
                for a in placed
                if a.twilio_ended_at is None
                or (a.ours_ended_at is None and now - a.twilio_ended_at <= _STUCK_AFTER_S)
            ]
            if not pending:
                return
            await asyncio.sleep(1.0)


def _our_statuses(db: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
        return list(conn.execute("SELECT id, status FROM calls"))


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "max": None}
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * len(ordered))) - 1)]
    return {"p50": statistics.median(ordered), "p95": p95, "max": ordered[-1]}


def summarise(attempts: list[Attempt]) -> dict[str, Any]:
    """The figures of one run."""
    placed = [a for a in attempts if a.call_sid]
    lags = [
        a.ours_ended_at - a.twilio_ended_at
        for a in placed
        if a.ours_ended_at is not None and a.twilio_ended_at is not None
    ]
    stuck = [
        a
        for a in placed
        if a.twilio_ended_at is not None
        and (a.ours_ended_at is None or a.ours_ended_at - a.twilio_ended_at > _STUCK_AFTER_S)
    ]
    answers: dict[str, int] = {}
    for a in attempts:
        key = f"{a.status} {a.code}".strip() if a.status != 200 else "200"
        answers[key] = answers.get(key, 0) + 1
    return {
        "requests": len(attempts),
        "answers": answers,
        "accepted": len(placed),
        "shed": sum(1 for a in attempts if a.status == 503 and a.code == "overloaded"),
        "answer_s": _percentiles([a.answer_s for a in attempts if a.status]),
        "answer_s_accepted": _percentiles([a.answer_s for a in placed]),
        "answer_s_shed": _percentiles([a.answer_s for a in attempts if a.code == "overloaded"]),
        "end_lag_s": _percentiles(lags),
        "never_ended_by_twilio": sum(1 for a in placed if a.twilio_ended_at is None),
        "stuck_over_60s": len(stuck),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Start both processes, send the burst, follow the calls, return the figures."""
    workdir = Path(tempfile.mkdtemp(prefix="callbridge-overload-"))
    account_sid, auth_token = "AC" + secrets.token_hex(16), secrets.token_hex(16)
    sandbox_port, port = free_port(), free_port()
    sandbox, base = f"http://127.0.0.1:{sandbox_port}", f"http://127.0.0.1:{port}"
    db = workdir / "callbridge.db"
    vendor = {
        "TWILIO_ACCOUNT_SID": account_sid,
        "TWILIO_AUTH_TOKEN": auth_token,
        "ELEVENLABS_AGENT_ID": _AGENT_ID,
        "PUBLIC_BASE_URL": base,
        "CALLBRIDGE_SANDBOX_CALLEE": args.callee,
    }
    server_env = {
        **vendor,
        "CALLBRIDGE_SANDBOX": "true",
        "TWILIO_API_BASE_URL": f"{sandbox}/sandbox/twilio",
        "ELEVENLABS_API_BASE_URL": f"{sandbox}/sandbox/elevenlabs",
        "CALLBRIDGE_SECRET_KEY": secrets.token_hex(32),
        "DATABASE_URL": args.database_url or f"sqlite+aiosqlite:///{db}",
        **LIFTED_LIMITS,
        "CALLBRIDGE_QUIET_HOURS": "off",
        "CALLBRIDGE_DRAIN_SECONDS": "0",
        "CALLBRIDGE_LOG_FORMAT": "json",
        **dict(pair.split("=", 1) for pair in args.server_setting),
    }
    emulators = Managed(
        _cli(["sandbox", "--port", str(sandbox_port)]),
        env=clean_env(vendor),
        log=workdir / "sandbox.log",
        ready_port=sandbox_port,
    )
    server = Managed(
        _cli(["serve", "--port", str(port)]),
        env=clean_env(server_env),
        log=workdir / "server.log",
        ready_url=f"{base}/readyz",
    )
    attempts = [Attempt(index=i) for i in range(args.requests)]
    async with emulators, server:
        limits = httpx.Limits(max_connections=args.requests, max_keepalive_connections=64)
        async with httpx.AsyncClient(timeout=120, limits=limits) as http:
            start = time.monotonic() + 0.5
            step = args.seconds / args.requests
            async with asyncio.TaskGroup() as group:
                for attempt in attempts:
                    group.create_task(_request(http, base, attempt, start + attempt.index * step))
        if args.database_url is None:
            await _follow(attempts, sandbox, account_sid, (account_sid, auth_token), db)
    figures = summarise(attempts)
    figures["logs"] = str(workdir)
    return figures


def show(figures: dict[str, Any]) -> None:
    """Print the figures as a few readable lines."""

    def ms(p: dict[str, float | None]) -> str:
        return " / ".join("-" if v is None else f"{v * 1000:.0f} ms" for v in p.values())

    def s(p: dict[str, float | None]) -> str:
        return " / ".join("-" if v is None else f"{v:.0f} s" for v in p.values())

    print(f"requests            {figures['requests']}  answers {figures['answers']}")
    print(f"accepted / shed     {figures['accepted']} / {figures['shed']}")
    print(f"answer p50/p95/max  all {ms(figures['answer_s'])}")
    print(f"                    accepted {ms(figures['answer_s_accepted'])}")
    print(f"                    shed {ms(figures['answer_s_shed'])}")
    print(f"end lag p50/p95/max {s(figures['end_lag_s'])} (callbridge's end after Twilio's)")
    print(
        f"stuck > 60 s        {figures['stuck_over_60s']}"
        f"  (never ended by Twilio: {figures['never_ended_by_twilio']})"
    )
    print(f"logs                {figures['logs']}")


def main() -> None:
    """Parse the arguments, run once, print (and optionally write) the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--callee",
        default="answer=1,digits=1,hangup=4",
        help="CALLBRIDGE_SANDBOX_CALLEE for every call",
    )
    parser.add_argument(
        "--database-url", default=None, help="another database (call ends are then not followed)"
    )
    parser.add_argument(
        "--server-setting",
        action="append",
        default=[],
        help="KEY=VALUE for the server under test (repeatable)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    figures = asyncio.run(run(args))
    show(figures)
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
