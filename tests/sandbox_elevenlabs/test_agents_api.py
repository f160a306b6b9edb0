"""The emulator's Agents and Tools APIs, read and written by the official elevenlabs SDK."""

from __future__ import annotations

import warnings
from typing import Any

import httpx
import pytest

from callbridge.sandbox.elevenlabs.agents_api import fresh_agent
from tests.sandbox_elevenlabs.conftest import AGENT_ID, API_KEY, MOUNT, make_emulator, mounted
from tests.support.server import serve

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from elevenlabs import AsyncElevenLabs
    from elevenlabs.core.api_error import ApiError
    from elevenlabs.errors import UnprocessableEntityError
    from elevenlabs.types import (
        ConversationalConfig,
        GetAgentResponseModel,
        ToolRequestModel,
        ToolRequestModelToolConfig_Client,
        ToolResponseModel,
    )


async def _raw(url: str) -> dict[str, Any]:
    async with httpx.AsyncClient() as http:
        body: dict[str, Any] = (await http.get(url, headers={"xi-api-key": API_KEY})).json()
        return body


async def test_the_sdk_reads_and_updates_the_agent_and_every_required_field_is_there() -> None:
    """agents.get/update through the SDK; the raw JSON passes the SDK's model strictly
    (the SDK itself does not validate), and a PATCH merges rather than replaces."""
    emulator = make_emulator(agent=fresh_agent(AGENT_ID))
    async with serve(mounted(emulator)) as base:
        client = AsyncElevenLabs(api_key=API_KEY, base_url=base + MOUNT)
        agent = await client.conversational_ai.agents.get(AGENT_ID)
        assert agent.agent_id == AGENT_ID
        raw = await _raw(f"{base}{MOUNT}/v1/convai/agents/{AGENT_ID}")
        GetAgentResponseModel.model_validate(raw)  # every required field, strictly
        assert raw["conversation_config"]["tts"]["agent_output_audio_format"] == "pcm_16000"

        updated = await client.conversational_ai.agents.update(
            AGENT_ID,
            conversation_config=ConversationalConfig.model_validate(
                {
                    "tts": {"agent_output_audio_format": "ulaw_8000"},
                    "asr": {"user_input_audio_format": "ulaw_8000"},
                }
            ),
        )
        assert updated.conversation_config.tts is not None
        assert updated.conversation_config.tts.agent_output_audio_format == "ulaw_8000"
        assert updated.conversation_config.tts.voice_id == "cjVigY5qzO86Huf0OWal"  # merged
        assert str(emulator.output_format) == "ulaw_8000"  # the socket follows the agent
        again = await client.conversational_ai.agents.get(AGENT_ID)
        assert again.conversation_config.asr is not None
        assert again.conversation_config.asr.user_input_audio_format == "ulaw_8000"


async def test_tools_are_created_linked_and_read_back_through_the_sdk() -> None:
    """tools.create/get/list through the SDK; a created tool can be linked by tool_ids."""
    emulator = make_emulator(agent=fresh_agent(AGENT_ID))
    async with serve(mounted(emulator)) as base:
        client = AsyncElevenLabs(api_key=API_KEY, base_url=base + MOUNT)
        created = await client.conversational_ai.tools.create(
            request=ToolRequestModel(
                tool_config=ToolRequestModelToolConfig_Client(
                    name="open_url",
                    description="Open a URL",
                    expects_response=True,
                    parameters={
                        "type": "object",
                        "required": ["url"],
                        "properties": {"url": {"type": "string", "description": "The URL"}},
                    },
                )
            )
        )
        raw = await _raw(f"{base}{MOUNT}/v1/convai/tools/{created.id}")
        ToolResponseModel.model_validate(raw)
        assert raw["tool_config"]["name"] == "open_url"
        listed = await client.conversational_ai.tools.list(search="open")
        assert [t.id for t in listed.tools] == [created.id]
        await client.conversational_ai.agents.update(
            AGENT_ID,
            conversation_config=ConversationalConfig.model_validate(
                {"agent": {"prompt": {"tool_ids": [created.id]}}}
            ),
        )
        agent = await client.conversational_ai.agents.get(AGENT_ID)
        assert agent.conversation_config.agent is not None
        assert agent.conversation_config.agent.prompt is not None
        assert agent.conversation_config.agent.prompt.tool_ids == [created.id]
        assert agent.conversation_config.agent.prompt.prompt == "You are a helpful assistant."


