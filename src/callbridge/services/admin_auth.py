"""The operator's credentials: the ``/admin`` login, its session cookie and CSRF, the API token.

- ``CALLBRIDGE_ADMIN_PASSWORD`` is hashed with scrypt when the app is built and the
  clear text is not kept; a login attempt is hashed the same way and compared in
  constant time. Failed logins are limited per client address, counted in a
  :class:`SignInState` every process shares (Redis) or in this process's memory.
- The session is a cookie signed with the container's secret key (HMAC-SHA256):
  ``HttpOnly``, ``SameSite=Strict``, ``Secure`` when ``PUBLIC_BASE_URL`` is https, valid
  for :data:`SESSION_TTL_S`. Logging out revokes it in the same shared state, so a
  copied cookie stops working on every server behind the load balancer.
- Every form carries a CSRF token bound to the session (or, for the login form, to a
  pre-session cookie), checked in constant time.
- ``Authorization: Bearer $CALLBRIDGE_ADMIN_TOKEN`` opens the JSON API; with no token
  configured the API refuses everyone.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from pydantic import SecretStr

from callbridge.errors import AuthRejected, PolicyRejected

COOKIE = "cb_admin"
PRE_COOKIE = "cb_admin_pre"
SESSION_TTL_S = 12 * 3600
MAX_FAILURES = 5
FAILURE_WINDOW_S = 15 * 60

_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}


class AdminApiOff(AuthRejected):
    """The admin API is refused because no token is configured."""

    code = "admin_api_off"
    http_status = 403


class CsrfRejected(AuthRejected):
    """A form came without its CSRF token, or with someone else's."""

    code = "csrf"
    http_status = 403


class TooManyLogins(PolicyRejected):
    """Too many failed logins from one address."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            "Too many failed sign-ins. Wait a few minutes and try again.",
            reason="admin_login_rate",
            http_status=429,
            retry_after=retry_after,
            code="too_many_logins",
        )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class AdminSession:
    """A signed-in operator."""

    sid: str
    expires: int

    @property
    def who(self) -> str:
        """A short, stable, non-secret name of the session for logs."""
        return "admin:" + self.sid[:8]


class SignInState(Protocol):
    """What sign-in must remember across requests: failed logins and revoked sessions.

    Times are wall-clock seconds (every process must agree on them).
    """

    async def failures(self, ip: str, since: float) -> list[float]:
        """The times of ``ip``'s failed logins after ``since``, oldest first."""
        ...

    async def add_failure(self, ip: str, at: float, keep_s: float) -> None:
        """Count one failed login, remembered for ``keep_s`` seconds."""
        ...

    async def clear_failures(self, ip: str) -> None:
        """Forget ``ip``'s failures (it signed in)."""
        ...

    async def revoke(self, sid: str, until: int) -> None:
        """Revoke session ``sid``; remembered until it would have expired anyway."""
        ...

    async def is_revoked(self, sid: str) -> bool:
        """Whether ``sid`` was revoked."""
        ...


