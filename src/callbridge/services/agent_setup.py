"""``callbridge setup`` and the agent half of ``doctor --online``: read, plan, apply.

:meth:`AgentSetup.read` reads the agent and the tools it links, and plans with the
pure :func:`~callbridge.domain.agent_setup.plan_setup`; :meth:`AgentSetup.apply` writes
the plan: tools through the Tools API (a tool of the same name already in the
workspace and complete is linked rather than created twice, so a run interrupted
between the two writes is finished by the next), then one sparse ``PATCH`` of the agent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from callbridge.domain.agent_setup import (
    CreateTool,
    SetupPlan,
    UpdateTool,
    agent_patch,
    plan_setup,
    wanted_tools,
)
from callbridge.errors import NotFound, ProtocolError


class AgentConfigApi(Protocol):
    """ElevenLabs' Agents and Tools APIs (``adapters/elevenlabs/agent_config.py``)."""

    async def get_agent(self, agent_id: str) -> dict[str, Any]:
        """The agent's configuration."""
        ...

    async def update_agent(self, agent_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Apply a sparse change; the updated agent."""
        ...

    async def get_tool(self, tool_id: str) -> dict[str, Any]:
        """One standalone tool."""
        ...

    async def find_tools(self, name: str) -> list[dict[str, Any]]:
        """The workspace's tools of exactly this name."""
        ...

    async def create_tool(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """Create a tool; the new tool."""
        ...

    async def update_tool(self, tool_id: str, config: Mapping[str, Any]) -> dict[str, Any]:
        """Replace a tool's configuration."""
        ...


@dataclass(frozen=True, slots=True)
class Reading:
    """The agent as read, the tools it links, and the plan for it."""

    agent: Mapping[str, Any]
    tools: Mapping[str, Mapping[str, Any]]
    plan: SetupPlan
    notes: tuple[str, ...]


class AgentSetup:
    """Reads and configures one agent.

    Args:
        api: the Agents/Tools API adapter.
        agent_id: ``ELEVENLABS_AGENT_ID``.
        first_message_override: whether the bridge sends a first message.
    """

    def __init__(self, *, api: AgentConfigApi, agent_id: str, first_message_override: bool) -> None:
        self._api = api
        self._agent_id = agent_id
        self._first_message = first_message_override

    async def read(self) -> Reading:
        """Read the agent and its linked tools; plan.

        Raises:
            NotFound: no such agent.
            ProviderError: ElevenLabs refused or could not be reached.
        """
        agent = await self._api.get_agent(self._agent_id)
        prompt = (agent.get("conversation_config") or {}).get("agent", {}).get("prompt") or {}
        tools: dict[str, Mapping[str, Any]] = {}
        notes: list[str] = []
        for tool_id in prompt.get("tool_ids") or []:
            try:
                tool = await self._api.get_tool(str(tool_id))
            except NotFound:
                notes.append(
                    f"The agent links the tool {str(tool_id)[:64]!r}, which no longer exists: "
                    "remove it in the ElevenLabs dashboard."
                )
                continue
            config = tool.get("tool_config")
            if not isinstance(config, dict):
                raise ProtocolError("ElevenLabs' tool has no 'tool_config'")
            tools[str(tool_id)] = config
        plan = plan_setup(agent, tools, first_message_override=self._first_message)
        return Reading(agent, tools, plan, tuple(notes) + plan.notes)

    async def apply(self, reading: Reading, *, audio: bool) -> list[str]:
        """Write the plan (and the audio change when ``audio``); what was done, in words."""
        done: list[str] = []
        new_ids: list[str] = []
        specs = {spec.name: spec for spec in wanted_tools()}
        for change in reading.plan.changes:
            if isinstance(change, CreateTool):
                tool_id = await self._reusable(change.name, reading.tools)
                if tool_id is None:
                    created = await self._api.create_tool(change.config)
                    tool_id = str(created.get("id") or "")
                    if not tool_id:
                        raise ProtocolError("ElevenLabs created a tool without an id")
                    done.append(f"created the tool {change.name!r} ({tool_id})")
                else:
                    done.append(f"found the tool {change.name!r} ({tool_id}) in the workspace")
                new_ids.append(tool_id)
            elif isinstance(change, UpdateTool):
                assert change.name in specs
                await self._api.update_tool(change.tool_id, change.config)
                done.append(f"completed the tool {change.name!r} ({change.tool_id})")
        changes = [c for c in reading.plan.changes if not isinstance(c, CreateTool | UpdateTool)]
        body_changes: list[Any] = list(changes)
        if audio and reading.plan.audio_change is not None:
            body_changes.append(reading.plan.audio_change)
        body = agent_patch(reading.agent, body_changes, new_ids)
        if body:
            await self._api.update_agent(self._agent_id, body)
            done += [c.describe() for c in body_changes]
            if new_ids:
                done.append("linked the new tools to the agent")
        return done

    async def _reusable(self, name: str, linked: Mapping[str, Mapping[str, Any]]) -> str | None:
        """A complete, unlinked workspace tool of this name (left by an interrupted run)."""
        spec = next(s for s in wanted_tools() if s.name == name)
        for tool in await self._api.find_tools(name):
            tool_id = str(tool.get("id") or "")
            if tool_id and tool_id not in linked and not spec.missing(tool["tool_config"]):
                return tool_id
        return None
