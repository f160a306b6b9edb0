"""The emulator's Agents and Tools APIs: read and change the one agent's configuration.

Serves, beside the conversation socket (header ``xi-api-key`` like its other REST routes),
shaped as elevenlabs-python 2.78's models (every field they require is sent):

- ``GET /v1/convai/agents/{agent_id}`` → ``GetAgentResponseModel``
  (https://elevenlabs.io/docs/api-reference/agents/get);
- ``PATCH /v1/convai/agents/{agent_id}`` → the updated agent. The body is merged into
  the agent: objects recursively, lists and scalars replaced, ``null`` stored [C3 vendor
  skill for objects and lists; ``null`` and free-form maps are [U]]. A body with the
  deprecated inline ``prompt.tools`` is refused with 422 [C: refused since 2025-07-23;
  the status and body are [U]], as are unknown ``tool_ids``, client events and audio
  formats [U: the vendor's own checks are not documented].
- ``GET /v1/convai/tools`` (``search``: a substring of the name), ``POST /v1/convai/tools``,
  ``GET|PATCH|DELETE /v1/convai/tools/{tool_id}`` → ``ToolResponseModel`` /
  ``ToolsResponseModel`` (https://elevenlabs.io/docs/api-reference/tools/create); a PATCH
  replaces the whole ``tool_config`` [C3 vendor skill].

The agent's audio formats are the emulator's own (the conversation socket uses them), so a
PATCH that changes them changes what new conversations carry.
"""

from __future__ import annotations

import copy
import re
import secrets
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from callbridge.domain.agent_setup import BRIDGE_CLIENT_EVENTS, DEFAULT_CLIENT_EVENTS
from callbridge.media.transcode import SUPPORTED_FORMATS

__all__ = ["AgentsApi", "configured_agent", "fresh_agent"]

Authorize = Callable[[Request], JSONResponse | None]

#: ``ClientEvent`` of elevenlabs-python 2.78 (``ConversationConfigOutput.client_events``).
CLIENT_EVENTS = frozenset(
    {
        "conversation_initiation_metadata",
        "asr_initiation_metadata",
        "ping",
        "audio",
        "interruption",
        "user_transcript",
        "tentative_user_transcript",
        "agent_response",
        "agent_response_correction",
        "client_tool_call",
        "mcp_tool_call",
        "mcp_connection_status",
        "agent_tool_request",
        "agent_tool_response",
        "agent_tool_response_full_payload",
        "agent_response_metadata",
        "vad_score",
        "agent_chat_response_part",
        "client_error",
        "guardrail_triggered",
        "dtmf_request",
        "agent_response_complete",
        "context_usage",
        "internal_turn_probability",
        "internal_tentative_agent_response",
    }
)
_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_TOOL_TYPES = frozenset({"client", "webhook", "system", "mcp"})


def fresh_agent(agent_id: str, *, name: str = "callbridge demo agent") -> dict[str, Any]:
    """An agent as the API creates it: no tools, default events, PCM 16 kHz, no overrides."""
    return {
        "agent_id": agent_id,
        "name": name,
        "tags": [],
        "metadata": {"created_at_unix_secs": 0, "updated_at_unix_secs": 0},
        "conversation_config": {
            "asr": {
                "quality": "high",
                "provider": "elevenlabs",
                "user_input_audio_format": "pcm_16000",
                "keywords": [],
            },
            "turn": {"turn_timeout": 7.0, "silence_end_call_timeout": -1.0},
            "tts": {
                "model_id": "eleven_flash_v2",
                "voice_id": "cjVigY5qzO86Huf0OWal",
                "agent_output_audio_format": "pcm_16000",
            },
            "conversation": {"text_only": False, "max_duration_seconds": 600},
            "agent": {
                "first_message": "Hi! This is the callbridge demo agent.",
                "language": "en",
                "dynamic_variables": {"dynamic_variable_placeholders": {}},
                "prompt": {
                    "prompt": "You are a helpful assistant.",
                    "llm": "gemini-2.0-flash",
                    "temperature": 0.0,
                    "max_tokens": -1,
                    "tool_ids": [],
                    "built_in_tools": {},
                },
            },
        },
        "platform_settings": {
            "auth": {"enable_auth": False, "allowlist": []},
            "overrides": {
                "conversation_config_override": {
                    "agent": {
                        "first_message": False,
                        "language": False,
                        "prompt": {"prompt": False},
                    },
                    "tts": {"voice_id": False},
                    "conversation": {"text_only": False},
                },
                "custom_llm_extra_body": False,
                "enable_conversation_initiation_client_data_from_webhook": False,
            },
        },
        "phone_numbers": [],
        "version_id": None,
        "branch_id": None,
    }


