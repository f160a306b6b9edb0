"""Issue 5 §8: schemathesis against the app's own OpenAPI schema, over real HTTP.

Every documented HTTP operation gets generated requests, valid and invalid against
the schema (bounded: a handful of examples each, a few seconds in all). Call
requests carry a fresh, valid call token, so their bodies reach the number policy.
No answer may be a 5xx, and a request that is refused (4xx) must write nothing:
the row counts of every table and the Twilio emulator's calls are compared around
each one. Hypothesis on the number parser and the stream codec lives in
tests/policy and tests/media.
"""

from __future__ import annotations

import asyncio
import sqlite3
import warnings
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from tests.support.app import Sandbox, running_sandbox

_MAX_EXAMPLES = 10
_SKIP = {"/api/call/{call_id}/events"}  # an endless SSE stream for a live call
_TABLES = ("calls", "call_events", "do_not_call", "postcall_webhooks", "transcript_turns")


def _fuzz(sb: Sandbox, db_path: str) -> tuple[list[str], int]:
    """Run every operation's strategies in this thread; return the problems found."""
    base = sb.base_url
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    problems: list[str] = []
    sent = 0
    db = sqlite3.connect(db_path)

    def written() -> tuple[int, ...]:
        counts = [db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in _TABLES]  # noqa: S608
        return (*counts, len(sb.twilio.calls))

    def token() -> str:
        return str(httpx.get(f"{base}/api/call/session", timeout=10).json()["token"])

    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path in _SKIP:
            continue
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(
                max_examples=_MAX_EXAMPLES,
                deadline=None,
                derandomize=True,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(mode))
            def check(case: Any) -> None:
                nonlocal sent
                headers = {}
                if case.path == "/api/call/outbound":
                    headers["X-Callbridge-Token"] = token()
                before = written()
                response = case.call(base_url=base, headers=headers, timeout=10)
                sent += 1
                label = f"{case.method} {case.formatted_path} -> {response.status_code}"
                if response.status_code >= 500:
                    problems.append(label)
                elif response.status_code >= 400 and written() != before:
                    problems.append(f"{label} wrote something")

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    check()
                except Unsatisfiable:
                    continue  # nothing to make invalid in an operation without inputs
    db.close()
    return problems, sent


# GET|POST /api/call/twiml share one operation id (web/twilio_hooks.py, reported):
# FastAPI warns while building /openapi.json, and this suite turns warnings into errors.
@pytest.mark.filterwarnings("ignore:Duplicate Operation ID:UserWarning")
async def test_generated_requests_never_get_a_5xx_and_refusals_write_nothing(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Generated requests for every operation of /openapi.json get no 5xx, and every refused
    one leaves all tables and the emulator unchanged. (An unhandled parsing error would be
    a 500; a door that records before it checks would leave a row.)"""
    env = {
        "ELEVENLABS_WEBHOOK_SECRET": "wsec_0123456789abcdef0123456789",
        "CALLBRIDGE_ADMIN_TOKEN": "admin-" + "1" * 24,
        "CALLBRIDGE_SANDBOX_CALLEE": "busy",
    }
    async with running_sandbox(env, tmp_path=tmp_path) as sb:
        problems, sent = await asyncio.wait_for(
            asyncio.to_thread(_fuzz, sb, str(tmp_path / "cb.db")), 90
        )
        assert problems == []
        assert sent >= 30
