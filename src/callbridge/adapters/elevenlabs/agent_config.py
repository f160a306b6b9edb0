"""ElevenLabs' Agents and Tools APIs: read and change an agent's configuration.

Implements, with the ``xi-api-key`` header, what elevenlabs-python 2.78 sends
(``conversational_ai.agents.get/update``, ``conversational_ai.tools.get/list/create/update``):

- ``GET /v1/convai/agents/{agent_id}`` → ``GetAgentResponseModel``;
- ``PATCH /v1/convai/agents/{agent_id}`` with a sparse JSON body → the updated agent
  (https://elevenlabs.io/docs/api-reference/agents/update);
- ``GET /v1/convai/tools/{tool_id}``, ``GET /v1/convai/tools?search=…``,
  ``POST /v1/convai/tools`` and ``PATCH /v1/convai/tools/{tool_id}`` with
  ``{"tool_config": {...}}`` → ``ToolResponseModel`` ``{id, tool_config, ...}``
  (https://elevenlabs.io/docs/api-reference/tools/create).

The base URL (``ELEVENLABS_API_BASE_URL``) is all that tells the vendor from the emulator.
httpx errors and HTTP refusals become project errors here; the 404 body's shape is [U],
so only its status is read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from callbridge.errors import ErrorCategory, NotFound, ProtocolError, ProviderError

#: An agent's configuration (prompts, knowledge base ids, tools) stays well under this.
MAX_BODY = 4 * 1024 * 1024


class ElevenLabsAgentConfig:
    """The agent-configuration endpoints over httpx.

    Args:
        api_base_url: ``ELEVENLABS_API_BASE_URL`` (the vendor or the emulator).
        api_key: the ``xi-api-key``; None sends none (only the emulator accepts that).
        http: the client to send with (a ``transport=`` seam for tests).
        timeout: seconds to wait for each answer.
    """

    def __init__(
        self,
        *,
        api_base_url: str,
        api_key: str | None,
        http: httpx.AsyncClient,
        timeout: float = 15.0,
    ) -> None:
        self._base = api_base_url.rstrip("/")
        self._headers = {"xi-api-key": api_key} if api_key else {}
        self._http = http
        self._timeout = timeout

    async def get_agent(self, agent_id: str) -> dict[str, Any]:
        """The agent's whole configuration.

        Raises:
            NotFound: ElevenLabs has no agent of that id (for this key).
            ProviderError: refused or unreachable.
        """
        return await self._json("GET", f"/v1/convai/agents/{_q(agent_id)}", what="agent")

    async def update_agent(self, agent_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Apply a sparse change to the agent; the updated agent."""
        return await self._json(
            "PATCH", f"/v1/convai/agents/{_q(agent_id)}", what="agent", body=body
        )

    async def get_tool(self, tool_id: str) -> dict[str, Any]:
        """One standalone tool (``{id, tool_config, ...}``)."""
        return await self._json("GET", f"/v1/convai/tools/{_q(tool_id)}", what="tool")

    async def find_tools(self, name: str) -> list[dict[str, Any]]:
        """The workspace's tools whose name matches ``name`` exactly (first page of a search)."""
        page = await self._json(
            "GET", "/v1/convai/tools", what="tool list", params={"search": name}
        )
        tools = page.get("tools")
        if not isinstance(tools, list):
            raise ProtocolError("ElevenLabs' tool list has no 'tools'")
        return [
            t
            for t in tools
            if isinstance(t, dict)
            and isinstance(t.get("tool_config"), dict)
            and t["tool_config"].get("name") == name
        ]

    async def create_tool(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """Create a standalone tool; the new tool (its ``id`` to link)."""
        return await self._json(
            "POST", "/v1/convai/tools", what="tool", body={"tool_config": dict(config)}
        )

    async def update_tool(self, tool_id: str, config: Mapping[str, Any]) -> dict[str, Any]:
        """Replace a tool's configuration (the Tools API's PATCH takes it whole [C3])."""
        return await self._json(
            "PATCH",
            f"/v1/convai/tools/{_q(tool_id)}",
            what="tool",
            body={"tool_config": dict(config)},
        )

    async def _json(
        self,
        method: str,
        path: str,
        *,
        what: str,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        headers = dict(self._headers)
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            response = await self._http.request(
                method,
                self._base + path,
                headers=headers,
                content=orjson.dumps(body) if body is not None else None,
                params=params,
                timeout=self._timeout,
            )
        except httpx.TimeoutException as exc:
            raise _error("ElevenLabs did not answer in time", ErrorCategory.TIMEOUT) from exc
        except httpx.HTTPError as exc:
            raise _error(
                f"could not reach ElevenLabs at {self._base}: {type(exc).__name__}",
                ErrorCategory.NETWORK,
            ) from exc
        if response.status_code == 404:
            raise NotFound(f"ElevenLabs has no such {what} ({path.rsplit('/', 1)[-1][:64]})")
        if response.status_code not in (200, 201):
            raise _refusal(response, what)
        if len(response.content) > MAX_BODY:
            raise ProtocolError(f"ElevenLabs' {what} is too large")
        try:
            data = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise ProtocolError(f"ElevenLabs' {what} answer is not JSON") from None
        if not isinstance(data, dict):
            raise ProtocolError(f"ElevenLabs' {what} answer is not an object")
        return data


def _q(value: str) -> str:
    return quote(value, safe="")


def _error(message: str, category: ErrorCategory, status: int | None = None) -> ProviderError:
    return ProviderError(message, provider="elevenlabs", category=category, http_status=status)


def _refusal(response: httpx.Response, what: str) -> ProviderError:
    status = response.status_code
    if status in (401, 403):
        category = ErrorCategory.AUTH
        why = "the API key was refused (check ELEVENLABS_API_KEY)"
    elif status == 422:
        category = ErrorCategory.CLIENT
        why = f"the {what} was refused as invalid: {_detail(response)}"
    elif status == 429:
        category = ErrorCategory.RATE_LIMIT
        why = "too many requests; try again in a minute"
    elif status >= 500:
        category = ErrorCategory.SERVER
        why = "ElevenLabs failed; try again later"
    else:
        category = ErrorCategory.CLIENT
        why = _detail(response)
    return _error(f"ElevenLabs refused ({what}, HTTP {status}): {why}", category, status)


def _detail(response: httpx.Response) -> str:
    """The error's message, short (FastAPI-style ``detail``, a list or an object)."""
    try:
        detail = orjson.loads(response.content).get("detail")
    except (orjson.JSONDecodeError, AttributeError):
        return "no details"
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):
        loc = ".".join(str(p) for p in detail[0].get("loc", []))
        return f"{loc}: {detail[0].get('msg', '')}"[:200]
    if isinstance(detail, dict):
        return str(detail.get("message") or detail.get("status") or "")[:200]
    return str(detail)[:200]
