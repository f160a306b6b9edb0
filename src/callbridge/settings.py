"""Configuration: environment variables or a ``.env`` file, read once by the composition root.

The vendor names are kept from the original deployment (``TWILIO_ACCOUNT_SID``,
``PUBLIC_BASE_URL`` with its alias ``NEXT_PUBLIC_APP_URL``, …); everything of our
own is ``CALLBRIDGE_*``. Nothing here is read at import time: :func:`load_settings`
is called by the CLI or by :func:`callbridge.bootstrap.build`.
"""

from __future__ import annotations

import re
from datetime import time
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from callbridge.cpu_slice import DEFAULT_SLICE_US
from callbridge.errors import ConfigError

DEFAULT_GREETING = (
    "Hello, this is an automated call from {site_name}, placed by an AI assistant "
    "because someone asked to be called at this number. This call may be recorded."
)


DEFAULT_VOICEMAIL_MESSAGE = (
    "Hello, this is an automated message from {site_name}. Someone asked us to call "
    "this number{reason}, and we are sorry we missed you. To talk with us, please ask "
    "for another call on our website. Goodbye."
)


class Voicemail(StrEnum):
    """What an answering machine gets (``CALLBRIDGE_VOICEMAIL``)."""

    HANGUP = "hangup"
    MESSAGE = "message"
    AGENT = "agent"


class Mode(StrEnum):
    """Who the callee talks to once the call is answered."""

    AGENT = "agent"
    OWNER = "owner"


class Role(StrEnum):
    """What one ``callbridge serve`` process does (``--role``).

    ``all`` is one process doing everything. ``control`` serves every door but the media
    stream and runs the background jobs; ``media`` serves only the media stream (plus
    the health doors) and renews the heartbeats of the streams it bridges. The two reach
    each other only through the shared stores (the database, Redis).
    """

    ALL = "all"
    CONTROL = "control"
    MEDIA = "media"

    @property
    def serves_media(self) -> bool:
        """Whether this process bridges media streams."""
        return self is not Role.CONTROL

    @property
    def serves_control(self) -> bool:
        """Whether this process serves the call path's HTTP doors and runs the jobs."""
        return self is not Role.MEDIA


class Consent(StrEnum):
    """Whether the callee must press 1 before the agent joins."""

    PRESS1 = "press1"
    OFF = "off"


class DialingPermissionsCheck(StrEnum):
    """What start-up does when Twilio's dialing permissions exceed the allowed countries."""

    OFF = "off"
    WARN = "warn"
    ENFORCE = "enforce"


class AgentFailure(StrEnum):
    """What happens to the callee when the agent cannot be reached."""

    HANGUP = "hangup"
    TRANSFER = "transfer"


def _env(*names: str) -> Any:
    return AliasChoices(*names)


