"""The ``ElevenLabs-Signature`` header of post-call webhooks: sign and verify.

Scheme (https://elevenlabs.io/docs/agents-platform/workflows/post-call-webhooks,
"Authentication"; protocols.md §4.10): the header is ``t=<unix seconds>,v0=<hex>``
where ``hex`` is HMAC-SHA256 with the webhook secret (UTF-8) as key over
``f"{t}.{raw_body}"``. A receiver recomputes it on the raw body, before parsing
any JSON, and refuses timestamps older than 30 minutes, as the official SDK's
``construct_event`` does.

Both functions are pure (the time is a parameter), so the emulator signs with
:func:`sign` and our webhook route checks with :func:`verify`.
"""

from __future__ import annotations

import hashlib
import hmac

from callbridge.errors import WebhookRejected

__all__ = ["HEADER", "sign", "verify"]

#: The header's name, as ElevenLabs sends it.
HEADER = "ElevenLabs-Signature"

_MAX_HEADER = 1024


def _digest(body: bytes, secret: str, timestamp: str) -> str:
    message = timestamp.encode("ascii") + b"." + body
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def sign(body: bytes, secret: str, timestamp: int) -> str:
    """Return the ``ElevenLabs-Signature`` header value for ``body`` sent at ``timestamp``.

    Args:
        body: the exact bytes of the request body.
        secret: the webhook's shared secret.
        timestamp: unix seconds.
    """
    return f"t={int(timestamp)},v0={_digest(body, secret, str(int(timestamp)))}"


def verify(
    body: bytes, header: str | None, secret: str, now: float, tolerance_s: int = 1800
) -> None:
    """Check a webhook's ``ElevenLabs-Signature`` header.

    Args:
        body: the raw request body, exactly as received.
        header: the header's value, or ``None`` when it is missing.
        secret: the webhook's shared secret.
        now: the current unix time in seconds.
        tolerance_s: how old ``t`` may be (30 minutes, like the SDK). A ``t``
            more than this far in the future is refused too.

    Raises:
        WebhookRejected: missing or malformed header, stale timestamp, or a
            signature that does not match (compared in constant time).
    """
    if not secret:
        raise WebhookRejected("no webhook secret is configured", code="webhook_not_configured")
    if not header:
        raise WebhookRejected("missing ElevenLabs-Signature header", code="missing_signature")
    if len(header) > _MAX_HEADER:
        raise WebhookRejected("ElevenLabs-Signature header is too long", code="bad_signature")
    timestamp: str | None = None
    signatures: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            timestamp = value
        elif key == "v0":
            signatures.append(value)
    if timestamp is None or not signatures or not timestamp.isascii() or not timestamp.isdigit():
        raise WebhookRejected("ElevenLabs-Signature has no t=…,v0=… pair", code="bad_signature")
    age = now - int(timestamp)
    if age > tolerance_s or age < -tolerance_s:
        raise WebhookRejected(
            "ElevenLabs-Signature timestamp is outside tolerance", code="stale_signature"
        )
    expected = _digest(body, secret, timestamp)
    if not any(c.isascii() and hmac.compare_digest(expected, c) for c in signatures):
        raise WebhookRejected("ElevenLabs-Signature does not match the body", code="bad_signature")