def configured_agent(agent_id: str) -> dict[str, Any]:
    """The sandbox's default agent: as ``callbridge setup`` leaves it (tools linked by
    :class:`AgentsApi`, μ-law 8000 both ways)."""
    agent = fresh_agent(agent_id)
    config = agent["conversation_config"]
    config["asr"]["user_input_audio_format"] = "ulaw_8000"
    config["tts"]["agent_output_audio_format"] = "ulaw_8000"
    events = list(DEFAULT_CLIENT_EVENTS)
    events += [e for e in BRIDGE_CLIENT_EVENTS if e not in events]
    config["conversation"]["client_events"] = events
    config["agent"]["dynamic_variables"]["dynamic_variable_placeholders"] = {
        "visitor_name": "the visitor",
        "reason": "not given",
        "web_chat_summary": "none",
        "web_conversation_id": "none",
        "call_id": "none",
    }
    return agent


def _merge(target: dict[str, Any], patch: Mapping[str, Any]) -> None:
    for key, value in patch.items():
        if isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


def _unprocessable(loc: list[str], msg: str) -> JSONResponse:
    return JSONResponse(
        {"detail": [{"loc": ["body", *loc], "msg": msg, "type": "value_error"}]}, status_code=422
    )


def _not_found(status: str, what: str) -> JSONResponse:
    return JSONResponse({"detail": {"status": status, "message": what}}, status_code=404)


