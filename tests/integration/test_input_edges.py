"""Issue 11 §6: input at the edges — odd call ids, content types, control characters,
extensions — over real HTTP against the sandbox (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import unquote

import pytest
from sqlalchemy import event
from structlog.testing import capture_logs

from tests.integration.helpers import VISITOR, finished, place, wait_until
from tests.operator.conftest import ADMIN_ENV, TOKEN, signed_in
from tests.store.conftest import database_url, postgres_url  # noqa: F401 - fixtures
from tests.support.app import Sandbox, count_rows, running_sandbox

#: Ids no call can have: NUL, CR/LF, a space, a non-ASCII letter, a 65-character id.
_BAD_IDS = ["%00", "call_1%00", "call%0d%0aX-Injected:%201", "call%201", "call_%C3%A9", "c" * 65]


@contextmanager
def _parameters(sb: Sandbox) -> Iterator[list[Any]]:
    """The parameters of every SQL statement the app sends while the block runs (the
    app's background loops query too, so a lookup is told apart by what it asks for)."""
    seen: list[Any] = []

    def record(*args: Any) -> None:
        params = args[3]
        seen.extend(params.values() if isinstance(params, dict) else params)

    engine = sb.container.store.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


async def test_ids_not_shaped_like_a_call_id_are_404_without_a_query(database_url: str) -> None:  # noqa: F811
    """GET /api/call/{id}, its events and the admin API answer 404 not_found for an id with
    control characters (or too long), never look it up in the database and log no error,
    on SQLite and PostgreSQL. (PostgreSQL refuses NUL in text: without the shape check it
    answered 503 and logged an error.)"""
    async with running_sandbox(ADMIN_ENV, database_url=database_url) as sb:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        with capture_logs() as logs, _parameters(sb) as sql:
            for bad in _BAD_IDS:
                for path, headers in (
                    (f"/api/call/{bad}", {}),
                    (f"/api/call/{bad}/events", {}),
                    (f"/api/admin/calls/{bad}", auth),
                ):
                    response = await sb.http.get(path, headers=headers)
                    assert response.status_code == 404, (path, response.text)
                    assert response.json()["error"]["code"] == "not_found", path
        assert not {unquote(bad) for bad in _BAD_IDS} & {str(p) for p in sql}
        async with signed_in(sb) as admin:
            page = await admin.get("/admin/calls/%00")
            assert page.status_code == 404
        assert not [e for e in logs if e.get("log_level") in ("error", "critical")]


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",
        "text/plain;charset=UTF-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/json-patch+json",
        "application/json; charset=latin-1",
    ],
)
async def test_a_body_not_declared_as_json_is_415_and_nothing_is_recorded(
    content_type: str | None,
) -> None:
    """POST /api/call/outbound with a valid JSON body but another Content-Type (or none) is
    415 unsupported_media_type; no call is recorded or placed. (text/plain is what a
    cross-site form or a no-preflight fetch sends.)"""
    async with running_sandbox() as sb:
        headers = {"X-Callbridge-Token": await sb.token()}
        if content_type is not None:
            headers["Content-Type"] = content_type
        response = await sb.http.post(
            "/api/call/outbound",
            content=f'{{"to_number": "{VISITOR}"}}'.encode(),
            headers=headers,
        )
        assert response.status_code == 415, response.text
        body = response.json()
        assert body["success"] is False and body["error"]["code"] == "unsupported_media_type"
        assert await count_rows(sb, "calls") == 0
        assert sb.twilio.calls == {}


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", 'Application/JSON;charset="UTF-8"'],
)
async def test_json_with_or_without_a_utf8_charset_is_accepted(content_type: str) -> None:
    """application/json, with an optional UTF-8 charset in any case, places the call."""
    async with running_sandbox() as sb:
        headers = {"X-Callbridge-Token": await sb.token(), "Content-Type": content_type}
        response = await sb.http.post(
            "/api/call/outbound",
            content=f'{{"to_number": "{VISITOR}"}}'.encode(),
            headers=headers,
        )
        assert response.status_code == 200, response.text


async def test_control_characters_never_reach_the_store_or_the_agent() -> None:
    """CR/LF, ESC, NUL, NEL and U+2028 in name, reason and summary are stripped before the
    call is stored and before the agent gets them as dynamic variables; spaces and
    non-ASCII letters stay."""
    env = {"CALLBRIDGE_SANDBOX_CALLEE": "answer=0.2,digits=1,hangup=3"}
    async with running_sandbox(env) as sb:
        body = await place(
            sb,
            name="Zoë\r\nLovelace\x1b[2J",
            reason="a demo\x00\u2028please",
            summary="line one\nline two\x85end",
        )
        call = await sb.container.store.get_call(body["call_id"])
        assert call is not None
        assert call.context.visitor_name == "Zoë Lovelace[2J"
        assert call.context.reason == "a demo please"
        assert call.context.summary == "line one line two end"
        await wait_until(
            lambda: any(r.dynamic_variables for r in sb.elevenlabs.conversations.values()), 10
        )
        record = next(iter(sb.elevenlabs.conversations.values()))
        assert record.dynamic_variables["visitor_name"] == "Zoë Lovelace[2J"
        assert record.dynamic_variables["reason"] == "a demo please"
        assert record.dynamic_variables["web_chat_summary"] == "line one line two end"
        await finished(sb, body)


@pytest.mark.parametrize(
    "raw",
    [
        "tel:+1-234-567-8955;ext=1",
        "+1 234 567 8955 ext. 12",
        "+1 234 567 8955 x123",
        "(234) 567-8955 #7",
    ],
)
async def test_a_number_with_an_extension_is_refused_with_a_sentence(raw: str) -> None:
    """A number typed with an extension is 422 invalid_number saying extensions can't be
    dialled; nothing is recorded or placed (it used to dial the main line silently)."""
    async with running_sandbox() as sb:
        response = await sb.request_call(raw)
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["code"] == "invalid_number"
        assert "Extensions can't be dialled" in error["message"]
        assert await count_rows(sb, "calls") == 0
        assert sb.twilio.calls == {}
