"""security.md F.42: conversations whose post-call webhook never came are fetched instead.

Each pass is driven by calling :meth:`PostCallReconciler.run_once` with a time ``X``
minutes (or more) after the call ended, instead of waiting for the timer.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from pydantic import SecretStr

from callbridge.adapters.db.postcall import SqlPostCallRecords
from callbridge.adapters.db.postcall_fetches import SqlPostCallFetches
from callbridge.adapters.elevenlabs.conversations import ElevenLabsConversations
from callbridge.bootstrap import build
from callbridge.errors import ErrorCategory, NotFound, ProtocolError, ProviderError
from callbridge.services.postcall import PostCallService
from callbridge.services.postcall_reconcile import PostCallReconciler
from callbridge.settings import Settings
from tests.security.helpers import NUMBERS, count_rows, ended, wait_until
from tests.store.conftest import database_url, postgres_url  # noqa: F401 - fixtures
from tests.support.app import Sandbox, running_sandbox

SECRET = "wsec_0123456789abcdef0123456789abcdef"
ENV = {
    "ELEVENLABS_WEBHOOK_SECRET": SECRET,
    "CALLBRIDGE_SANDBOX_CALLEE": "answer=0.2,digits=1,speak,hangup=2",
}
LATER = timedelta(minutes=11)  # past the default X = 10 minutes


async def _bridged_call(sb: Sandbox, number: str) -> tuple[str, str]:
    """Place a sandbox call that reaches the agent and ends; its call and conversation ids."""
    response = await sb.request_call(number)
    assert response.status_code == 200, response.text
    call_id = response.json()["call_id"]
    await ended(sb, call_id, timeout=30)

    async def conversation() -> str | None:
        call = await sb.container.store.get_call(call_id)
        return call.agent_conversation_id if call is not None else None

    conversation_id = await wait_until(conversation)
    record = sb.elevenlabs.conversations[conversation_id]
    await wait_until(lambda: record.ended_at is not None)
    await wait_until(
        lambda: (
            conversation_id in sb.elevenlabs.dropped_webhooks
            or any(c == conversation_id for c, _ in sb.elevenlabs.webhook_deliveries)
        )
    )
    return call_id, conversation_id


def _reconciler(sb: Sandbox) -> PostCallReconciler:
    reconciler = sb.container.jobs.postcall_reconciler
    assert isinstance(reconciler, PostCallReconciler)
    return reconciler


def _fetched(sb: Sandbox, conversation_id: str) -> int:
    return sb.elevenlabs.conversations_api.requests.count(conversation_id)


def _metric(sb: Sandbox, outcome: str) -> float:
    registry = sb.container.metrics.registry
    value = registry.get_sample_value("callbridge_postcall_reconciled_total", {"outcome": outcome})
    return float(value or 0.0)


async def _event_type(sb: Sandbox, conversation_id: str) -> str:
    async with sb.container.store.engine.connect() as conn:
        from sqlalchemy import text

        result = await conn.execute(
            text("SELECT event_type FROM postcall_webhooks WHERE conversation_id = :c"),
            {"c": conversation_id},
        )
        return str(result.scalar_one())


async def test_f42_a_lost_webhook_is_fetched_and_a_late_one_changes_nothing() -> None:
    """A call whose webhook was lost gets nothing before X minutes; after X, one pass
    fetches the conversation and attaches its analysis and transcript, exactly as the
    webhook would; the webhook arriving late afterwards is acknowledged and changes
    nothing, and the conversation is not fetched again."""
    async with running_sandbox(ENV) as sb:
        sb.elevenlabs.suppress_webhooks = True
        call_id, conversation_id = await _bridged_call(sb, NUMBERS[0])
        store, postcall = sb.container.store, sb.container.postcall
        reconciler = _reconciler(sb)
        assert sb.elevenlabs.dropped_webhooks == [conversation_id]

        assert sum((await reconciler.run_once()).values()) == 0  # within X: not yet
        assert _fetched(sb, conversation_id) == 0
        call = await store.get_call(call_id)
        assert call is not None and call.analysis is None

        outcomes = await reconciler.run_once(datetime.now(UTC) + LATER)
        assert outcomes == {"attached": 1}
        assert _fetched(sb, conversation_id) == 1
        call = await store.get_call(call_id)
        assert call is not None and call.analysis is not None
        analysis = json.loads(call.analysis)
        assert analysis["conversation_id"] == conversation_id and analysis["status"] == "done"
        assert analysis["analysis"]["call_successful"] in ("success", "unknown")
        record = sb.elevenlabs.conversations[conversation_id]
        spoken = [(t.role, t.message) for t in record.transcript if t.message]
        turns = await store.turns(call_id)
        assert [(t.role, t.text) for t in turns] == spoken and spoken
        assert await _event_type(sb, conversation_id) == "conversation_fetch"
        received = [e for e in await store.events(call_id) if e.status == "postcall_received"]
        assert [e.detail["via"] for e in received] == ["conversation_fetch"]
        assert _metric(sb, "attached") == 1.0
        assert postcall.processed == 1

        assert await sb.elevenlabs.send_webhook(conversation_id) == 200  # the late webhook
        await asyncio.sleep(0.2)
        await postcall.drain()
        assert postcall.processed == 1
        assert [(t.role, t.text) for t in await store.turns(call_id)] == spoken
        assert await count_rows(sb, "postcall_webhooks") == 1
        assert await _event_type(sb, conversation_id) == "conversation_fetch"

        assert sum((await reconciler.run_once(datetime.now(UTC) + 2 * LATER)).values()) == 0
        assert _fetched(sb, conversation_id) == 1


async def test_f42_a_delivered_webhook_leaves_nothing_to_fetch() -> None:
    """When the webhook came, the call is never fetched; and a fetch that loses the race
    to the webhook's claim processes nothing a second time."""
    async with running_sandbox(ENV) as sb:
        call_id, conversation_id = await _bridged_call(sb, NUMBERS[1])
        postcall = sb.container.postcall
        await wait_until(lambda: postcall.processed == 1)
        turns = len(await sb.container.store.turns(call_id))
        assert turns > 0

        assert sum((await _reconciler(sb).run_once(datetime.now(UTC) + LATER)).values()) == 0
        assert _fetched(sb, conversation_id) == 0
        data = sb.elevenlabs.conversations_api.details(sb.elevenlabs.conversations[conversation_id])
        assert await postcall.accept_fetched(conversation_id, data) is False
        assert postcall.processed == 1
        assert len(await sb.container.store.turns(call_id)) == turns
        assert await _event_type(sb, conversation_id) == "post_call_transcription"


