"""Cloudflare Turnstile, verified on the server (https://developers.cloudflare.com/turnstile/get-started/server-side-validation/).

The page sends the widget's token in the ``X-Turnstile-Token`` header; we POST it
with our secret to ``siteverify``. The check fails closed: no token or a rejected
one is 403, and a verifier that times out or answers nonsense is 503 — never a pass.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

import httpx

from callbridge.errors import AuthRejected, ErrorCategory, ProviderError

DEFAULT_VERIFY_URL = "https://challenges.cloudflare.com/turnstile/v0/siteverify"
#: The ``action`` our page renders the widget with (``web/static/callbridge.js``).
WIDGET_ACTION = "call"


def hostnames_of(origins: Iterable[str]) -> frozenset[str]:
    """The hostnames of origins like ``https://www.example.com`` (for ``expected_hostname``)."""
    return frozenset(host for o in origins if (host := urlsplit(o).hostname))


class HumanCheckFailed(AuthRejected):
    """The visitor did not pass the human check."""

    code = "human_check_failed"
    http_status = 403


class TurnstileVerifier:
    """Verifies Turnstile tokens with ``siteverify``."""

    def __init__(
        self,
        *,
        secret: str,
        http: httpx.AsyncClient,
        verify_url: str = DEFAULT_VERIFY_URL,
        expected_hostname: str | Iterable[str] | None = None,
        expected_action: str | None = None,
        timeout: float = 5.0,
    ) -> None:
        self._secret = secret
        self._http = http
        self._url = verify_url
        self._hostnames: frozenset[str] | None = (
            None
            if expected_hostname is None
            else frozenset({expected_hostname})
            if isinstance(expected_hostname, str)
            else frozenset(expected_hostname)
        )
        self._action = expected_action
        self._timeout = timeout

    async def verify(self, token: str | None, remote_ip: str | None) -> None:
        """Accept the token or raise.

        Raises:
            HumanCheckFailed: no token, or ``siteverify`` rejected it (or its hostname
                or action is not ours).
            ProviderError: ``siteverify`` did not answer usefully (the request is refused).
        """
        if not token:
            raise HumanCheckFailed("Please complete the human check and try again.")
        data = {"secret": self._secret, "response": token}
        if remote_ip:
            data["remoteip"] = remote_ip
        try:
            response = await self._http.post(self._url, data=data, timeout=self._timeout)
            result = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise _unavailable() from exc
        if not isinstance(result, dict) or not isinstance(result.get("success"), bool):
            raise _unavailable()
        if not result["success"]:
            raise HumanCheckFailed("The human check did not pass. Please try again.")
        if self._hostnames and result.get("hostname") not in self._hostnames:
            raise HumanCheckFailed("The human check was made for another site.")
        if self._action and result.get("action") != self._action:
            raise HumanCheckFailed("The human check was made for another action.")


def _unavailable() -> ProviderError:
    error = ProviderError(
        "We can't check that you are human right now. Please try again in a minute.",
        provider="turnstile",
        category=ErrorCategory.SERVER,
        http_status=503,
    )
    error.http_status = 503
    error.code = "human_check_unavailable"
    return error
