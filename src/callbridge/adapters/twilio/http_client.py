"""An ``httpx`` transport for the official twilio SDK.

twilio-python accepts any :class:`twilio.http.async_http_client.AsyncHttpClient`;
ours sends through a shared ``httpx.AsyncClient`` (one connection pool, a
``transport=`` seam for tests). It sends no idempotency header: Twilio's REST API
defines none for creating a call (``I-Twilio-Idempotency-Token`` is a header Twilio
sends *to* webhooks), so de-duplicating retries is the caller's job (see
:mod:`callbridge.services.placing`). It never logs request bodies (they hold phone
numbers).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from twilio.http.async_http_client import AsyncHttpClient
from twilio.http.response import Response
from twilio.rest import Client


class HttpxTwilioClient(AsyncHttpClient):  # type: ignore[misc]
    """twilio-python's async HTTP client interface over ``httpx``."""

    def __init__(self, client: httpx.AsyncClient, *, timeout: float = 10.0) -> None:
        super().__init__(None, True, timeout)
        self._client = client
        self.timeout = timeout

    async def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - twilio-python's interface
        allow_redirects: bool = False,
    ) -> Response:
        """Send one request and wrap the answer as the SDK expects."""
        response = await self._client.request(
            method.upper(),
            url,
            params=_fields(params),
            data=_fields(data),
            headers=dict(headers or {}),
            auth=auth,
            timeout=timeout or self.timeout,
            follow_redirects=allow_redirects,
        )
        return Response(response.status_code, response.text, response.headers)

    async def close(self) -> None:
        """The shared ``httpx`` client is closed by its owner."""


@asynccontextmanager
async def sdk_client(
    account_sid: str,
    auth_token: str,
    *,
    request_timeout: float,
    transport: httpx.AsyncBaseTransport | None = None,
) -> AsyncIterator[Client]:
    """A twilio SDK client over its own ``httpx`` client, closed on exit.

    Opening one per read works from any event loop (start-up checks run before the
    server's). The caller points the SDK domain it uses at its base URL.
    """
    async with httpx.AsyncClient(transport=transport, timeout=request_timeout) as http:
        yield Client(
            account_sid, auth_token, http_client=HttpxTwilioClient(http, timeout=request_timeout)
        )


def _fields(values: dict[str, object] | None) -> dict[str, str | list[str]] | None:
    # The SDK passes repeated fields (StatusCallbackEvent) as lists; httpx sends a
    # list value as repeated form keys.
    if not values:
        return None
    out: dict[str, str | list[str]] = {}
    for key, value in values.items():
        if isinstance(value, list | tuple):
            out[key] = [str(v) for v in value]
        elif value is not None:
            out[key] = str(value)
    return out