async def test_f42_a_processing_conversation_is_fetched_again_later() -> None:
    """A conversation still ``processing`` is left alone and fetched again after a back-off
    (not before); once ``done`` it is attached."""
    async with running_sandbox(ENV) as sb:
        sb.elevenlabs.suppress_webhooks = True
        call_id, conversation_id = await _bridged_call(sb, NUMBERS[2])
        sb.elevenlabs.conversations_api.status_overrides[conversation_id] = "processing"
        reconciler = _reconciler(sb)
        first = datetime.now(UTC) + LATER

        assert await reconciler.run_once(first) == {"pending": 1}
        call = await sb.container.store.get_call(call_id)
        assert call is not None and call.analysis is None
        assert sum((await reconciler.run_once(first + timedelta(seconds=30))).values()) == 0
        assert _fetched(sb, conversation_id) == 1

        del sb.elevenlabs.conversations_api.status_overrides[conversation_id]
        assert await reconciler.run_once(first + timedelta(minutes=2)) == {"attached": 1}
        assert _fetched(sb, conversation_id) == 2
        call = await sb.container.store.get_call(call_id)
        assert call is not None and call.analysis is not None
        assert _metric(sb, "pending") == 1.0 and _metric(sb, "attached") == 1.0


async def test_f42_missing_or_failed_conversations_stop_after_a_bounded_number_of_tries() -> None:
    """A conversation ElevenLabs does not know (404) is fetched ``max_attempts`` times with
    growing gaps and then given up; a ``failed`` one is fetched once. Both are recorded on
    the call's timeline and in a warning bound to the call, and never fetched again."""
    async with running_sandbox(ENV) as sb:
        sb.elevenlabs.suppress_webhooks = True
        missing_call, missing = await _bridged_call(sb, NUMBERS[3])
        failed_call, failed = await _bridged_call(sb, NUMBERS[4])
        del sb.elevenlabs.conversations[missing]
        sb.elevenlabs.conversations_api.status_overrides[failed] = "failed"
        reconciler = _reconciler(sb)
        now = datetime.now(UTC) + LATER

        with structlog.testing.capture_logs(
            processors=[structlog.contextvars.merge_contextvars]
        ) as logs:
            assert await reconciler.run_once(now) == {"not_found": 1, "failed": 1}
            for _ in range(reconciler.max_attempts + 2):
                now += timedelta(hours=2)
                await reconciler.run_once(now)
        assert _fetched(sb, missing) == reconciler.max_attempts
        assert _fetched(sb, failed) == 1
        assert _metric(sb, "gave_up") == 1.0 and _metric(sb, "failed") == 1.0
        assert _metric(sb, "not_found") == reconciler.max_attempts
        for call_id, conversation_id, outcome in (
            (missing_call, missing, "not_found"),
            (failed_call, failed, "failed"),
        ):
            unavailable = [
                e
                for e in await sb.container.store.events(call_id)
                if e.status == "postcall_unavailable"
            ]
            assert len(unavailable) == 1
            assert unavailable[0].detail["conversation_id"] == conversation_id
            assert unavailable[0].detail["outcome"] == outcome
            warned = [
                e
                for e in logs
                if e["event"] == "postcall_unavailable" and e.get("call_id") == call_id
            ]
            assert len(warned) == 1 and warned[0]["outcome"] == outcome
        assert await count_rows(sb, "postcall_fetches", "WHERE settled_at IS NOT NULL") == 2
        call = await sb.container.store.get_call(missing_call)
        assert call is not None and call.analysis is None


