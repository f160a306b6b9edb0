"""Twilio request signatures (``X-Twilio-Signature``), checked on every Twilio door.

https://www.twilio.com/docs/usage/webhooks/webhooks-security — the algorithm is
twilio-python's :class:`~twilio.request_validator.RequestValidator` (HMAC-SHA1 of
the full public URL plus the sorted POST parameters), which also accepts the
URL with or without the default port. The URL is rebuilt from
``PUBLIC_BASE_URL``, never from the request's Host, so signatures hold behind a
TLS-terminating proxy and a spoofed ``X-Forwarded-Host`` cannot help.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from twilio.request_validator import RequestValidator

from callbridge.errors import WebhookRejected


class TwilioSignatureChecker:
    """Checks ``X-Twilio-Signature`` against the account's auth token.

    With no auth token configured every request is refused (fail closed).
    """

    def __init__(self, auth_token: str | None) -> None:
        self._validator = RequestValidator(auth_token) if auth_token else None

    @property
    def configured(self) -> bool:
        """Whether an auth token is set (else every webhook is refused)."""
        return self._validator is not None

    def check(
        self,
        url: str,
        params: Mapping[str, str] | Sequence[tuple[str, str]],
        signature: str | None,
        *,
        fragments: Sequence[str] = (),
    ) -> None:
        """Accept the request or raise.

        Args:
            url: the public URL Twilio requested, query string included.
            params: the POST form parameters (empty for GET and WebSocket handshakes).
            signature: the ``X-Twilio-Signature`` header.
            fragments: the connection overrides (``rc=…&rp=…``, without ``#``) that we
                put on this URL. UNCONFIRMED whether Twilio signs the URL with its
                ``#fragment`` or without it (the request never carries it; one
                third-party source says without), so the signature may match either
                ``url`` or ``url#fragment``. Both are URLs we gave Twilio ourselves,
                so accepting both lets no other request through.

        Raises:
            WebhookRejected: the signature is missing, wrong, or no token is configured.
        """
        if self._validator is None:
            raise WebhookRejected("webhooks are refused: TWILIO_AUTH_TOKEN is not configured")
        if not signature:
            raise WebhookRejected("missing X-Twilio-Signature")
        values = _multi(params)
        candidates = [url]
        if not url.endswith("/") and "?" not in url:
            candidates.append(url + "/")  # Twilio's advice for stream handshakes
        candidates.extend(f"{url}#{fragment}" for fragment in fragments)
        if not any(self._validator.validate(u, values, signature) for u in candidates):
            raise WebhookRejected("X-Twilio-Signature does not match")


class _MultiDict(dict[str, str]):
    """A dict that also answers ``getall`` for repeated form fields."""

    def __init__(self, pairs: Sequence[tuple[str, str]]) -> None:
        super().__init__()
        self._all: dict[str, list[str]] = {}
        for key, value in pairs:
            self._all.setdefault(key, []).append(value)
            self[key] = value

    def getall(self, key: str) -> list[str]:
        return self._all[key]


def _multi(params: Mapping[str, str] | Sequence[tuple[str, str]]) -> _MultiDict:
    if isinstance(params, Mapping):
        return _MultiDict(list(params.items()))
    return _MultiDict(list(params))
