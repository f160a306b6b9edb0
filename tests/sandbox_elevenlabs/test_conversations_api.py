"""The emulator's Conversations API, read by the official elevenlabs SDK over real HTTP."""

from __future__ import annotations

import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect

from callbridge.media.agent_protocol import AgentCodec
from callbridge.sandbox.elevenlabs.emulator import ElevenLabsEmulator
from tests.sandbox_elevenlabs.conftest import (
    AGENT_ID,
    API_KEY,
    MOUNT,
    make_emulator,
    mounted,
    wait_until,
    webhook_receiver,
)
from tests.support.contract import divergences
from tests.support.server import serve

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from elevenlabs import AsyncElevenLabs
    from elevenlabs.core.api_error import ApiError
    from elevenlabs.errors import UnprocessableEntityError
    from elevenlabs.types import GetConversationResponseModel, GetConversationsPageResponseModel

SECRET = "wsec_0123456789abcdef"


async def _recv_until(ws: ClientConnection, kind: str) -> dict[str, Any]:
    while True:
        message: dict[str, Any] = orjson.loads(await ws.recv())
        if message["type"] == "ping":
            await ws.send(AgentCodec.pong(message["ping_event"]["event_id"]))
        if message["type"] == kind:
            return message


@asynccontextmanager
async def _talk(base: str, **variables: Any) -> AsyncIterator[ClientConnection]:
    """Open a conversation, wait for the greeting, type one message, hear the answer."""
    url = base.replace("http", "ws") + f"/v1/convai/conversation?agent_id={AGENT_ID}"
    async with connect(url) as ws:
        await ws.send(AgentCodec.initiation({"visitor_name": "Lin", **variables}))
        await _recv_until(ws, "agent_response")
        await ws.send(AgentCodec.user_message("Call me back tomorrow"))
        await _recv_until(ws, "agent_response")
        yield ws


async def _ended(emulator: ElevenLabsEmulator, count: int) -> list[str]:
    await wait_until(
        lambda: (
            len(emulator.conversations) == count
            and all(r.ended_at is not None for r in emulator.conversations.values())
        )
    )
    return list(emulator.conversations)


@pytest.fixture
async def served() -> AsyncIterator[tuple[ElevenLabsEmulator, str]]:
    emulator = make_emulator()
    async with serve(mounted(emulator)) as base:
        yield emulator, base + MOUNT


async def test_conversation_details_validate_against_the_sdk_model(
    served: tuple[ElevenLabsEmulator, str],
) -> None:
    """GET /v1/convai/conversations/{id} answers what the SDK's strict pydantic model
    accepts, and the SDK client returns the finished conversation's transcript, metadata,
    analysis and dynamic variables."""
    emulator, base = served
    async with _talk(base, call_id="call_42") as ws:
        await ws.send(AgentCodec.contextual_update("keypad key: *"))  # the end_call tool
        call = await _recv_until(ws, "client_tool_call")
        tool_call_id = call["client_tool_call"]["tool_call_id"]
        await ws.send(AgentCodec.tool_result(tool_call_id, "ended", False))
        await wait_until(lambda: next(iter(emulator.conversations.values())).ended_at)
    (conversation_id,) = await _ended(emulator, 1)
    async with httpx.AsyncClient() as http:
        raw = await http.get(
            f"{base}/v1/convai/conversations/{conversation_id}", headers={"xi-api-key": API_KEY}
        )
    assert raw.status_code == 200
    strict = GetConversationResponseModel.model_validate(raw.json())
    assert divergences(GetConversationResponseModel, raw.json()) == []
    assert strict.status == "done" and strict.has_auxiliary_audio is False
    tool_turn = next(t for t in strict.transcript if t.tool_calls)
    assert tool_turn.tool_calls is not None and tool_turn.tool_calls[0].tool_name == "end_call"
    assert tool_turn.tool_results and tool_turn.tool_results[0].request_id == tool_call_id

    client = AsyncElevenLabs(api_key=API_KEY, base_url=base)
    details = await client.conversational_ai.conversations.get(conversation_id=conversation_id)
    assert isinstance(details, GetConversationResponseModel)
    assert details.conversation_id == conversation_id and details.agent_id == AGENT_ID
    assert details.status == "done"
    roles = [(t.role, t.message) for t in details.transcript if t.message]
    assert roles[0][0] == "agent" and roles[0][1] and roles[0][1].startswith("Hi Lin!")
    assert ("user", "Call me back tomorrow") in roles
    assert all(isinstance(t.time_in_call_secs, int) for t in details.transcript)
    assert details.user_message_count == 1 and (details.agent_message_count or 0) >= 2
    assert details.metadata.start_time_unix_secs > 0
    assert details.metadata.call_duration_secs >= 0
    assert details.analysis is not None and details.analysis.call_successful == "success"
    assert details.conversation_initiation_client_data is not None
    variables = details.conversation_initiation_client_data.dynamic_variables or {}
    assert variables["call_id"] == "call_42"
    assert variables["system__conversation_id"] == conversation_id
    assert emulator.conversations_api.requests == [conversation_id, conversation_id]