async def test_inline_tools_unknown_ids_and_unknown_agents_are_refused() -> None:
    """Deprecated inline prompt.tools and unknown tool ids get 422; an unknown agent 404;
    a wrong key 401; the agent is unchanged by refused requests."""
    emulator = make_emulator(agent=fresh_agent(AGENT_ID))
    async with serve(mounted(emulator)) as base:
        client = AsyncElevenLabs(api_key=API_KEY, base_url=base + MOUNT)
        inline = {"type": "client", "name": "x", "description": "d"}
        for prompt in ({"tools": [inline]}, {"tool_ids": ["tool_nope"]}):
            with pytest.raises(UnprocessableEntityError):
                await client.conversational_ai.agents.update(
                    AGENT_ID,
                    conversation_config=ConversationalConfig.model_validate(
                        {"agent": {"prompt": prompt}}
                    ),
                )
        with pytest.raises(ApiError) as missing:
            await client.conversational_ai.agents.get("agent_other")
        assert missing.value.status_code == 404
        wrong = AsyncElevenLabs(api_key="sk_wrong", base_url=base + MOUNT)
        with pytest.raises(ApiError) as refused:
            await wrong.conversational_ai.agents.get(AGENT_ID)
        assert refused.value.status_code == 401
        assert emulator.agents_api.patches == []


async def test_the_default_sandbox_agent_is_ready_for_callbridge() -> None:
    """Without a given agent the emulator's agent links the three client tools, lists
    client_tool_call and uses μ-law 8000 both ways."""
    emulator = make_emulator()
    async with serve(mounted(emulator)) as base:
        client = AsyncElevenLabs(api_key=API_KEY, base_url=base + MOUNT)
        agent = await client.conversational_ai.agents.get(AGENT_ID)
        config = agent.conversation_config
        assert config.agent is not None and config.agent.prompt is not None
        names = set()
        for tool_id in config.agent.prompt.tool_ids or []:
            tool = await client.conversational_ai.tools.get(tool_id)
            names.add(tool.tool_config.name)
        assert names == {"initiatePhoneCall", "end_call", "transfer_to_human"}
        assert config.conversation is not None
        assert "client_tool_call" in (config.conversation.client_events or [])
        assert config.tts is not None and config.tts.agent_output_audio_format == "ulaw_8000"


async def test_a_conversation_follows_the_agents_events_and_tools() -> None:
    """A fresh agent neither has end_call nor sends client_tool_call: the demo agent says it
    cannot; once setup's plan is applied through the API, the same key asks for the tool."""
    from callbridge.domain.agent_setup import CreateTool, agent_patch, plan_setup
    from callbridge.media.agent_protocol import AgentCodec
    from tests.sandbox_elevenlabs.test_conversation import conversation, is_type

    emulator = make_emulator(agent=fresh_agent(AGENT_ID), output_format="ulaw_8000")
    async with conversation(emulator) as client:
        await client.until(is_type("conversation_initiation_metadata"))
        await client.send(AgentCodec.contextual_update("Caller pressed keypad key: *"))
        said = await client.until(
            lambda m: (
                m["type"] == "agent_response"
                and "can't do that" in m["agent_response_event"]["agent_response"]
            )
        )
        assert said and not client.of_type("client_tool_call")

    api = emulator.agents_api
    plan = plan_setup(api.document(), {}, first_message_override=False)
    ids = [api.add_tool(c.config) for c in plan.changes if isinstance(c, CreateTool)]
    body = agent_patch(api.document(), plan.changes, ids)
    async with serve(mounted(emulator)) as base, httpx.AsyncClient() as http:
        answer = await http.patch(
            f"{base}{MOUNT}/v1/convai/agents/{AGENT_ID}",
            json=body,
            headers={"xi-api-key": API_KEY},
        )
        assert answer.status_code == 200, answer.text
    async with conversation(emulator) as client:
        await client.until(is_type("conversation_initiation_metadata"))
        await client.send(AgentCodec.contextual_update("Caller pressed keypad key: *"))
        call = (await client.until(is_type("client_tool_call")))["client_tool_call"]
        assert call["tool_name"] == "end_call"
