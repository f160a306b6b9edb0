"""Short-lived signed tokens: the page's single-use call token and the per-call stream token.

Both are HMACs under ``CALLBRIDGE_SECRET_KEY``; nothing secret ever reaches the browser.

* The **session token** (``GET /api/call/session``) is ``v1.<expiry>.<nonce>.<mac>``,
  the MAC binding expiry, nonce and the page's origin. It is single use: the nonce is
  spent atomically in a :class:`NonceLedger` (in process, or Redis when shared).
* The **stream token** is derived from the call id, so the TwiML can carry it without
  storing it; the store keeps only its SHA-256 and spends it on the stream's ``start``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from typing import Protocol

from callbridge.errors import AuthRejected


class NonceLedger(Protocol):
    """Remembers spent nonces until they expire."""

    async def spend(self, nonce: str, ttl_s: int) -> bool:
        """Record ``nonce`` as used; True only the first time."""
        ...


class MemoryNonceLedger:
    """A :class:`NonceLedger` for one process."""

    def __init__(self) -> None:
        self._spent: dict[str, float] = {}

    async def spend(self, nonce: str, ttl_s: int) -> bool:
        now = time.monotonic()
        if len(self._spent) > 10_000:
            self._spent = {n: exp for n, exp in self._spent.items() if exp > now}
        expiry = self._spent.get(nonce)
        if expiry is not None and expiry > now:
            return False
        self._spent[nonce] = now + ttl_s
        return True


def _mac(key: bytes, message: str) -> str:
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


class SessionTokens:
    """Issues and redeems the browser's single-use call tokens."""

    def __init__(self, key: bytes, ledger: NonceLedger, *, ttl_s: int = 300) -> None:
        self._key = key
        self._ledger = ledger
        self.ttl_s = ttl_s

    def issue(self, origin: str, *, now: float | None = None) -> str:
        """A new token for a page served to ``origin``."""
        expiry = int((now if now is not None else time.time()) + self.ttl_s)
        nonce = secrets.token_urlsafe(16)
        mac = _mac(self._key, f"session|{expiry}|{nonce}|{origin}")
        return f"v1.{expiry}.{nonce}.{mac}"

    async def redeem(self, token: str | None, origin: str, *, now: float | None = None) -> None:
        """Accept the token once, or raise.

        Raises:
            AuthRejected: missing, malformed, tampered, for another origin, expired or used.
        """
        if not token:
            raise AuthRejected("This page's call token is missing. Reload the page and try again.")
        parts = token.split(".")
        if len(parts) != 4 or parts[0] != "v1" or not parts[1].isdigit():
            raise AuthRejected("This page's call token is not valid. Reload the page.")
        _, expiry_s, nonce, mac = parts
        expected = _mac(self._key, f"session|{expiry_s}|{nonce}|{origin}")
        if not hmac.compare_digest(mac, expected):
            raise AuthRejected("This page's call token is not valid. Reload the page.")
        current = now if now is not None else time.time()
        if int(expiry_s) < current:
            raise AuthRejected("This page's call token has expired. Reload the page.")
        if not await self._ledger.spend(nonce, self.ttl_s + 60):
            raise AuthRejected("This page's call token was already used. Reload the page.")


class StreamTokens:
    """Derives and hashes the per-call token carried in the stream's ``<Parameter>``."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def token_for(self, call_id: str) -> str:
        """The token for ``call_id`` (the same every time)."""
        return _mac(self._key, f"stream|{call_id}")[:40]

    @staticmethod
    def digest(token: str) -> str:
        """What the store keeps: SHA-256 of the token."""
        return hashlib.sha256(token.encode()).hexdigest()


class CancelTokens:
    """The capability to cancel one scheduled call, given only to the page that asked.

    An HMAC of the call id under the secret key: it cannot be guessed from the id, and
    it needs no storage. It also cancels the retries scheduled for that call.
    """

    def __init__(self, key: bytes) -> None:
        self._key = key

    def token_for(self, call_id: str) -> str:
        """The token for ``call_id`` (the same every time)."""
        return _mac(self._key, f"cancel|{call_id}")[:40]

    def check(self, call_id: str, token: str | None) -> None:
        """Accept the token for ``call_id`` or raise.

        Raises:
            AuthRejected: missing or not this call's token.
        """
        if not token or not hmac.compare_digest(token, self.token_for(call_id)):
            raise AuthRejected("This page may not cancel that call.")


def keyed_hash(key: bytes, value: str) -> str:
    """A keyed hash of ``value`` (phone numbers and IPs in stores and logs)."""
    return _mac(key, f"id|{value}")[:32]
