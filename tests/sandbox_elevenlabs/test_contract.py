"""Contract: every REST answer of the ElevenLabs emulator, checked against the SDK's models.

The reference is the official ``elevenlabs`` SDK (2.78): each JSON answer must pass
its pydantic model's ``model_validate`` and the stricter walk of
:func:`tests.support.contract.divergences` (required fields, no undeclared key, JSON
types, enum values), and the SDK client must read it over real HTTP. The post-call
webhook's ``data`` is checked in ``test_webhook.py``. 401 and 404 bodies have no SDK model
(their shape is [unconfirmed]; the SDK raises ApiError with the status either way).
"""

from __future__ import annotations

import warnings
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pydantic
import pytest
from websockets.asyncio.client import connect

from callbridge.media.agent_protocol import AgentCodec
from callbridge.sandbox.elevenlabs.emulator import ElevenLabsEmulator
from tests.sandbox_elevenlabs.conftest import (
    AGENT_ID,
    API_KEY,
    MOUNT,
    make_emulator,
    mounted,
    wait_until,
)
from tests.support.contract import divergences
from tests.support.server import serve

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from elevenlabs import AsyncElevenLabs
    from elevenlabs.core.api_error import ApiError
    from elevenlabs.types import (
        ConversationSignedUrlResponseModel,
        GetAgentEmbedResponseModel,
        GetAgentResponseModel,
        GetConversationResponseModel,
        GetConversationsPageResponseModel,
        HttpValidationError,
        ToolResponseModel,
        ToolsResponseModel,
    )


@pytest.fixture
async def served() -> AsyncIterator[tuple[ElevenLabsEmulator, str, httpx.AsyncClient]]:
    emulator = make_emulator()
    async with (
        serve(mounted(emulator)) as base,
        httpx.AsyncClient(base_url=base + MOUNT, headers={"xi-api-key": API_KEY}) as http,
    ):
        yield emulator, base + MOUNT, http


def _conforms(model: type[pydantic.BaseModel], body: Any) -> None:
    model.model_validate(body)
    assert divergences(model, body) == []


async def test_signed_url_widget_and_validation_errors_match_the_sdk(
    served: tuple[ElevenLabsEmulator, str, httpx.AsyncClient],
) -> None:
    """get-signed-url (both spellings), the widget config and a 422 answer what the
    SDK's models declare, and the SDK client reads them."""
    _, base, http = served
    for path in ("get-signed-url", "get_signed_url"):
        answer = await http.get(f"/v1/convai/conversation/{path}", params={"agent_id": AGENT_ID})
        assert answer.status_code == 200
        _conforms(ConversationSignedUrlResponseModel, answer.json())
    widget = await http.get(f"/v1/convai/agents/{AGENT_ID}/widget")
    assert widget.status_code == 200
    _conforms(GetAgentEmbedResponseModel, widget.json())
    invalid = await http.get("/v1/convai/conversation/get-signed-url")
    assert invalid.status_code == 422
    _conforms(HttpValidationError, invalid.json())

    client = AsyncElevenLabs(api_key=API_KEY, base_url=base)
    signed = await client.conversational_ai.conversations.get_signed_url(agent_id=AGENT_ID)
    assert signed.signed_url.startswith("ws://")
    embed = await client.conversational_ai.agents.widget.get(AGENT_ID)
    assert embed.agent_id == AGENT_ID and embed.widget_config is not None
    for status, call in [
        (404, client.conversational_ai.conversations.get_signed_url(agent_id="agent_nope")),
        (
            401,
            AsyncElevenLabs(
                api_key="wrong", base_url=base
            ).conversational_ai.conversations.get_signed_url(agent_id=AGENT_ID),
        ),
    ]:
        with pytest.raises(ApiError) as caught:
            await call
        assert caught.value.status_code == status