class MemorySignInState:
    """A :class:`SignInState` in this process's memory (one server)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._failed: dict[str, list[float]] = {}
        self._revoked: dict[str, int] = {}

    async def failures(self, ip: str, since: float) -> list[float]:
        """See :class:`SignInState`."""
        times = [t for t in self._failed.get(ip, []) if t > since]
        if times:
            self._failed[ip] = times
        else:
            self._failed.pop(ip, None)
        return times

    async def add_failure(self, ip: str, at: float, keep_s: float) -> None:
        """See :class:`SignInState`."""
        if len(self._failed) > 10_000:  # bound memory under a spray of addresses
            horizon = self._clock() - keep_s
            for stale in [k for k, v in self._failed.items() if v[-1] <= horizon]:
                del self._failed[stale]
        self._failed.setdefault(ip, []).append(at)

    async def clear_failures(self, ip: str) -> None:
        """See :class:`SignInState`."""
        self._failed.pop(ip, None)

    async def revoke(self, sid: str, until: int) -> None:
        """See :class:`SignInState`."""
        now = int(self._clock())
        self._revoked = {s: exp for s, exp in self._revoked.items() if exp > now}
        self._revoked[sid] = until

    async def is_revoked(self, sid: str) -> bool:
        """See :class:`SignInState`."""
        return sid in self._revoked


class AdminAuth:
    """Checks the operator's password, sessions, CSRF tokens and the API token."""

    def __init__(
        self,
        *,
        password: SecretStr | None,
        token: SecretStr | None,
        secret_key: bytes,
        secure_cookie: bool,
        state: SignInState | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._key = hashlib.sha256(b"callbridge-admin|" + secret_key).digest()
        self._salt = secrets.token_bytes(16)
        self._password_hash = (
            self._hash(password.get_secret_value()) if password is not None else None
        )
        self._token = token.get_secret_value().encode() if token is not None else None
        self.secure_cookie = secure_cookie
        self._now = wall_clock
        self._state = state or MemorySignInState(wall_clock)

    @property
    def login_enabled(self) -> bool:
        """Whether a password is configured."""
        return self._password_hash is not None

    def _hash(self, password: str) -> bytes:
        return hashlib.scrypt(password.encode(), salt=self._salt, **_SCRYPT)

    def _sign(self, payload: bytes) -> str:
        return _b64(hmac.new(self._key, payload, hashlib.sha256).digest())

    # Password ---------------------------------------------------------------------------

    async def check_password(self, attempt: str, ip: str) -> None:
        """Accept the right password, or count a failure and refuse.

        scrypt runs in a worker thread, off the event loop.

        Raises:
            TooManyLogins: this address failed :data:`MAX_FAILURES` times in the last
                :data:`FAILURE_WINDOW_S` seconds.
            AuthRejected: no password is configured, or this is not it.
        """
        now = self._now()
        recent = await self._state.failures(ip, now - FAILURE_WINDOW_S)
        if len(recent) >= MAX_FAILURES:
            oldest = recent[len(recent) - MAX_FAILURES]
            raise TooManyLogins(max(1, int(oldest + FAILURE_WINDOW_S - now) + 1))
        if self._password_hash is None:
            raise AuthRejected("Sign-in is off: set CALLBRIDGE_ADMIN_PASSWORD.")
        given = await asyncio.to_thread(self._hash, attempt[:1024])
        if not hmac.compare_digest(given, self._password_hash):
            await self._state.add_failure(ip, now, FAILURE_WINDOW_S)
            raise AuthRejected("That password is not right.")
        await self._state.clear_failures(ip)

    # Sessions ---------------------------------------------------------------------------

    def new_session(self) -> tuple[AdminSession, str]:
        """A fresh session and its cookie value."""
        expires = int(self._now()) + SESSION_TTL_S
        session = AdminSession(sid=secrets.token_urlsafe(18), expires=expires)
        payload = json.dumps({"sid": session.sid, "exp": session.expires}).encode()
        return session, _b64(payload) + "." + self._sign(payload)

    async def session_of(self, cookie: str | None) -> AdminSession | None:
        """The session a cookie value proves, or None (bad signature, expired, revoked)."""
        if not cookie or "." not in cookie or len(cookie) > 512:
            return None
        body, signature = cookie.rsplit(".", 1)
        try:
            payload = _unb64(body)
        except ValueError:
            return None
        if not hmac.compare_digest(self._sign(payload), signature):
            return None
        try:
            data = json.loads(payload)
            session = AdminSession(sid=str(data["sid"]), expires=int(data["exp"]))
        except (ValueError, KeyError, TypeError):
            return None
        now = int(self._now())
        if session.expires <= now or await self._state.is_revoked(session.sid):
            return None
        return session

    async def revoke(self, session: AdminSession) -> None:
        """Log a session out, on every process sharing the state."""
        await self._state.revoke(session.sid, session.expires)

    # CSRF -------------------------------------------------------------------------------

    def csrf_for(self, binding: str) -> str:
        """The CSRF token of a session id (or of a pre-session cookie value)."""
        return self._sign(b"csrf|" + binding.encode())

    def check_csrf(self, binding: str | None, token: str | None) -> None:
        """Raise AuthRejected unless ``token`` is ``binding``'s CSRF token.

        Raises:
            CsrfRejected: the token is missing or wrong (403).
        """
        if not binding or not token or not hmac.compare_digest(self.csrf_for(binding), token):
            raise CsrfRejected("This form has expired. Reload the page and try again.")

    # API token --------------------------------------------------------------------------

    def check_bearer(self, authorization: str | None) -> None:
        """Accept ``Bearer <CALLBRIDGE_ADMIN_TOKEN>``.

        Raises:
            AdminApiOff: no token is configured (403).
            AuthRejected: the header is missing or the token is wrong (401).
        """
        if self._token is None:
            raise AdminApiOff("The admin API is off: set CALLBRIDGE_ADMIN_TOKEN to use it.")
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), self._token
        ):
            raise AuthRejected("A valid admin token is needed (Authorization: Bearer …).")
