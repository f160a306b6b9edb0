"""The operator's credentials: the ``/admin`` login, its session cookie and CSRF, the API token.

- ``CALLBRIDGE_ADMIN_PASSWORD`` is hashed with scrypt when the app is built and the
  clear text is not kept; a login attempt is hashed the same way and compared in
  constant time. Failed logins are limited per client address (in memory, per process).
- The session is a cookie signed with the container's secret key (HMAC-SHA256):
  ``HttpOnly``, ``SameSite=Strict``, ``Secure`` when ``PUBLIC_BASE_URL`` is https, valid
  for :data:`SESSION_TTL_S`. Logging out revokes it in this process.
- Every form carries a CSRF token bound to the session (or, for the login form, to a
  pre-session cookie), checked in constant time.
- ``Authorization: Bearer $CALLBRIDGE_ADMIN_TOKEN`` opens the JSON API; with no token
  configured the API refuses everyone.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

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


class FailedLogins:
    """Failed logins per client address in a sliding window (memory of one process)."""

    def __init__(
        self,
        limit: int = MAX_FAILURES,
        window_s: float = FAILURE_WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limit = limit
        self._window = window_s
        self._clock = clock
        self._seen: dict[str, deque[float]] = {}

    def _recent(self, ip: str) -> deque[float]:
        now = self._clock()
        times = self._seen.setdefault(ip, deque())
        while times and times[0] <= now - self._window:
            times.popleft()
        return times

    def check(self, ip: str) -> None:
        """Raise :class:`TooManyLogins` while ``ip`` has too many recent failures."""
        times = self._recent(ip)
        if len(times) >= self._limit:
            raise TooManyLogins(max(1, int(times[0] + self._window - self._clock()) + 1))

    def failed(self, ip: str) -> None:
        """Count one failure."""
        self._recent(ip).append(self._clock())
        if len(self._seen) > 10_000:  # bound memory under a spray of addresses
            for stale in [k for k, v in self._seen.items() if not v][:5000]:
                del self._seen[stale]

    def succeeded(self, ip: str) -> None:
        """Forget ``ip``'s failures."""
        self._seen.pop(ip, None)


class AdminAuth:
    """Checks the operator's password, sessions, CSRF tokens and the API token."""

    def __init__(
        self,
        *,
        password: SecretStr | None,
        token: SecretStr | None,
        secret_key: bytes,
        secure_cookie: bool,
        wall_clock: Callable[[], float] = time.time,
        failures: FailedLogins | None = None,
    ) -> None:
        self._key = hashlib.sha256(b"callbridge-admin|" + secret_key).digest()
        self._salt = secrets.token_bytes(16)
        self._password_hash = (
            self._hash(password.get_secret_value()) if password is not None else None
        )
        self._token = token.get_secret_value().encode() if token is not None else None
        self.secure_cookie = secure_cookie
        self._now = wall_clock
        self.failures = failures or FailedLogins()
        self._revoked: dict[str, int] = {}

    @property
    def login_enabled(self) -> bool:
        """Whether a password is configured."""
        return self._password_hash is not None

    def _hash(self, password: str) -> bytes:
        return hashlib.scrypt(password.encode(), salt=self._salt, **_SCRYPT)

    def _sign(self, payload: bytes) -> str:
        return _b64(hmac.new(self._key, payload, hashlib.sha256).digest())

    # Password ---------------------------------------------------------------------------

    def check_password(self, attempt: str, ip: str) -> None:
        """Accept the right password, or count a failure and refuse.

        Blocking (scrypt): call it in a thread.

        Raises:
            TooManyLogins: this address failed too often lately.
            AuthRejected: no password is configured, or this is not it.
        """
        self.failures.check(ip)
        if self._password_hash is None:
            raise AuthRejected("Sign-in is off: set CALLBRIDGE_ADMIN_PASSWORD.")
        if not hmac.compare_digest(self._hash(attempt[:1024]), self._password_hash):
            self.failures.failed(ip)
            raise AuthRejected("That password is not right.")
        self.failures.succeeded(ip)

    # Sessions ---------------------------------------------------------------------------

    def new_session(self) -> tuple[AdminSession, str]:
        """A fresh session and its cookie value."""
        expires = int(self._now()) + SESSION_TTL_S
        session = AdminSession(sid=secrets.token_urlsafe(18), expires=expires)
        payload = json.dumps({"sid": session.sid, "exp": session.expires}).encode()
        return session, _b64(payload) + "." + self._sign(payload)

    def session_of(self, cookie: str | None) -> AdminSession | None:
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
        if session.expires <= now or session.sid in self._revoked:
            return None
        return session

    def revoke(self, session: AdminSession) -> None:
        """Log a session out (in this process)."""
        now = int(self._now())
        self._revoked = {sid: exp for sid, exp in self._revoked.items() if exp > now}
        self._revoked[session.sid] = session.expires

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