async def test_conversation_answers_match_the_sdk_live_and_finished(
    served: tuple[ElevenLabsEmulator, str, httpx.AsyncClient],
) -> None:
    """A conversation's details and the list page (with and without summaries) match the
    SDK's models while the conversation runs (status in-progress, no analysis) and after
    it ended (done); DELETE answers and the conversation is then gone (404)."""
    emulator, base, http = served
    url = base.replace("http", "ws") + f"/v1/convai/conversation?agent_id={AGENT_ID}"
    async with connect(url) as ws:
        await ws.send(AgentCodec.initiation({"visitor_name": "Lin", "call_id": "c_1"}))
        while orjson.loads(await ws.recv())["type"] != "agent_response":
            pass
        (conversation_id,) = emulator.conversations
        live = (await http.get(f"/v1/convai/conversations/{conversation_id}")).json()
        _conforms(GetConversationResponseModel, live)
        assert live["status"] == "in-progress" and live["analysis"] is None
        _conforms(
            GetConversationsPageResponseModel, (await http.get("/v1/convai/conversations")).json()
        )
    await wait_until(lambda: emulator.conversations[conversation_id].ended_at is not None)
    done = (await http.get(f"/v1/convai/conversations/{conversation_id}")).json()
    _conforms(GetConversationResponseModel, done)
    assert done["status"] == "done"
    for params in ({}, {"summary_mode": "include", "page_size": 1}):
        page = (await http.get("/v1/convai/conversations", params=params)).json()
        _conforms(GetConversationsPageResponseModel, page)
        assert [c["conversation_id"] for c in page["conversations"]] == [conversation_id]

    client = AsyncElevenLabs(api_key=API_KEY, base_url=base)
    await client.conversational_ai.conversations.delete(conversation_id)
    gone = await http.get(f"/v1/convai/conversations/{conversation_id}")
    assert gone.status_code == 404


@pytest.mark.parametrize("fresh", [True, False])
async def test_agent_and_tool_answers_match_the_sdk(fresh: bool) -> None:
    """GET and PATCH agent, and the tools list, get, create and update answers, for a
    fresh agent and for the sandbox's ready one, pass the SDK's models strictly."""
    from callbridge.sandbox.elevenlabs.agents_api import fresh_agent

    emulator = make_emulator(agent=fresh_agent(AGENT_ID)) if fresh else make_emulator()
    async with (
        serve(mounted(emulator)) as base,
        httpx.AsyncClient(base_url=base + MOUNT, headers={"xi-api-key": API_KEY}) as http,
    ):
        agent = (await http.get(f"/v1/convai/agents/{AGENT_ID}")).json()
        _conforms(GetAgentResponseModel, agent)
        patched = await http.patch(
            f"/v1/convai/agents/{AGENT_ID}",
            json={"conversation_config": {"tts": {"agent_output_audio_format": "ulaw_8000"}}},
        )
        assert patched.status_code == 200
        _conforms(GetAgentResponseModel, patched.json())
        tool = {
            "tool_config": {
                "type": "client",
                "name": "open_url",
                "description": "Open a URL",
                "expects_response": True,
                "response_timeout_secs": 20,
                "parameters": {
                    "type": "object",
                    "required": ["url"],
                    "properties": {"url": {"type": "string", "description": "The URL"}},
                },
            }
        }
        created = await http.post("/v1/convai/tools", json=tool)
        assert created.status_code == 200, created.text
        _conforms(ToolResponseModel, created.json())
        tool_id = created.json()["id"]
        _conforms(ToolResponseModel, (await http.get(f"/v1/convai/tools/{tool_id}")).json())
        tool["tool_config"]["description"] = "Open a web page"
        updated = await http.patch(f"/v1/convai/tools/{tool_id}", json=tool)
        assert updated.status_code == 200, updated.text
        _conforms(ToolResponseModel, updated.json())
        listed = (await http.get("/v1/convai/tools")).json()
        _conforms(ToolsResponseModel, listed)
        assert tool_id in {t["id"] for t in listed["tools"]}
