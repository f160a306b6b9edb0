"""ElevenLabs' Conversations API: fetch one conversation's details.

``GET {ELEVENLABS_API_BASE_URL}/v1/convai/conversations/{conversation_id}`` with the
``xi-api-key`` header (https://elevenlabs.io/docs/api-reference/conversations/get;
elevenlabs-python ``GetConversationResponseModel``). The answer carries the same fields
as the post-call webhook's ``data`` object (protocols.md §4.10) plus a few of its own;
:func:`postcall_data` keeps the webhook's fields, so the post-call processing cannot
tell which way a conversation arrived. The base URL is all that tells the vendor from
the emulator. httpx errors and HTTP refusals become project errors here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from callbridge.errors import ErrorCategory, NotFound, ProtocolError, ProviderError
from callbridge.ports import AgentConversation

#: The fields of a ``post_call_transcription`` webhook's ``data`` (protocols.md §4.10).
WEBHOOK_DATA_FIELDS = (
    "agent_id",
    "conversation_id",
    "status",
    "user_id",
    "transcript",
    "metadata",
    "analysis",
    "conversation_initiation_client_data",
    "has_audio",
    "has_user_audio",
    "has_response_audio",
)
#: A long call's details (transcript, tool calls, metrics) stay well under this.
MAX_CONVERSATION_BODY = 8 * 1024 * 1024


def postcall_data(details: Mapping[str, Any]) -> dict[str, Any]:
    """The conversation details as a post-call webhook's ``data`` object."""
    return {name: details[name] for name in WEBHOOK_DATA_FIELDS if name in details}


class ElevenLabsConversations:
    """Implements :class:`~callbridge.ports.ConversationHistory` over httpx.

    Args:
        api_base_url: ``ELEVENLABS_API_BASE_URL`` (the vendor or the emulator).
        api_key: the ``xi-api-key``; None sends none (only the emulator accepts that).
        http: the shared client (a ``transport=`` seam for tests).
        timeout: seconds to wait for an answer.
    """

    def __init__(
        self,
        *,
        api_base_url: str,
        api_key: str | None,
        http: httpx.AsyncClient,
        timeout: float = 10.0,
    ) -> None:
        self._base = api_base_url.rstrip("/")
        self._api_key = api_key
        self._http = http
        self._timeout = timeout

    async def fetch_conversation(self, conversation_id: str) -> AgentConversation:
        """``GET /v1/convai/conversations/{conversation_id}``.

        Raises:
            NotFound: 404, ElevenLabs has no such conversation (or no longer).
            ProviderError: 401/403 (``AUTH``), 429 (``RATE_LIMIT``), 5xx (``SERVER``),
                other refusals (``CLIENT``), no answer (``NETWORK``/``TIMEOUT``).
            ProtocolError: the answer is not this conversation's details.
        """
        headers = {"xi-api-key": self._api_key} if self._api_key else {}
        url = f"{self._base}/v1/convai/conversations/{quote(conversation_id, safe='')}"
        try:
            response = await self._http.get(url, headers=headers, timeout=self._timeout)
        except httpx.TimeoutException as exc:
            raise _error("ElevenLabs did not answer in time", ErrorCategory.TIMEOUT) from exc
        except httpx.HTTPError as exc:
            raise _error(
                f"could not reach ElevenLabs: {type(exc).__name__}", ErrorCategory.NETWORK
            ) from exc
        if response.status_code == 404:
            raise NotFound(f"ElevenLabs has no conversation {conversation_id[:64]!r}")
        if response.status_code != 200:
            raise _refusal(response.status_code)
        if len(response.content) > MAX_CONVERSATION_BODY:
            raise ProtocolError("ElevenLabs' conversation details are too large")
        try:
            details = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise ProtocolError("ElevenLabs' conversation details are not JSON") from None
        if not isinstance(details, dict) or details.get("conversation_id") != conversation_id:
            raise ProtocolError("ElevenLabs answered with another or no conversation")
        status = details.get("status")
        if not isinstance(status, str):
            raise ProtocolError("ElevenLabs' conversation details have no status")
        return AgentConversation(conversation_id, status, postcall_data(details))


def _error(message: str, category: ErrorCategory, status: int | None = None) -> ProviderError:
    return ProviderError(message, provider="elevenlabs", category=category, http_status=status)


def _refusal(status: int) -> ProviderError:
    if status in (401, 403):
        category = ErrorCategory.AUTH
    elif status == 429:
        category = ErrorCategory.RATE_LIMIT
    elif status >= 500:
        category = ErrorCategory.SERVER
    else:
        category = ErrorCategory.CLIENT
    return _error(f"ElevenLabs refused the conversation (HTTP {status})", category, status)
