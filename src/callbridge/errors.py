"""The one exception hierarchy of callbridge.

Everything the project raises on purpose derives from :class:`CallbridgeError`;
adapters translate vendor exceptions (twilio, httpx, websockets, SQLAlchemy)
into these at their edge, so nothing above an adapter catches a vendor type::

    CallbridgeError
    ├── ConfigError            a setting is missing or wrong (one clear sentence)
    ├── ValidationFailed       a request's input is malformed (400/422)
    │   └── InvalidNumber      the phone number does not parse or is not callable
    ├── PolicyRejected         the abuse policy refuses the request (403/422/429/503)
    ├── Overloaded             more call set-ups than the server can do in time (503)
    ├── AuthRejected           a token, signature or credential is missing or wrong
    │   └── WebhookRejected    a vendor webhook failed its signature or identity check
    ├── NotFound               the named thing does not exist (404)
    ├── Conflict               the request collides with stored state (409)
    ├── InvalidTransition      a lifecycle moved in a way its state machine forbids
    ├── ProviderError          a vendor (Twilio, ElevenLabs) refused or failed
    │   └── TwilioRefused      Twilio answered with an error code
    ├── ProtocolError          a wire message could not be decoded
    └── StoreError             the database or Redis failed (503 + Retry-After)
        └── Unavailable        a store could not be reached: it is down, restarting or slow
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

#: Seconds a client is told to wait (``Retry-After``) while the database or Redis is away.
OUTAGE_RETRY_AFTER_S: Final = 5


class CallbridgeError(Exception):
    """Root of every error callbridge raises on purpose.

    Attributes:
        code: a stable, machine-readable code (snake_case) for JSON bodies.
        message: one sentence a person can read; never contains a secret.
    """

    code: str = "error"
    http_status: int = 500

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return self.message


class ConfigError(CallbridgeError):
    """A setting is missing or wrong; the message names it and says what to do."""

    code = "config_error"


class ValidationFailed(CallbridgeError):
    """The request's input is malformed."""

    code = "invalid_request"
    http_status = 400


class InvalidNumber(ValidationFailed):
    """The phone number does not parse or is not a callable number."""

    code = "invalid_number"
    http_status = 422


class InvalidSchedule(ValidationFailed):
    """A call asked for later at a time that cannot be: past, too far ahead, no offset."""

    code = "invalid_schedule"
    http_status = 422


class PolicyRejected(CallbridgeError):
    """The abuse policy refuses the request.

    Attributes:
        reason: why, for metrics and the operator (never shown when it would leak,
            e.g. do-not-call membership).
        retry_after: seconds after which trying again may succeed, if known.
    """

    code = "policy_rejected"
    http_status = 403

    def __init__(
        self,
        message: str,
        *,
        reason: str,
        http_status: int = 403,
        retry_after: int | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message, code=code)
        self.reason = reason
        self.http_status = http_status
        self.retry_after = retry_after


class OutsideCallingHours(PolicyRejected):
    """A call asked for (now or for later) in the callee's quiet hours: 409 with the
    next allowed times, which the page offers as one-click choices.

    Attributes:
        next_allowed: the next instants the window is open, each as
            ``{"utc": ISO 8601, "local": ISO 8601 in the callee's zone, "zone": name}``.
    """

    code = "quiet_hours"

    def __init__(
        self,
        message: str,
        *,
        next_allowed: list[dict[str, str]],
        retry_after: int | None = None,
    ) -> None:
        super().__init__(
            message,
            reason="quiet_hours",
            http_status=409,
            retry_after=retry_after,
            code="quiet_hours",
        )
        self.next_allowed = next_allowed


class Overloaded(CallbridgeError):
    """The server is past what it can set up in time: try again shortly.

    Attributes:
        retry_after: seconds after which trying again should succeed.
    """

    code = "overloaded"
    http_status = 503

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class AuthRejected(CallbridgeError):
    """A token, signature or credential is missing or wrong."""

    code = "unauthorized"
    http_status = 401


class WebhookRejected(AuthRejected):
    """A vendor webhook failed its signature or identity check."""

    code = "forbidden"
    http_status = 403


class NotFound(CallbridgeError):
    """The named thing does not exist."""

    code = "not_found"
    http_status = 404


class Conflict(CallbridgeError):
    """The request collides with stored state."""

    code = "conflict"
    http_status = 409


class InvalidTransition(CallbridgeError):
    """A lifecycle moved in a way its state machine forbids."""

    code = "invalid_transition"
    http_status = 409

    def __init__(self, kind: str, current: str, target: str) -> None:
        super().__init__(f"{kind} cannot go from {current!r} to {target!r}")
        self.kind = kind
        self.current = current
        self.target = target


class ErrorCategory(StrEnum):
    """How a provider failure should be handled."""

    CLIENT = "client"  # our request was wrong or refused; do not retry
    AUTH = "auth"  # credentials wrong; do not retry
    RATE_LIMIT = "rate_limit"  # retry with backoff
    SERVER = "server"  # provider trouble; retry with backoff
    NETWORK = "network"  # no answer or connection failed; outcome may be unknown
    TIMEOUT = "timeout"  # gave up waiting; outcome may be unknown


class ProviderError(CallbridgeError):
    """A vendor refused or failed.

    Attributes:
        provider: ``"twilio"``, ``"elevenlabs"`` or ``"alert_webhook"``.
        category: what kind of failure, which decides retrying.
        provider_code: the vendor's own error code, when it gave one.
    """

    code = "provider_error"
    http_status = 502

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        category: ErrorCategory,
        provider_code: int | None = None,
        http_status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.provider = provider
        self.category = category
        self.provider_code = provider_code
        self.upstream_status = http_status

    @property
    def is_permanent(self) -> bool:
        """Whether retrying the same request cannot help."""
        return self.category in (ErrorCategory.CLIENT, ErrorCategory.AUTH)


class TwilioRefused(ProviderError):
    """Twilio answered with an error code (e.g. 21211 invalid 'To')."""

    code = "twilio_refused"


class ProtocolError(CallbridgeError):
    """A wire message could not be decoded (bad JSON, missing field, wrong type)."""

    code = "protocol_error"
    http_status = 400


class StoreError(CallbridgeError):
    """The database or Redis failed; the request changed nothing and may be tried again.

    Attributes:
        dependency: which store failed: ``"database"`` or ``"redis"``.
        retry_after: seconds after which trying again may succeed.
    """

    code = "store_error"
    http_status = 503

    def __init__(
        self, message: str, *, dependency: str = "database", retry_after: int = OUTAGE_RETRY_AFTER_S
    ) -> None:
        super().__init__(message)
        self.dependency = dependency
        self.retry_after = retry_after


class Unavailable(StoreError):
    """A store could not be reached (refused, lost or timed-out connection).

    An outage, not a bug: the web layer answers 503 ``unavailable`` with
    ``Retry-After``, and Twilio retries a status callback that met one.
    """

    code = "unavailable"


class SpendUnknown(StoreError):
    """The quota store has no spend counter for the day (it lost its data, or the day is new).

    The caller rebuilds the counter from the spend ledger and asks again.
    """

    code = "spend_unknown"