def _csv(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return [str(part).strip() for part in value]


_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_SID = re.compile(r"^AC[0-9a-fA-F]{32}$")


class Settings(BaseSettings):
    """Every setting callbridge reads, with its environment name.

    ``TWILIO_API_BASE_URL`` is the root of Twilio's 2010-04-01 REST API. Twilio serves
    its Voice v1 API (the Dialing Permissions read by ``CALLBRIDGE_DIALING_PERMISSIONS_CHECK``
    and ``callbridge doctor --online``) from another domain: with the default root,
    ``https://voice.twilio.com`` is used; when the root is overridden (a proxy, the
    sandbox emulator), the same root must serve the ``/v1/...`` voice paths too.
    """

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
        case_sensitive=False,
    )

    # Vendors (names kept from the original deployment).
    twilio_account_sid: str | None = Field(None, validation_alias=_env("TWILIO_ACCOUNT_SID"))
    twilio_auth_token: SecretStr | None = Field(None, validation_alias=_env("TWILIO_AUTH_TOKEN"))
    twilio_phone_number: str | None = Field(None, validation_alias=_env("TWILIO_PHONE_NUMBER"))
    target_phone_number: str | None = Field(None, validation_alias=_env("TARGET_PHONE_NUMBER"))
    elevenlabs_api_key: SecretStr | None = Field(None, validation_alias=_env("ELEVENLABS_API_KEY"))
    elevenlabs_agent_id: str | None = Field(None, validation_alias=_env("ELEVENLABS_AGENT_ID"))
    elevenlabs_webhook_secret: SecretStr | None = Field(
        None,
        validation_alias=_env("ELEVENLABS_WEBHOOK_SECRET", "CALLBRIDGE_ELEVENLABS_WEBHOOK_SECRET"),
    )
    public_base_url: str | None = Field(
        None, validation_alias=_env("PUBLIC_BASE_URL", "NEXT_PUBLIC_APP_URL")
    )
    #: Where Twilio opens media streams, when the media processes have their own public
    #: address (default: PUBLIC_BASE_URL, with a proxy routing /api/call/media-stream).
    media_base_url: str | None = Field(None, validation_alias=_env("CALLBRIDGE_MEDIA_BASE_URL"))
    #: The CPU time slice a --role media process asks Linux for, in µs (0: the kernel's
    #: own); a shorter slice lets its frames preempt set-up work on a shared core.
    media_slice_us: int = Field(
        DEFAULT_SLICE_US, ge=0, le=100_000, validation_alias=_env("CALLBRIDGE_MEDIA_SLICE_US")
    )
    twilio_api_base_url: str = Field(
        "https://api.twilio.com", validation_alias=_env("TWILIO_API_BASE_URL")
    )
    elevenlabs_api_base_url: str = Field(
        "https://api.elevenlabs.io", validation_alias=_env("ELEVENLABS_API_BASE_URL")
    )
    database_url: str = Field(
        "sqlite+aiosqlite:///./callbridge.db", validation_alias=_env("DATABASE_URL")
    )
    redis_url: str | None = Field(None, validation_alias=_env("REDIS_URL"))

    # The sandbox.
    sandbox: bool | None = Field(None, validation_alias=_env("CALLBRIDGE_SANDBOX"))
    sandbox_callee: str = Field(
        "answer=2,digits=1,speak,hangup=60", validation_alias=_env("CALLBRIDGE_SANDBOX_CALLEE")
    )
    sandbox_callees: str = Field("", validation_alias=_env("CALLBRIDGE_SANDBOX_CALLEES"))
    """Callee scripts per destination: ``NUMBER=SCRIPT;PREFIX*=SCRIPT`` or a ``.json`` file."""

    # The product.
    mode: Mode = Field(Mode.AGENT, validation_alias=_env("CALLBRIDGE_MODE"))
    dial_target_only: bool = Field(False, validation_alias=_env("CALLBRIDGE_DIAL_TARGET_ONLY"))
    site_name: str = Field("our website", validation_alias=_env("CALLBRIDGE_SITE_NAME"))
    owner_name: str = Field("", validation_alias=_env("CALLBRIDGE_OWNER_NAME"))
    greeting: str = Field(DEFAULT_GREETING, validation_alias=_env("CALLBRIDGE_GREETING"))
    greeting_voice: str = Field("Polly.Joanna", validation_alias=_env("CALLBRIDGE_GREETING_VOICE"))
    first_message: str | None = Field(None, validation_alias=_env("CALLBRIDGE_FIRST_MESSAGE"))
    default_region: str = Field("US", validation_alias=_env("CALLBRIDGE_DEFAULT_REGION"))
    ring_timeout: int = Field(30, ge=5, le=600, validation_alias=_env("CALLBRIDGE_RING_TIMEOUT"))
    time_limit: int = Field(600, ge=30, le=14400, validation_alias=_env("CALLBRIDGE_TIME_LIMIT"))
    consent: Consent = Field(Consent.PRESS1, validation_alias=_env("CALLBRIDGE_CONSENT"))
    consent_timeout: int = Field(
        10, ge=3, le=60, validation_alias=_env("CALLBRIDGE_CONSENT_TIMEOUT")
    )
    quiet_hours: str | None = Field(None, validation_alias=_env("CALLBRIDGE_QUIET_HOURS"))
    voicemail: Voicemail = Field(Voicemail.MESSAGE, validation_alias=_env("CALLBRIDGE_VOICEMAIL"))
    voicemail_message: str = Field(
        DEFAULT_VOICEMAIL_MESSAGE, validation_alias=_env("CALLBRIDGE_VOICEMAIL_MESSAGE")
    )
    """Said after the beep (``message``) or given to the agent as its first message
    (``agent``); ``{site_name}`` and ``{reason}`` (" about <the visitor's reason>") are
    filled in."""
    # Twilio's AMD knobs, with Twilio's defaults and ranges (research notes §4.1). They
    # are sent only when they differ from Twilio's default, so Twilio's own tuning
    # applies unless the operator changes one.
    amd_timeout: int = Field(30, ge=3, le=59, validation_alias=_env("CALLBRIDGE_AMD_TIMEOUT"))
    amd_speech_threshold: int = Field(
        2400, ge=1000, le=6000, validation_alias=_env("CALLBRIDGE_AMD_SPEECH_THRESHOLD")
    )
    amd_speech_end_threshold: int = Field(
        1200, ge=500, le=5000, validation_alias=_env("CALLBRIDGE_AMD_SPEECH_END_THRESHOLD")
    )
    amd_silence_timeout: int = Field(
        5000, ge=2000, le=10000, validation_alias=_env("CALLBRIDGE_AMD_SILENCE_TIMEOUT")
    )
    agent_failure: AgentFailure = Field(
        AgentFailure.HANGUP, validation_alias=_env("CALLBRIDGE_AGENT_FAILURE")
    )
    agent_connect_timeout: float = Field(
        5.0, gt=0, le=30, validation_alias=_env("CALLBRIDGE_AGENT_CONNECT_TIMEOUT")
    )
    agent_stall_timeout: float = Field(
        10.0, ge=2, le=120, validation_alias=_env("CALLBRIDGE_AGENT_STALL_TIMEOUT")
    )
    prewarm: bool = Field(True, validation_alias=_env("CALLBRIDGE_PREWARM"))
    calls_enabled: bool = Field(True, validation_alias=_env("CALLBRIDGE_CALLS_ENABLED"))
    twilio_timeout: float = Field(
        10.0, gt=0, le=60, validation_alias=_env("CALLBRIDGE_TWILIO_TIMEOUT")
    )
    create_retries: int = Field(3, ge=0, le=8, validation_alias=_env("CALLBRIDGE_CREATE_RETRIES"))
    dialing_permissions_check: DialingPermissionsCheck = Field(
        DialingPermissionsCheck.WARN,
        validation_alias=_env("CALLBRIDGE_DIALING_PERMISSIONS_CHECK"),
    )

    # The doors.
    allowed_countries: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["US", "CA"], validation_alias=_env("CALLBRIDGE_ALLOWED_COUNTRIES")
    )
    allowed_number_types: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["MOBILE", "FIXED_LINE", "FIXED_LINE_OR_MOBILE"],
        validation_alias=_env("CALLBRIDGE_ALLOWED_NUMBER_TYPES"),
    )
    allowed_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias=_env("CALLBRIDGE_ALLOWED_ORIGINS")
    )
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias=_env("CALLBRIDGE_TRUSTED_PROXIES")
    )
    secret_key: SecretStr | None = Field(None, validation_alias=_env("CALLBRIDGE_SECRET_KEY"))
    token_ttl: int = Field(300, ge=30, le=3600, validation_alias=_env("CALLBRIDGE_TOKEN_TTL"))
    per_number_hourly: int = Field(3, ge=1, validation_alias=_env("CALLBRIDGE_PER_NUMBER_HOURLY"))
    per_number_daily: int = Field(5, ge=1, validation_alias=_env("CALLBRIDGE_PER_NUMBER_DAILY"))
    per_number_cooldown: int = Field(
        600, ge=0, validation_alias=_env("CALLBRIDGE_PER_NUMBER_COOLDOWN")
    )
    per_ip_hourly: int = Field(10, ge=1, validation_alias=_env("CALLBRIDGE_PER_IP_HOURLY"))
    per_ip_block_hourly: int = Field(
        30, ge=1, validation_alias=_env("CALLBRIDGE_PER_IP_BLOCK_HOURLY")
    )
    distinct_numbers_per_ip_daily: int = Field(
        3, ge=1, validation_alias=_env("CALLBRIDGE_DISTINCT_NUMBERS_PER_IP_DAILY")
    )
    per_country_daily: int = Field(200, ge=1, validation_alias=_env("CALLBRIDGE_PER_COUNTRY_DAILY"))
    per_prefix_daily: int = Field(20, ge=1, validation_alias=_env("CALLBRIDGE_PER_PREFIX_DAILY"))
    daily_spend_cap_cents: int | None = Field(
        5000, ge=0, validation_alias=_env("CALLBRIDGE_DAILY_SPEND_CAP_CENTS")
    )
    max_rate_cents_per_minute: int = Field(
        15, ge=0, validation_alias=_env("CALLBRIDGE_MAX_RATE_CENTS_PER_MINUTE")
    )
    max_concurrent_calls: int = Field(
        10, ge=1, validation_alias=_env("CALLBRIDGE_MAX_CONCURRENT_CALLS")
    )
    max_setups_in_flight: int = Field(
        16, ge=0, le=1000, validation_alias=_env("CALLBRIDGE_MAX_SETUPS_IN_FLIGHT")
    )
    """Call requests one process sets up at once; more are answered 503 ``overloaded``
    with ``Retry-After`` before any database work (0: no bound). Keep it below the
    database pool (30 connections on PostgreSQL) so status callbacks always find one."""
    turnstile_secret: SecretStr | None = Field(
        None, validation_alias=_env("CALLBRIDGE_TURNSTILE_SECRET")
    )
    turnstile_verify_url: str | None = Field(
        None, validation_alias=_env("CALLBRIDGE_TURNSTILE_VERIFY_URL")
    )
    turnstile_site_key: str | None = Field(
        None, validation_alias=_env("CALLBRIDGE_TURNSTILE_SITE_KEY")
    )

    # The operator.
    admin_password: SecretStr | None = Field(
        None, validation_alias=_env("CALLBRIDGE_ADMIN_PASSWORD")
    )
    admin_token: SecretStr | None = Field(None, validation_alias=_env("CALLBRIDGE_ADMIN_TOKEN"))
    alert_webhook_url: SecretStr | None = Field(
        None, validation_alias=_env("CALLBRIDGE_ALERT_WEBHOOK_URL")
    )
    """Where alerts are POSTed as JSON with a ``text`` field (a Slack or Mattermost
    incoming webhook works as is); a secret, since such a URL is its own credential."""
    alert_repeat_seconds: int = Field(
        300, ge=0, le=86400, validation_alias=_env("CALLBRIDGE_ALERT_REPEAT_SECONDS")
    )
    """The least time between two notifications of one kind of alert."""
    retention_days: int | None = Field(
        None, ge=1, validation_alias=_env("CALLBRIDGE_RETENTION_DAYS")
    )
    schedule_max_days: int = Field(
        7, ge=1, le=60, validation_alias=_env("CALLBRIDGE_SCHEDULE_MAX_DAYS")
    )
    """Call me later: how many days ahead a call may be asked for."""
    schedule_grace_minutes: int = Field(
        15, ge=0, le=24 * 60, validation_alias=_env("CALLBRIDGE_SCHEDULE_GRACE_MINUTES")
    )
    """How late a scheduled call may still be placed (every process was down at its
    time); later than this it is recorded ``missed``."""
    schedule_max_pending_per_number: int = Field(
        2, ge=1, validation_alias=_env("CALLBRIDGE_SCHEDULE_MAX_PENDING_PER_NUMBER")
    )
    """Scheduled calls waiting for one number at once."""
    schedule_max_pending_per_requester: int = Field(
        3, ge=1, validation_alias=_env("CALLBRIDGE_SCHEDULE_MAX_PENDING_PER_REQUESTER")
    )
    """Scheduled calls one requester (client address) may have waiting at once."""
    schedule_poll_seconds: float = Field(
        5.0, gt=0, le=60, validation_alias=_env("CALLBRIDGE_SCHEDULE_POLL_SECONDS")
    )
    """How often the scheduler looks for due calls."""
    retry_after_minutes: int = Field(
        10, ge=1, le=24 * 60, validation_alias=_env("CALLBRIDGE_RETRY_AFTER_MINUTES")
    )
    """A retry after busy / no-answer (when the visitor asked for one) comes this much later."""
    retry_max: int = Field(1, ge=0, le=5, validation_alias=_env("CALLBRIDGE_RETRY_MAX"))
    """At most this many retries of one call."""
    postcall_reconcile_minutes: int = Field(
        10, ge=0, le=1440, validation_alias=_env("CALLBRIDGE_POSTCALL_RECONCILE_MINUTES")
    )
    """Minutes after a call ends before its missing post-call webhook is made up for by
    fetching the conversation from ElevenLabs' Conversations API (security.md F.42; needs
    ``ELEVENLABS_API_KEY`` outside the sandbox); 0 disables the job."""
    reconcile_interval_seconds: float = Field(
        15.0, gt=0, le=3600, validation_alias=_env("CALLBRIDGE_RECONCILE_INTERVAL_SECONDS")
    )
    """Seconds between the reconciler's passes (one process works each pass, under a
    lease): it settles calls whose process died, stale calls and missing prices."""
    stream_heartbeat_seconds: float = Field(
        10.0, gt=0, le=600, validation_alias=_env("CALLBRIDGE_STREAM_HEARTBEAT_SECONDS")
    )
    """How often the process bridging a call's media stream renews that call's heartbeat
    (in Redis with ``REDIS_URL``, else in the database); a beat lasts three periods."""
    stranded_call_grace_seconds: float = Field(
        45.0, ge=0, le=3600, validation_alias=_env("CALLBRIDGE_STRANDED_CALL_GRACE_SECONDS")
    )
    """How long a streamed call in progress with no heartbeat must have been quiet before
    the reconciler fetches it from Twilio (its bridging process is taken to have died)."""
    drain_seconds: int = Field(30, ge=0, le=3600, validation_alias=_env("CALLBRIDGE_DRAIN_SECONDS"))
    log_format: str = Field("auto", validation_alias=_env("CALLBRIDGE_LOG_FORMAT"))

    @field_validator(
        "allowed_countries",
        "allowed_number_types",
        "allowed_origins",
        "trusted_proxies",
        mode="before",
    )
    @classmethod
    def _split_csv(cls, value: Any) -> list[str]:
        return _csv(value)

    @field_validator("allowed_countries", "allowed_number_types")
    @classmethod
    def _upper(cls, value: list[str]) -> list[str]:
        return [v.upper() for v in value]

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if origin == "*" or not re.match(r"^https?://[^/\s]+$", origin):
                raise ValueError(
                    f"{origin!r} is not an origin like https://www.example.com (no path, no *)"
                )
        return value

    @field_validator("twilio_account_sid")
    @classmethod
    def _sid(cls, value: str | None) -> str | None:
        if value and not _SID.match(value):
            raise ValueError("must be 'AC' followed by 32 hexadecimal characters")
        return value

    @field_validator("twilio_phone_number", "target_phone_number")
    @classmethod
    def _e164(cls, value: str | None) -> str | None:
        if value:
            compact = re.sub(r"[\s().-]", "", value)
            if not _E164.match(compact):
                raise ValueError("must be a phone number in E.164 form, like +12025550143")
            return compact
        return value

    @field_validator(
        "public_base_url", "media_base_url", "twilio_api_base_url", "elevenlabs_api_base_url"
    )
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not re.match(r"^https?://[^\s/]+", value):
            raise ValueError("must be an http(s) URL like https://calls.example.com")
        return value.rstrip("/")

    @field_validator("voicemail_message")
    @classmethod
    def _voicemail_message(cls, value: str) -> str:
        try:
            value.format(site_name="", reason="")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(
                f"may use only {{site_name}} and {{reason}} as placeholders ({exc})"
            ) from None
        return value

    @field_validator("quiet_hours")
    @classmethod
    def _quiet(cls, value: str | None) -> str | None:
        if value is None or value.lower() == "off":
            return value
        if not re.match(r"^\d{2}:\d{2}-\d{2}:\d{2}$", value):
            raise ValueError("must be like 08:00-21:00, or off")
        return value

    # Derived views.

    @property
    def has_twilio_credentials(self) -> bool:
        """Whether both Twilio credentials are present."""
        return bool(self.twilio_account_sid and self.twilio_auth_token)

    @property
    def use_sandbox(self) -> bool:
        """Whether the emulators stand in for Twilio and ElevenLabs."""
        if self.sandbox is not None:
            return self.sandbox
        return not self.has_twilio_credentials

    def quiet_window(self) -> tuple[time, time] | None:
        """The allowed calling window, or None when quiet hours are off.

        The default is 08:00–21:00, except in the sandbox, where it is off.
        """
        raw = self.quiet_hours
        if raw is None:
            raw = "off" if self.use_sandbox else "08:00-21:00"
        if raw.lower() == "off":
            return None
        start, end = raw.split("-")
        return time.fromisoformat(start), time.fromisoformat(end)


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = err.get("loc") or ("?",)
    name = str(loc[0]).upper()
    msg = str(err.get("msg", "is wrong")).removeprefix("Value error, ")
    return f"The setting {name} is wrong: {msg}."


def load_settings(**overrides: Any) -> Settings:
    """Read the settings from the environment and ``.env``.

    Raises:
        ConfigError: with one sentence naming the first wrong setting.
    """
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(_first_error(exc)) from None