async def test_a_live_conversation_is_in_progress_without_analysis(
    served: tuple[ElevenLabsEmulator, str],
) -> None:
    """While the socket is open the conversation is ``in-progress``, with the transcript so
    far and no analysis; a status override reports ``processing`` or ``failed``."""
    emulator, base = served
    client = AsyncElevenLabs(api_key=API_KEY, base_url=base)
    async with _talk(base):
        (conversation_id,) = emulator.live
        live = await client.conversational_ai.conversations.get(conversation_id=conversation_id)
        assert live.status == "in-progress" and live.analysis is None
        assert [t.role for t in live.transcript if t.message][:2] == ["agent", "user"]
    await _ended(emulator, 1)
    for status in ("processing", "failed", "initiated"):
        emulator.conversations_api.status_overrides[conversation_id] = status
        answer = await client.conversational_ai.conversations.get(conversation_id=conversation_id)
        assert answer.status == status and answer.analysis is None
    del emulator.conversations_api.status_overrides[conversation_id]
    answer = await client.conversational_ai.conversations.get(conversation_id=conversation_id)
    assert answer.status == "done" and answer.analysis is not None


async def test_unknown_deleted_and_unauthorised_requests_are_refused(
    served: tuple[ElevenLabsEmulator, str],
) -> None:
    """An unknown id is 404; a deleted conversation is 404 afterwards; a wrong
    ``xi-api-key`` is 401 ``invalid_api_key``."""
    emulator, base = served
    client = AsyncElevenLabs(api_key=API_KEY, base_url=base)
    with pytest.raises(ApiError) as missing:
        await client.conversational_ai.conversations.get(conversation_id="conv_nope")
    assert missing.value.status_code == 404
    assert missing.value.body["detail"]["status"] == "conversation_not_found"

    async with _talk(base):
        pass
    (conversation_id,) = await _ended(emulator, 1)
    wrong = AsyncElevenLabs(api_key="sk_wrong", base_url=base)
    with pytest.raises(ApiError) as refused:
        await wrong.conversational_ai.conversations.get(conversation_id=conversation_id)
    assert refused.value.status_code == 401
    assert refused.value.body["detail"]["status"] == "invalid_api_key"
    with pytest.raises(ApiError):
        await wrong.conversational_ai.conversations.list()

    await client.conversational_ai.conversations.delete(conversation_id=conversation_id)
    with pytest.raises(ApiError) as gone:
        await client.conversational_ai.conversations.get(conversation_id=conversation_id)
    assert gone.value.status_code == 404 and not emulator.conversations


async def test_the_list_pages_newest_first_with_a_cursor(
    served: tuple[ElevenLabsEmulator, str],
) -> None:
    """GET /v1/convai/conversations lists the agent's conversations newest first, one page
    at a time through ``next_cursor``; another agent's list is empty; page_size > 100 is 422."""
    emulator, base = served
    for n in range(3):
        async with _talk(base, call_id=f"call_{n}"):
            pass
    await _ended(emulator, 3)
    newest_first = sorted(
        emulator.conversations.values(), key=lambda r: (r.started_at, r.conversation_id)
    )[::-1]
    client = AsyncElevenLabs(api_key=API_KEY, base_url=base)
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = await client.conversational_ai.conversations.list(
            agent_id=AGENT_ID, page_size=2, cursor=cursor
        )
        assert isinstance(page, GetConversationsPageResponseModel)
        pages += 1
        seen += [c.conversation_id for c in page.conversations]
        for summary in page.conversations:
            assert summary.status == "done" and summary.agent_id == AGENT_ID
            assert summary.message_count >= 3 and summary.call_successful == "success"
        if not page.has_more:
            assert page.next_cursor is None
            break
        cursor = page.next_cursor
    assert pages == 2
    assert seen == [r.conversation_id for r in newest_first]
    oldest = await client.conversational_ai.conversations.list(sort_direction="asc", page_size=1)
    assert oldest.conversations[0].conversation_id == newest_first[-1].conversation_id
    async with httpx.AsyncClient() as http:
        raw = await http.get(
            f"{base}/v1/convai/conversations",
            headers={"xi-api-key": API_KEY},
            params={"summary_mode": "include"},
        )
    strict = GetConversationsPageResponseModel.model_validate(raw.json())
    assert divergences(GetConversationsPageResponseModel, raw.json()) == []
    assert all(c.transcript_summary for c in strict.conversations)
    other = await client.conversational_ai.conversations.list(agent_id="agent_other")
    assert other.conversations == [] and other.has_more is False
    with pytest.raises(UnprocessableEntityError):
        await client.conversational_ai.conversations.list(page_size=101)
    with pytest.raises(UnprocessableEntityError):
        await client.conversational_ai.conversations.list(cursor="%%not-a-cursor")


async def test_a_suppressed_webhook_is_dropped_and_can_be_sent_late() -> None:
    """With webhooks suppressed, a finished conversation posts nothing (it is listed as
    dropped); :meth:`send_webhook` delivers it later, signed like any other."""
    async with webhook_receiver() as (hook_url, received):
        emulator = make_emulator(webhook_url=hook_url, webhook_secret=SECRET)
        emulator.suppress_webhooks = True
        async with serve(mounted(emulator)) as base:
            async with _talk(base + MOUNT):
                pass
            (conversation_id,) = await _ended(emulator, 1)
            await wait_until(lambda: emulator.dropped_webhooks)
            assert emulator.dropped_webhooks == [conversation_id]
            assert received == [] and emulator.webhook_deliveries == []
            assert await emulator.send_webhook(conversation_id) == 200
    assert emulator.webhook_deliveries == [(conversation_id, 200)]
    assert orjson.loads(received[0][0])["data"]["conversation_id"] == conversation_id
