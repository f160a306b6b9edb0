"""Helpers for the operator's tests: a sandbox with a password and a token, a signed-in client."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Iterator, MutableMapping
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import structlog
from structlog.testing import capture_logs

from tests.support.app import Sandbox, running_sandbox

PASSWORD = "correct horse battery staple"
TOKEN = "adm-" + "t0ken" * 8
VISITOR = "+12025550143"
ADMIN_ENV = {"CALLBRIDGE_ADMIN_PASSWORD": PASSWORD, "CALLBRIDGE_ADMIN_TOKEN": TOKEN}
TERMINAL = {"completed", "busy", "no-answer", "canceled", "failed", "agent_failed"}

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    """The CSRF token of the first form on a page."""
    found = _CSRF.search(html)
    assert found, "no CSRF field on the page"
    return found.group(1)


@asynccontextmanager
async def admin_sandbox(
    tmp_path: Path, env: dict[str, str] | None = None
) -> AsyncIterator[Sandbox]:
    """The sandbox app with the operator's password and token set."""
    async with running_sandbox({**ADMIN_ENV, **(env or {})}, tmp_path=tmp_path) as sb:
        yield sb


@asynccontextmanager
async def signed_in(sb: Sandbox, password: str = PASSWORD) -> AsyncIterator[httpx.AsyncClient]:
    """A new client on ``sb`` that signed in through the login form."""
    async with httpx.AsyncClient(base_url=sb.base_url, timeout=20) as client:
        page = await client.get("/admin/login")
        response = await client.post(
            "/admin/login",
            data={"csrf": csrf_of(page.text), "password": password, "next": "/admin"},
        )
        assert response.status_code == 303, response.text
        yield client


async def finished_call(sb: Sandbox, within: float = 25.0, **fields: Any) -> dict[str, Any]:
    """Place a sandbox call, wait for its end and its terminal record; return the answer."""
    response = await sb.request_call(VISITOR, **fields)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    await sb.twilio.wait_for_end(body["call_sid"], within)
    deadline = time.monotonic() + 10
    while True:
        call = await sb.container.store.get_call(body["call_id"])
        if call is not None and call.status.value in TERMINAL:
            return body
        assert time.monotonic() < deadline, "the call record never ended"
        await asyncio.sleep(0.05)


@contextmanager
def info_logs() -> Iterator[list[MutableMapping[str, Any]]]:
    """Capture structlog events at info level and above (the suite keeps only warnings)."""
    saved = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
    try:
        with capture_logs() as logs:
            yield logs
    finally:
        structlog.configure(**saved)


# The browser fixtures (Debian's chromium through Playwright) are the visitor pages' ones.
from tests.browser.conftest import browser, chromium, console  # noqa: E402, F401