async def test_f42_refused_credentials_stop_the_pass_without_using_up_attempts() -> None:
    """When ElevenLabs refuses the API key, the pass stops at the first conversation and
    no attempt is counted; with the key accepted again, both conversations are attached
    (the refused one once its lease has run out)."""
    async with running_sandbox({**ENV, "ELEVENLABS_API_KEY": "sk_callbridge"}) as sb:
        sb.elevenlabs.suppress_webhooks = True
        first_call, _ = await _bridged_call(sb, NUMBERS[6])
        second_call, _ = await _bridged_call(sb, NUMBERS[7])
        reconciler = _reconciler(sb)
        now = datetime.now(UTC) + LATER

        sb.elevenlabs.api_key = "sk_rotated"
        assert await reconciler.run_once(now) == {"refused": 1}
        assert await count_rows(sb, "postcall_fetches") == 1
        assert await count_rows(sb, "postcall_fetches", "WHERE attempts = 0") == 1

        sb.elevenlabs.api_key = "sk_callbridge"
        assert await reconciler.run_once(now + timedelta(minutes=1)) == {"attached": 1}
        assert await reconciler.run_once(now + timedelta(minutes=6)) == {"attached": 1}
        for call_id in (first_call, second_call):
            call = await sb.container.store.get_call(call_id)
            assert call is not None and call.analysis is not None


async def test_f42_two_processes_on_one_database_process_a_conversation_once(
    database_url: str,  # noqa: F811 - the fixture imported above
) -> None:
    """Two reconcilers with their own post-call services (two servers on one database,
    SQLite or PostgreSQL) run a pass at the same moment: the conversation is fetched by
    one and processed once."""
    async with running_sandbox(ENV, database_url=database_url) as sb:
        sb.elevenlabs.suppress_webhooks = True
        call_id, conversation_id = await _bridged_call(sb, NUMBERS[5])
        c = sb.container
        twin_postcall = PostCallService(
            secret=SECRET,
            calls=c.store,
            records=SqlPostCallRecords(c.store.engine),
            clock=c.clock,
        )
        twin = PostCallReconciler(
            fetches=SqlPostCallFetches(c.store.engine),
            history=ElevenLabsConversations(
                api_base_url=c.elevenlabs_base_url, api_key=None, http=c.http
            ),
            postcall=twin_postcall,
            store=c.store,
            clock=c.clock,
            metrics=None,
            after=timedelta(minutes=10),
        )
        now = datetime.now(UTC) + LATER
        results = await asyncio.gather(_reconciler(sb).run_once(now), twin.run_once(now))
        assert sum(r["attached"] for r in results) == 1
        assert _fetched(sb, conversation_id) == 1
        assert c.postcall.processed + twin_postcall.processed == 1
        spoken = [t for t in sb.elevenlabs.conversations[conversation_id].transcript if t.message]
        assert len(await c.store.turns(call_id)) == len(spoken)
        assert await count_rows(sb, "postcall_webhooks") == 1