class AgentsApi:
    """The Agents/Tools REST routes over one agent document.

    Args:
        agent: the agent's initial configuration (``configured_agent`` or ``fresh_agent``).
        authorize: the emulator's ``xi-api-key`` check.
        clock: wall-clock unix seconds.
        formats: the conversation socket's ``(input, output)`` format names now.
        set_formats: called with new ``(input, output)`` names when a PATCH changes them.
        link_bridge_tools: create and link the three client tools callbridge runs.

    Attributes:
        agent: the agent document (``agent_id`` is its id).
        tools: the workspace's tools, ``tool_id`` → ``tool_config``.
        patches: every agent PATCH body received, in order.
    """

    def __init__(
        self,
        agent: dict[str, Any],
        *,
        authorize: Authorize,
        clock: Callable[[], float],
        formats: Callable[[], tuple[str, str]],
        set_formats: Callable[[str, str], None],
        link_bridge_tools: bool,
    ) -> None:
        self.agent = agent
        self.tools: dict[str, dict[str, Any]] = {}
        self.patches: list[dict[str, Any]] = []
        self._authorize = authorize
        self._clock = clock
        self._formats = formats
        self._set_formats = set_formats
        now = int(clock())
        agent["metadata"] = {"created_at_unix_secs": now, "updated_at_unix_secs": now}
        if link_bridge_tools:
            from callbridge.domain.agent_setup import wanted_tools

            ids = [self.add_tool(spec.config()) for spec in wanted_tools()]
            agent["conversation_config"]["agent"]["prompt"]["tool_ids"] = ids
        self.routes = [
            Route("/v1/convai/agents/{agent_id}", self._agent, methods=["GET", "PATCH"]),
            Route("/v1/convai/tools", self._tools, methods=["GET", "POST"]),
            Route("/v1/convai/tools/{tool_id}", self._tool, methods=["GET", "PATCH", "DELETE"]),
        ]

    def add_tool(self, config: Mapping[str, Any]) -> str:
        """Store a tool in the workspace; its new id."""
        tool_id = "tool_" + secrets.token_hex(12)
        self.tools[tool_id] = copy.deepcopy(dict(config))
        return tool_id

    def document(self) -> dict[str, Any]:
        """The agent as ``GET`` returns it."""
        agent = copy.deepcopy(self.agent)
        fmt_in, fmt_out = self._formats()
        config = agent.setdefault("conversation_config", {})
        config.setdefault("asr", {})["user_input_audio_format"] = fmt_in
        config.setdefault("tts", {})["agent_output_audio_format"] = fmt_out
        return agent

    def client_events(self) -> frozenset[str]:
        """The events the agent sends its clients (the vendor's default when unset)."""
        conversation = (self.agent.get("conversation_config") or {}).get("conversation") or {}
        listed = conversation.get("client_events")
        return frozenset(listed if isinstance(listed, list) else DEFAULT_CLIENT_EVENTS)

    def client_tools(self) -> frozenset[str]:
        """Names of the client tools the agent may call: linked by ``tool_ids``, or inline."""
        prompt = ((self.agent.get("conversation_config") or {}).get("agent") or {}).get(
            "prompt"
        ) or {}
        configs = [self.tools[i] for i in prompt.get("tool_ids") or [] if i in self.tools]
        configs += [t for t in prompt.get("tools") or [] if isinstance(t, dict)]
        return frozenset(str(c.get("name")) for c in configs if c.get("type") == "client")

    def _tool_json(self, tool_id: str) -> dict[str, Any]:
        return {
            "id": tool_id,
            "tool_config": copy.deepcopy(self.tools[tool_id]),
            "access_info": {
                "is_creator": True,
                "creator_name": "Sandbox Owner",
                "creator_email": "owner@example.com",
                "role": "admin",
            },
            "usage_stats": {"total_calls": 0, "avg_latency_secs": 0.0},
        }

    # --- routes -----------------------------------------------------------------------

    async def _agent(self, request: Request) -> Response:
        refused = self._authorize(request)
        if refused is not None:
            return refused
        agent_id = request.path_params["agent_id"]
        if agent_id != self.agent["agent_id"]:
            return _not_found("agent_not_found", f"Agent {agent_id[:64]!r} was not found")
        if request.method == "GET":
            return JSONResponse(self.document())
        body = await _json_object(request)
        if body is None:
            return _unprocessable([], "Input should be a valid dictionary")
        problem = self._check_patch(body)
        if problem is not None:
            return problem
        self.patches.append(body)
        # A top-level null (``conversation_config``, ``platform_settings``, ...) is taken
        # as "not given": the body model types them ``object | null`` [U: its meaning].
        _merge(self.agent, {k: v for k, v in body.items() if v is not None})
        config = self.agent.get("conversation_config") or {}
        fmt_in = (config.get("asr") or {}).get("user_input_audio_format")
        fmt_out = (config.get("tts") or {}).get("agent_output_audio_format")
        now_in, now_out = self._formats()
        if (fmt_in or now_in, fmt_out or now_out) != (now_in, now_out):
            self._set_formats(fmt_in or now_in, fmt_out or now_out)
        self.agent["metadata"]["updated_at_unix_secs"] = int(self._clock())
        return JSONResponse(self.document())

    def _check_patch(self, body: Mapping[str, Any]) -> JSONResponse | None:
        config = body.get("conversation_config")
        if config is None:
            return None
        if not isinstance(config, Mapping):
            return _unprocessable(["conversation_config"], "Input should be a valid dictionary")
        prompt = (config.get("agent") or {}).get("prompt") or {}
        if "tools" in prompt:
            return _unprocessable(
                ["conversation_config", "agent", "prompt", "tools"],
                "prompt.tools is deprecated: create tools with /v1/convai/tools "
                "and link them with prompt.tool_ids",
            )
        for tool_id in prompt.get("tool_ids") or []:
            if tool_id not in self.tools:
                return _unprocessable(
                    ["conversation_config", "agent", "prompt", "tool_ids"],
                    f"Tool {str(tool_id)[:64]!r} does not exist",
                )
        events = (config.get("conversation") or {}).get("client_events")
        if events is not None and (
            not isinstance(events, list) or not set(events) <= CLIENT_EVENTS
        ):
            return _unprocessable(
                ["conversation_config", "conversation", "client_events"],
                "Input should be a list of client events",
            )
        for section, key in (
            ("asr", "user_input_audio_format"),
            ("tts", "agent_output_audio_format"),
        ):
            value = (config.get(section) or {}).get(key)
            if value is not None and value not in SUPPORTED_FORMATS:
                return _unprocessable(
                    ["conversation_config", section, key],
                    f"Input should be one of {', '.join(SUPPORTED_FORMATS)}",
                )
        return None

    async def _tools(self, request: Request) -> Response:
        refused = self._authorize(request)
        if refused is not None:
            return refused
        if request.method == "GET":
            search = request.query_params.get("search", "").lower()
            found = [
                self._tool_json(tool_id)
                for tool_id, config in self.tools.items()
                if search in str(config.get("name", "")).lower()
            ]
            return JSONResponse({"tools": found, "next_cursor": None, "has_more": False})
        body = await _json_object(request)
        problem = _check_tool(body)
        if problem is not None:
            return problem
        assert body is not None
        return JSONResponse(self._tool_json(self.add_tool(body["tool_config"])))

    async def _tool(self, request: Request) -> Response:
        refused = self._authorize(request)
        if refused is not None:
            return refused
        tool_id = request.path_params["tool_id"]
        if tool_id not in self.tools:
            return _not_found("tool_not_found", f"Tool {tool_id[:64]!r} was not found")
        if request.method == "GET":
            return JSONResponse(self._tool_json(tool_id))
        if request.method == "DELETE":
            del self.tools[tool_id]
            return JSONResponse({})
        body = await _json_object(request)
        problem = _check_tool(body)
        if problem is not None:
            return problem
        assert body is not None
        self.tools[tool_id] = copy.deepcopy(body["tool_config"])
        return JSONResponse(self._tool_json(tool_id))


def _check_tool(body: Mapping[str, Any] | None) -> JSONResponse | None:
    """``ToolRequestModel``: a ``tool_config`` with a type, a valid name and a description."""
    config = body.get("tool_config") if body is not None else None
    if not isinstance(config, Mapping):
        return _unprocessable(["tool_config"], "Field required")
    if config.get("type") not in _TOOL_TYPES:
        return _unprocessable(["tool_config", "type"], "Input tag does not match any tool type")
    if not isinstance(config.get("name"), str) or not _TOOL_NAME.match(config["name"]):
        return _unprocessable(["tool_config", "name"], "String should match ^[a-zA-Z0-9_-]{1,64}$")
    if config["type"] == "client" and not isinstance(config.get("description"), str):
        return _unprocessable(["tool_config", "description"], "Field required")
    return None


async def _json_object(request: Request) -> dict[str, Any] | None:
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        return None
    return body if isinstance(body, dict) else None
