"""Opening the ElevenLabs agent WebSocket (the socket itself is agent_socket.py).

https://elevenlabs.io/docs/agents-platform/api-reference/agents-platform/websocket —
a public agent is reached at ``wss://…/v1/convai/conversation?agent_id=…``; a private
one through a signed URL from ``GET /v1/convai/conversation/get-signed-url`` with the
``xi-api-key`` header (protocols.md §4.1). The API root is configurable
(``ELEVENLABS_API_BASE_URL``), which is all that tells the vendor from the emulator.
Vendor exceptions become :class:`~callbridge.errors.ProviderError` here.
"""

from __future__ import annotations

import ssl
from urllib.parse import quote

import httpx
import websockets
from websockets.uri import parse_uri

from callbridge.adapters.elevenlabs.agent_socket import AgentLink, open_agent_socket
from callbridge.errors import ErrorCategory, ProviderError

__all__ = ["AgentConnector", "AgentLink"]


def _agent_error(message: str, category: ErrorCategory) -> ProviderError:
    return ProviderError(message, provider="elevenlabs", category=category)


class AgentConnector:
    """Opens agent sockets for one agent, signing the URL when an API key is set."""

    def __init__(
        self,
        *,
        api_base_url: str,
        agent_id: str,
        api_key: str | None,
        http: httpx.AsyncClient,
        open_timeout: float = 5.0,
    ) -> None:
        self._base = api_base_url.rstrip("/")
        self._agent_id = agent_id
        self._api_key = api_key
        self._http = http
        self._open_timeout = open_timeout
        self._ssl: ssl.SSLContext | None = None  # made once, on the first wss:// open

    async def url(self) -> str:
        """The conversation URL: signed for a private agent, public otherwise.

        Raises:
            ProviderError: the signed URL could not be had.
        """
        if not self._api_key:
            ws_base = (
                "wss://" + self._base[8:]
                if self._base.startswith("https://")
                else ("ws://" + self._base.removeprefix("http://"))
            )
            return f"{ws_base}/v1/convai/conversation?agent_id={quote(self._agent_id)}"
        try:
            response = await self._http.get(
                f"{self._base}/v1/convai/conversation/get-signed-url",
                params={"agent_id": self._agent_id},
                headers={"xi-api-key": self._api_key},
                timeout=self._open_timeout,
            )
        except httpx.TimeoutException as exc:
            raise _agent_error(
                "ElevenLabs did not sign a URL in time", ErrorCategory.TIMEOUT
            ) from exc
        except httpx.HTTPError as exc:
            raise _agent_error(
                f"could not reach ElevenLabs: {type(exc).__name__}", ErrorCategory.NETWORK
            ) from exc
        if response.status_code != 200:
            category = (
                ErrorCategory.AUTH
                if response.status_code in (401, 403)
                else (ErrorCategory.SERVER if response.status_code >= 500 else ErrorCategory.CLIENT)
            )
            raise ProviderError(
                f"ElevenLabs refused a signed URL (HTTP {response.status_code})",
                provider="elevenlabs",
                category=category,
                http_status=response.status_code,
            )
        signed = response.json().get("signed_url")
        if not isinstance(signed, str) or not signed.startswith(("ws://", "wss://")):
            raise _agent_error("ElevenLabs answered without a signed URL", ErrorCategory.SERVER)
        return signed

    async def open(self) -> AgentLink:
        """Open a conversation socket.

        Raises:
            ProviderError: the agent could not be reached or refused.
        """
        url = await self.url()
        try:
            uri = parse_uri(url)
            if uri.secure and self._ssl is None:
                self._ssl = ssl.create_default_context()
            return await open_agent_socket(
                uri, open_timeout=self._open_timeout, ssl_context=self._ssl
            )
        except TimeoutError as exc:
            raise _agent_error("the agent did not answer in time", ErrorCategory.TIMEOUT) from exc
        except (
            OSError,
            websockets.InvalidHandshake,
            websockets.InvalidURI,
            websockets.InvalidProxy,  # a malformed proxy in the environment
        ) as exc:
            raise _agent_error(
                f"could not connect to the agent: {type(exc).__name__}", ErrorCategory.NETWORK
            ) from exc