class TestConversationsAdapter:
    """The production adapter maps every answer of the Conversations API."""

    @staticmethod
    async def _fetch(handler: Any) -> Any:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
            adapter = ElevenLabsConversations(
                api_base_url="https://api.elevenlabs.io/", api_key="sk_x", http=http
            )
            return await adapter.fetch_conversation("conv_1")

    async def test_details_become_the_webhook_data_shape(self) -> None:
        """GET …/conversations/conv_1 with ``xi-api-key``; the API-only fields are dropped."""
        seen: list[httpx.Request] = []

        def handler(request: httpx.Request) -> httpx.Response:
            seen.append(request)
            return httpx.Response(
                200,
                json={
                    "conversation_id": "conv_1",
                    "agent_id": "agent_1",
                    "status": "processing",
                    "transcript": [],
                    "metadata": {"start_time_unix_secs": 1},
                    "analysis": None,
                    "has_auxiliary_audio": False,
                    "agent_name": "x",
                },
            )

        conversation = await self._fetch(handler)
        assert str(seen[0].url) == "https://api.elevenlabs.io/v1/convai/conversations/conv_1"
        assert seen[0].headers["xi-api-key"] == "sk_x"
        assert conversation.status == "processing"
        assert set(conversation.data) == {
            "conversation_id",
            "agent_id",
            "status",
            "transcript",
            "metadata",
            "analysis",
        }

    @pytest.mark.parametrize(
        ("status", "category"),
        [
            (401, ErrorCategory.AUTH),
            (403, ErrorCategory.AUTH),
            (429, ErrorCategory.RATE_LIMIT),
            (500, ErrorCategory.SERVER),
            (422, ErrorCategory.CLIENT),
        ],
    )
    async def test_refusals_become_provider_errors(
        self, status: int, category: ErrorCategory
    ) -> None:
        """Refusals are ProviderErrors whose category decides retrying."""
        with pytest.raises(ProviderError) as caught:
            await self._fetch(lambda _r: httpx.Response(status, json={"detail": {}}))
        assert caught.value.category is category and caught.value.upstream_status == status

    async def test_404_timeouts_and_garbage(self) -> None:
        """404 is NotFound; no answer is a TIMEOUT/NETWORK ProviderError; a body that is
        not this conversation is a ProtocolError."""
        with pytest.raises(NotFound):
            await self._fetch(lambda _r: httpx.Response(404, json={"detail": {}}))

        def timeout(request: httpx.Request) -> httpx.Response:
            raise httpx.ReadTimeout("slow", request=request)

        def refused(request: httpx.Request) -> httpx.Response:
            raise httpx.ConnectError("refused", request=request)

        for handler, category in (
            (timeout, ErrorCategory.TIMEOUT),
            (refused, ErrorCategory.NETWORK),
        ):
            with pytest.raises(ProviderError) as caught:
                await self._fetch(handler)
            assert caught.value.category is category
        for body in (
            b"not json",
            b"[]",
            b'{"conversation_id": "conv_2", "status": "done"}',
            b'{"conversation_id": "conv_1"}',
        ):
            with pytest.raises(ProtocolError):
                await self._fetch(lambda _r, b=body: httpx.Response(200, content=b))


def _settings(folder: Path, **values: Any) -> Settings:
    base: dict[str, Any] = {
        "twilio_account_sid": "AC" + "0" * 32,
        "twilio_auth_token": SecretStr("token"),
        "twilio_phone_number": "+12025550100",
        "elevenlabs_agent_id": "agent_1",
        "public_base_url": "https://calls.example.com",
        "database_url": f"sqlite+aiosqlite:///{folder}/cb.db",
    }
    return Settings(_env_file=None, **{**base, **values})  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"elevenlabs_api_key": SecretStr("sk_x")}, timedelta(minutes=10)),
        (
            {"elevenlabs_api_key": SecretStr("sk_x"), "postcall_reconcile_minutes": 3},
            timedelta(minutes=3),
        ),
        ({"elevenlabs_api_key": SecretStr("sk_x"), "postcall_reconcile_minutes": 0}, None),
        ({}, None),  # no API key to fetch with, outside the sandbox
    ],
)
async def test_f42_the_job_is_configured_by_its_setting(
    values: dict[str, Any], expected: timedelta | None, tmp_path: Path
) -> None:
    """CALLBRIDGE_POSTCALL_RECONCILE_MINUTES is X (default 10); 0 disables the job, and so
    does the lack of ELEVENLABS_API_KEY outside the sandbox."""
    container = build(_settings(tmp_path, **values))
    try:
        reconciler = container.jobs.postcall_reconciler
        assert (reconciler.after if reconciler is not None else None) == expected
    finally:
        await container.aclose()
