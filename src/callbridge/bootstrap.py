"""The composition root: the one place that picks real or sandbox adapters, SQLite or PostgreSQL.

:func:`build` turns :class:`~callbridge.settings.Settings` into a :class:`Container`
of wired services, and reads top to bottom as the list of what callbridge is made of:
the vendors (real or the sandbox), the plumbing (database, Redis, HTTP, tokens), the
safety group (:class:`Safety`), the call path (admission, placing, lifecycle, bridge),
the operator's group (:class:`Operator`) and the background jobs (:class:`Jobs`).
Every dependency is a constructor argument; nothing is wired by assigning attributes
afterwards. :meth:`Container.start` does the I/O (migrations, emulators, jobs) and
:meth:`Container.aclose` undoes it. Nothing else in the package reads settings or opens
connections, and nothing does I/O at import time.

This module and the CLI's ``demo``/``sandbox`` commands are the only production code
that imports :mod:`callbridge.sandbox` (an import contract in ``pyproject.toml``).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httpx
import structlog

from callbridge.adapters.alert_webhook import WebhookAlertSink
from callbridge.adapters.db.do_not_call import SqlDoNotCallList
from callbridge.adapters.db.leases import SqlHeartbeats, SqlLease
from callbridge.adapters.db.migrate import upgrade
from callbridge.adapters.db.postcall import SqlPostCallRecords
from callbridge.adapters.db.postcall_fetches import SqlPostCallFetches
from callbridge.adapters.db.queries import OperatorQueries
from callbridge.adapters.db.refusals import RefusalLog
from callbridge.adapters.db.schedule import SqlSchedule
from callbridge.adapters.db.spend_ledger import SqlSpendLedger
from callbridge.adapters.db.store import ReconcileQueries, SqlCallStore, make_engine
from callbridge.adapters.elevenlabs.agent_link import AgentConnector
from callbridge.adapters.elevenlabs.conversations import ElevenLabsConversations
from callbridge.adapters.live_events import MemoryEventBus
from callbridge.adapters.live_events_redis import RedisEventBus
from callbridge.adapters.quota.memory import MemoryQuotaStore
from callbridge.adapters.redis_errors import ping
from callbridge.adapters.redis_shared import (
    RedisFlag,
    RedisHeartbeats,
    RedisLease,
    RedisNonceLedger,
    RedisSignInState,
)
from callbridge.adapters.turnstile import (
    DEFAULT_VERIFY_URL,
    WIDGET_ACTION,
    TurnstileVerifier,
    hostnames_of,
)
from callbridge.adapters.twilio.calls import TwilioCalls
from callbridge.adapters.twilio.dialing_permissions import TwilioDialingPermissions, voice_base_url
from callbridge.adapters.twilio.signature import TwilioSignatureChecker
from callbridge.adapters.twilio.twiml import TwimlBuilder, TwimlConfig
from callbridge.domain.amd import (
    DEFAULT_SILENCE_TIMEOUT_MS,
    DEFAULT_SPEECH_END_THRESHOLD_MS,
    DEFAULT_SPEECH_THRESHOLD_MS,
    DEFAULT_TIMEOUT_S,
    VoicemailPolicy,
    detection_mode,
)
from callbridge.domain.call import CallMode
from callbridge.domain.phrases import DRAINING
from callbridge.domain.policy import NumberPolicy, QuietHours
from callbridge.errors import ConfigError
from callbridge.metrics import Metrics
from callbridge.ports import Clock, EventBus, Heartbeats, Lease, QuotaStore
from callbridge.sandbox import SANDBOX_AGENT_ID
from callbridge.services.admin_auth import AdminAuth, MemorySignInState
from callbridge.services.admission import PolicyAdmission, limits_in_force
from callbridge.services.alerts import Alerts
from callbridge.services.bridge import BridgeConfig
from callbridge.services.bridge_host import AgentSessions, BridgeHost, HostConfig, SessionConfig
from callbridge.services.dialing_permissions import CheckMode, DialingPermissionsGuard
from callbridge.services.drain import DrainConfig, Drainer, OwnLiveCalls
from callbridge.services.job_lease import JobLease
from callbridge.services.killswitch import KillSwitch
from callbridge.services.lifecycle import CallLifecycle, LifecycleConfig
from callbridge.services.live_feed import ListingBus, OperatorLive, TurnFeed
from callbridge.services.operator import OperatorService
from callbridge.services.origins import OriginPolicy, origins_in_force
from callbridge.services.overload import SetupGate
from callbridge.services.placing import (
    AmdConfig,
    PlacingConfig,
    PlacingService,
    ScheduleConfig,
)
from callbridge.services.postcall import PostCallService
from callbridge.services.postcall_reconcile import PostCallReconciler
from callbridge.services.readiness import Probe, Readiness
from callbridge.services.reconcile import Prices, Reconciler
from callbridge.services.retention import RetentionTask
from callbridge.services.scheduler import Scheduler, SchedulerConfig
from callbridge.services.tokens import (
    CancelTokens,
    MemoryNonceLedger,
    NonceLedger,
    SessionTokens,
    StreamTokens,
)
from callbridge.services.voicemail import Voicemail, VoicemailConfig
from callbridge.services.writer import BackgroundWriter
from callbridge.settings import AgentFailure, Consent, Mode, Role, Settings

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from callbridge.sandbox.elevenlabs.emulator import ElevenLabsEmulator
    from callbridge.sandbox.twilio.emulator import TwilioEmulator

_log = structlog.get_logger(__name__)

SANDBOX_FROM = "+12025550100"
#: Seconds a call's in-flight slot outlives its ring timeout and time limit.
SLOT_MARGIN_S = 60


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()


@dataclass(frozen=True, slots=True)
class Sandbox:
    """The emulators, when the sandbox stands in for the vendors."""

    twilio: TwilioEmulator
    elevenlabs: ElevenLabsEmulator


@dataclass(frozen=True, slots=True)
class Vendors:
    """Who callbridge talks to: Twilio and ElevenLabs, or the sandbox standing in for them."""

    public_base_url: str
    account_sid: str
    auth_token: str | None
    from_number: str
    agent_id: str | None
    twilio_base_url: str
    elevenlabs_base_url: str
    sandbox: Sandbox | None


@dataclass(frozen=True, slots=True)
class Safety:
    """What stops abuse and surprises: the kill switch, alerts, Twilio's dialing
    permissions (security.md B18) and the request's human check (Turnstile, or None)."""

    killswitch: KillSwitch
    alerts: Alerts
    dialing_permissions: DialingPermissionsGuard
    human_check: TurnstileVerifier | None


@dataclass(frozen=True, slots=True)
class Operator:
    """The operator's doors: the use cases, the refusal log, sign-in and the SIGTERM drain."""

    service: OperatorService
    refusals: RefusalLog
    admin_auth: AdminAuth
    drain: Drainer
    live: OperatorLive


@dataclass(frozen=True, slots=True)
class Jobs:
    """Background work, started and stopped with the container."""

    prices: Prices
    reconciler: Reconciler
    postcall_reconciler: PostCallReconciler | None
    retention: RetentionTask
    scheduler: Scheduler


@dataclass
class Container:
    """Everything the web layer and the CLI use, wired once."""

    settings: Settings
    public_base_url: str
    account_sid: str
    auth_token: str | None
    from_number: str
    agent_id: str | None
    elevenlabs_base_url: str
    store: SqlCallStore
    http: httpx.AsyncClient
    redis: Redis | None
    telephony: TwilioCalls
    signatures: TwilioSignatureChecker
    session_tokens: SessionTokens
    stream_tokens: StreamTokens
    cancel_tokens: CancelTokens
    events: EventBus
    metrics: Metrics
    safety: Safety
    admission: PolicyAdmission
    placing: PlacingService
    lifecycle: CallLifecycle
    bridge: BridgeHost
    postcall: PostCallService
    twiml: TwimlBuilder
    operator: Operator
    jobs: Jobs
    clock: Clock
    secret_key: bytes
    setup_gate: SetupGate
    readiness: Readiness
    origins: OriginPolicy
    writer: BackgroundWriter
    media_base_url: str
    role: Role = Role.ALL
    sandbox: Sandbox | None = None

    @property
    def draining(self) -> bool:
        """Whether this process is draining (readiness fails, new calls are refused)."""
        return self.operator.drain.draining

    async def start(self) -> None:
        """Migrate the database, start the emulators and the background jobs.

        The jobs run where the control doors are; the streams' heartbeats where the
        streams are (see :class:`Role`).
        """
        await upgrade(self.settings.database_url)
        await self.safety.alerts.start()
        if self.sandbox is not None:
            await self.sandbox.twilio.start()
        self.writer.start()
        if self.role.serves_media:
            await self.bridge.start()
        if self.role.serves_control:
            self.setup_gate.start()
            await self.jobs.retention.start()
            self.jobs.reconciler.start()
            if self.jobs.postcall_reconciler is not None:
                self.jobs.postcall_reconciler.start()
            self.jobs.scheduler.start()

    async def aclose(self) -> None:
        """Stop everything :meth:`start` started and close every pool."""
        await self.setup_gate.aclose()
        await self.jobs.scheduler.aclose()
        await self.jobs.retention.aclose()
        await self.jobs.reconciler.aclose()
        if self.jobs.postcall_reconciler is not None:
            await self.jobs.postcall_reconciler.aclose()
        await self.bridge.aclose()
        await self.lifecycle.aclose()
        await self.writer.aclose()  # the records of the streams that just ended
        if self.sandbox is not None:
            await self.sandbox.twilio.aclose()
        await self.postcall.aclose()
        await self.safety.alerts.stop()
        await self.http.aclose()
        await self.store.aclose()
        if self.redis is not None:
            await self.redis.aclose()


def _amd(settings: Settings) -> AmdConfig:
    """Twilio's AMD for every call; a knob is sent only when it differs from Twilio's
    default, so Twilio's own tuning applies to what the operator leaves alone."""

    def changed(value: int, default: int) -> int | None:
        return value if value != default else None

    return AmdConfig(
        mode=detection_mode(VoicemailPolicy(settings.voicemail.value)),
        timeout_s=changed(settings.amd_timeout, DEFAULT_TIMEOUT_S),
        speech_threshold_ms=changed(settings.amd_speech_threshold, DEFAULT_SPEECH_THRESHOLD_MS),
        speech_end_threshold_ms=changed(
            settings.amd_speech_end_threshold, DEFAULT_SPEECH_END_THRESHOLD_MS
        ),
        silence_timeout_ms=changed(settings.amd_silence_timeout, DEFAULT_SILENCE_TIMEOUT_MS),
    )


def _stream_url(public_base_url: str) -> str:
    if public_base_url.startswith("https://"):
        return "wss://" + public_base_url.removeprefix("https://") + "/api/call/media-stream"
    return "ws://" + public_base_url.removeprefix("http://") + "/api/call/media-stream"


def _override_or(value: str, vendor_default: str, sandbox_default: str) -> str:
    """In the sandbox, an explicitly set base URL wins over the in-process emulator."""
    return value if value != vendor_default else sandbox_default


def _secret_key(settings: Settings, sandbox: bool) -> bytes:
    """The key of the call tokens, stream tokens and sign-in cookies.

    It must be the same in every process that shares the work: one process's page token
    is spent at another. A key derived from the real ``TWILIO_AUTH_TOKEN`` is shared by
    construction (every process has the same token). A random key is this process's
    alone, so with ``REDIS_URL`` set (which says other processes share the work) and no
    ``CALLBRIDGE_SECRET_KEY``, the server refuses to start rather than answer 401s.

    Raises:
        ConfigError: ``REDIS_URL`` is set and there is no shared key.
    """
    if settings.secret_key is not None:
        return settings.secret_key.get_secret_value().encode()
    if settings.twilio_auth_token is not None and not sandbox:
        # Derived, so every process behind a load balancer agrees without another secret.
        token = settings.twilio_auth_token.get_secret_value()
        return hashlib.sha256(b"callbridge-key|" + token.encode()).digest()
    if settings.redis_url:
        raise ConfigError(SHARED_KEY_MISSING)
    return secrets.token_bytes(32)


#: Why a server that expects company and has no shared key refuses to start.
SHARED_KEY_MISSING = (
    "REDIS_URL is set, so other callbridge processes share this one's work, but "
    "CALLBRIDGE_SECRET_KEY is not: set the same CALLBRIDGE_SECRET_KEY (e.g. from "
    "`openssl rand -hex 32`) in every process."
)

#: Why separate roles need the standalone emulators.
ROLES_NEED_ONE_SANDBOX = (
    "--role control and --role media are separate processes, which need one set of "
    "emulators: run `callbridge sandbox` once and set TWILIO_API_BASE_URL and "
    "ELEVENLABS_API_BASE_URL to its addresses."
)


def in_process_emulators(settings: Settings) -> bool:
    """Whether this process would talk to emulators of its own (the sandbox with a vendor's
    base URL left at its default), which no other process can reach."""
    return settings.use_sandbox and (
        settings.twilio_api_base_url == "https://api.twilio.com"
        or settings.elevenlabs_api_base_url == "https://api.elevenlabs.io"
    )


def build(
    settings: Settings,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    role: Role = Role.ALL,
    clock: Clock | None = None,
) -> Container:
    """Wire callbridge for ``settings``, as a process of ``role`` (with ``clock``, tests
    move time: the scheduler).

    Raises:
        ConfigError: a setting needed for this configuration is missing or contradictory.
    """
    vendors = _vendors(settings, host, port)
    public = vendors.public_base_url
    media_base = settings.media_base_url or public
    sandbox = vendors.sandbox is not None
    if role is not Role.ALL and in_process_emulators(settings):
        raise ConfigError(ROLES_NEED_ONE_SANDBOX)

    # Plumbing.
    key = _secret_key(settings, sandbox)
    clock = clock or SystemClock()
    http = httpx.AsyncClient(timeout=httpx.Timeout(10.0, connect=5.0))
    store = SqlCallStore(make_engine(settings.database_url))
    redis = _redis(settings)
    owner = _process_id()
    leases: Lease = RedisLease(redis) if redis is not None else SqlLease(store.engine, clock)
    heartbeats: Heartbeats = (
        RedisHeartbeats(redis, owner=owner)
        if redis is not None
        else SqlHeartbeats(store.engine, clock, owner=owner)
    )
    bus: EventBus = RedisEventBus(redis) if redis is not None else MemoryEventBus()
    events = ListingBus(bus)  # every status change also reaches the operator's list
    stream_tokens = StreamTokens(key)
    cancel_tokens = CancelTokens(key)
    schedule = SqlSchedule(store)
    ledger: NonceLedger = RedisNonceLedger(redis) if redis is not None else MemoryNonceLedger()
    session_tokens = SessionTokens(key, ledger, ttl_s=settings.token_ttl)
    metrics = Metrics()
    telephony = TwilioCalls(
        account_sid=vendors.account_sid,
        auth_token=vendors.auth_token or "",
        api_base_url=vendors.twilio_base_url,
        http=http,
        request_timeout=settings.twilio_timeout,
    )
    twiml = _twiml(settings, vendors, media_base)

    # Safety, then the call path.
    safety = _safety(settings, vendors, http, metrics, redis)
    refusals = RefusalLog(store.engine)
    admission = _build_admission(
        settings, store, key, clock, metrics, sandbox, redis, safety, refusals
    )
    placing = PlacingService(
        config=PlacingConfig(
            public_base_url=public,
            from_number=vendors.from_number,
            mode=CallMode(settings.mode.value),
            target_number=settings.target_phone_number,
            dial_target_only=settings.dial_target_only,
            ring_timeout=settings.ring_timeout,
            time_limit=settings.time_limit,
            create_retries=settings.create_retries,
            calls_enabled=settings.calls_enabled,
            schedule=ScheduleConfig(
                max_days=settings.schedule_max_days,
                max_pending_per_number=settings.schedule_max_pending_per_number,
                max_pending_per_requester=settings.schedule_max_pending_per_requester,
                number_retry_after_s=admission.limits.number_retry_after_s,
                retry_after=timedelta(minutes=settings.retry_after_minutes),
            ),
            machine_detection=_amd(settings),
        ),
        store=store,
        telephony=telephony,
        admission=admission,
        stream_tokens=stream_tokens,
        events=events,
        clock=clock,
        alerts=safety.alerts,
        pending=schedule,
        cancel_tokens=cancel_tokens,
        metrics=metrics,
    )
    # Built before the lifecycle, which tells them when a call is answered and when it ends.
    # A pre-warmed session is only claimed by a stream in the same process.
    sessions = _agent_sessions(settings, vendors, http, prewarm=role is Role.ALL)
    writer = BackgroundWriter(store=store, metrics=metrics)
    prices = Prices(store=store, telephony=telephony, spend=admission)
    voicemail = Voicemail(
        config=VoicemailConfig(
            policy=VoicemailPolicy(settings.voicemail.value),
            message_template=settings.voicemail_message,
            site_name=settings.site_name,
            public_base_url=public,
        ),
        store=store,
        telephony=telephony,
        twiml=twiml,
        stream_tokens=stream_tokens,
        clock=clock,
        metrics=metrics,
        on_machine=sessions,
    )
    lifecycle = CallLifecycle(
        config=LifecycleConfig(
            public_base_url=public,
            consent_required=settings.consent is Consent.PRESS1,
            target_number=settings.target_phone_number,
        ),
        store=store,
        twiml=twiml,
        stream_tokens=stream_tokens,
        events=events,
        clock=clock,
        admission=admission,
        telephony=telephony,
        on_answered=sessions,
        on_ended=prices,
        on_opt_out=admission.add_do_not_call,
        writer=writer,
        metrics=metrics,
        voicemail=voicemail,
    )
    bridge = BridgeHost(
        config=HostConfig(
            target_number=settings.target_phone_number,
            transfer_on_failure=settings.agent_failure is AgentFailure.TRANSFER,
            bridge=BridgeConfig(
                time_limit_s=float(settings.time_limit),
                stall_timeout_s=settings.agent_stall_timeout,
            ),
            heartbeat_s=settings.stream_heartbeat_seconds,
        ),
        sessions=sessions,
        lifecycle=lifecycle,
        store=store,
        telephony=telephony,
        twiml=twiml,
        events=events,
        metrics=metrics,
        clock=clock,
        writer=writer,
        heartbeats=heartbeats,
        turns=TurnFeed(bus),
    )
    webhook_secret = settings.elevenlabs_webhook_secret
    postcall = PostCallService(
        secret=webhook_secret.get_secret_value() if webhook_secret else None,
        calls=store,
        records=SqlPostCallRecords(store.engine),
        clock=clock,
    )

    # The operator's doors and the background jobs.
    operator = _operator(
        settings,
        public,
        store,
        clock,
        key,
        metrics,
        redis,
        refusals,
        bridge,
        telephony,
        twiml,
        OperatorLive(lifecycle=lifecycle, store=store, bus=bus),
    )
    jobs = Jobs(
        prices=prices,
        reconciler=Reconciler(
            reads=ReconcileQueries(store),
            store=store,
            telephony=telephony,
            lifecycle=lifecycle,
            prices=prices,
            clock=clock,
            time_limit_s=settings.time_limit,
            interval_s=settings.reconcile_interval_seconds,
            lease=JobLease(leases, name="reconciler", owner=owner, ttl_s=_LEASE_TTL_S),
            heartbeats=heartbeats,
            stranded_grace_s=settings.stranded_call_grace_seconds,
            errors=metrics,
            backoff_cap_s=max(60.0, settings.reconcile_interval_seconds),
            slots=admission,
        ),
        postcall_reconciler=_postcall_reconciler(
            settings,
            vendors,
            store,
            http,
            clock,
            metrics,
            postcall,
            JobLease(leases, name="postcall_reconciler", owner=owner, ttl_s=_LEASE_TTL_S),
        ),
        retention=RetentionTask(operator.service, settings.retention_days, errors=metrics),
        scheduler=Scheduler(
            config=SchedulerConfig(
                grace=timedelta(minutes=settings.schedule_grace_minutes),
                retry_max=settings.retry_max,
                poll_s=settings.schedule_poll_seconds,
            ),
            book=schedule,
            placing=placing,
            store=store,
            events=events,
            clock=clock,
            metrics=metrics,
            draining=lambda: operator.drain.draining,
        ),
    )
    return Container(
        settings=settings,
        public_base_url=public,
        account_sid=vendors.account_sid,
        auth_token=vendors.auth_token,
        from_number=vendors.from_number,
        agent_id=vendors.agent_id,
        elevenlabs_base_url=vendors.elevenlabs_base_url,
        store=store,
        http=http,
        redis=redis,
        telephony=telephony,
        signatures=TwilioSignatureChecker(vendors.auth_token),
        session_tokens=session_tokens,
        stream_tokens=stream_tokens,
        cancel_tokens=cancel_tokens,
        events=events,
        metrics=metrics,
        safety=safety,
        admission=admission,
        placing=placing,
        lifecycle=lifecycle,
        bridge=bridge,
        postcall=postcall,
        twiml=twiml,
        operator=operator,
        jobs=jobs,
        clock=clock,
        secret_key=key,
        setup_gate=SetupGate(max_in_flight=settings.max_setups_in_flight, metrics=metrics),
        readiness=_readiness(store, redis),
        origins=OriginPolicy(origins_in_force(settings.allowed_origins, public, sandbox=sandbox)),
        writer=writer,
        media_base_url=media_base,
        role=role,
        sandbox=vendors.sandbox,
    )


def configuration_problems(
    settings: Settings, *, host: str = "127.0.0.1", port: int = 8000
) -> list[str]:
    """Every missing or contradictory setting that would stop :func:`build`, each as one
    sentence, in the order :func:`build` meets them (``doctor`` prints them all)."""
    problems: list[str] = []
    sandbox = settings.use_sandbox
    public = settings.public_base_url or (f"http://{host}:{port}" if sandbox else None)
    if public is None:
        problems.append(
            "PUBLIC_BASE_URL is not set: give the https address Twilio can reach, "
            "like https://calls.example.com."
        )
    elif not sandbox and not public.startswith("https://"):
        problems.append("PUBLIC_BASE_URL must start with https:// outside the sandbox.")
    if not sandbox:
        if not settings.twilio_account_sid or settings.twilio_auth_token is None:
            problems.append("TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN must both be set.")
        if not settings.twilio_phone_number:
            problems.append("TWILIO_PHONE_NUMBER is not set: give your Twilio number.")
        if settings.mode is Mode.AGENT and not settings.elevenlabs_agent_id:
            problems.append("ELEVENLABS_AGENT_ID is not set: agent mode needs the agent's id.")
    if (settings.mode is Mode.OWNER or settings.dial_target_only) and not (
        settings.target_phone_number
    ):
        problems.append("TARGET_PHONE_NUMBER is not set: owner and target-only modes need it.")
    return problems


def _vendors(settings: Settings, host: str, port: int) -> Vendors:
    """Twilio and ElevenLabs as configured, or the sandbox's emulators in their place.

    Raises:
        ConfigError: a setting needed for this configuration is missing or contradictory.
    """
    problems = configuration_problems(settings, host=host, port=port)
    if problems:
        raise ConfigError(problems[0])
    sandbox = settings.use_sandbox
    public = settings.public_base_url or f"http://{host}:{port}"
    emulators: Sandbox | None = None
    if sandbox:
        account_sid = settings.twilio_account_sid or "AC" + secrets.token_hex(16)
        auth_token: str | None = (
            settings.twilio_auth_token.get_secret_value()
            if settings.twilio_auth_token
            else secrets.token_hex(16)
        )
        from_number = settings.twilio_phone_number or SANDBOX_FROM
        agent_id: str | None = settings.elevenlabs_agent_id or SANDBOX_AGENT_ID
        twilio_base = _override_or(
            settings.twilio_api_base_url, "https://api.twilio.com", f"{public}/sandbox/twilio"
        )
        el_base = _override_or(
            settings.elevenlabs_api_base_url,
            "https://api.elevenlabs.io",
            f"{public}/sandbox/elevenlabs",
        )
        emulators = _build_sandbox(settings, account_sid, auth_token or "", public)
    else:
        assert settings.twilio_account_sid and settings.twilio_auth_token is not None
        assert settings.twilio_phone_number  # configuration_problems said so otherwise
        account_sid = settings.twilio_account_sid
        auth_token = settings.twilio_auth_token.get_secret_value() or None
        from_number = settings.twilio_phone_number
        agent_id = settings.elevenlabs_agent_id
        twilio_base = settings.twilio_api_base_url
        el_base = settings.elevenlabs_api_base_url
    if settings.quiet_hours is not None:
        settings.quiet_window()  # already validated; raises nothing new
    return Vendors(
        public_base_url=public,
        account_sid=account_sid,
        auth_token=auth_token,
        from_number=from_number,
        agent_id=agent_id,
        twilio_base_url=twilio_base,
        elevenlabs_base_url=el_base,
        sandbox=emulators,
    )


def _twiml(settings: Settings, vendors: Vendors, media_base: str) -> TwimlBuilder:
    greeting = settings.greeting.format(
        site_name=settings.site_name, owner_name=settings.owner_name or settings.site_name
    )
    return TwimlBuilder(
        TwimlConfig(
            greeting=greeting,
            voice=settings.greeting_voice,
            stream_url=_stream_url(media_base),
            consent=settings.consent is Consent.PRESS1,
            consent_timeout=settings.consent_timeout,
            caller_id=vendors.from_number,
            ring_timeout=settings.ring_timeout,
        )
    )


def _safety(
    settings: Settings,
    vendors: Vendors,
    http: httpx.AsyncClient,
    metrics: Metrics,
    redis: Redis | None,
) -> Safety:
    url = settings.alert_webhook_url
    sink = WebhookAlertSink(http, url.get_secret_value()) if url is not None else None
    alerts = Alerts(sink=sink, metrics=metrics, repeat_s=settings.alert_repeat_seconds)
    return Safety(
        killswitch=KillSwitch(
            enabled=settings.calls_enabled,
            shared=RedisFlag(redis) if redis is not None else None,
            alerts=alerts,
        ),
        alerts=alerts,
        dialing_permissions=_dialing_guard(settings, vendors, metrics, alerts),
        human_check=_human_check(settings, http, vendors.public_base_url),
    )


def _agent_sessions(
    settings: Settings, vendors: Vendors, http: httpx.AsyncClient, *, prewarm: bool
) -> AgentSessions:
    api_key = settings.elevenlabs_api_key
    return AgentSessions(
        config=SessionConfig(
            agent_connect_timeout_s=settings.agent_connect_timeout,
            first_message=settings.first_message,
            prewarm=settings.prewarm and prewarm,
        ),
        connector=AgentConnector(
            api_base_url=vendors.elevenlabs_base_url,
            agent_id=vendors.agent_id or "",
            api_key=api_key.get_secret_value() if api_key else None,
            http=http,
            open_timeout=settings.agent_connect_timeout,
        ),
    )


def _operator(
    settings: Settings,
    public: str,
    store: SqlCallStore,
    clock: Clock,
    key: bytes,
    metrics: Metrics,
    redis: Redis | None,
    refusals: RefusalLog,
    bridge: BridgeHost,
    telephony: TwilioCalls,
    twiml: TwimlBuilder,
    live: OperatorLive,
) -> Operator:
    queries = OperatorQueries(store, refusals)
    service = OperatorService(
        queries=queries,
        clock=clock,
        key=key,
        default_region=settings.default_region,
        metrics=metrics,
        spend=SqlSpendLedger(store.engine),
        spend_cap_cents=settings.daily_spend_cap_cents,
    )
    return Operator(
        service=service,
        live=live,
        refusals=refusals,
        admin_auth=AdminAuth(
            password=settings.admin_password,
            token=settings.admin_token,
            secret_key=key,
            secure_cookie=public.startswith("https://"),
            state=RedisSignInState(redis) if redis is not None else MemorySignInState(),
        ),
        drain=Drainer(
            config=DrainConfig(grace_s=float(settings.drain_seconds)),
            live_calls=OwnLiveCalls(
                reads=queries,
                clock=clock,
                lookback_s=settings.time_limit + settings.ring_timeout + 300,
                shared=settings.redis_url is not None,
                bridged_call_ids=bridge.bridged_call_ids,
            ),
            telephony=telephony,
            goodbye_twiml=twiml.say_and_hang_up(DRAINING),
            store=store,
            clock=clock,
        ),
    )


def _process_id() -> str:
    """This process's name among those sharing a database or Redis (a lease's owner)."""
    return f"{socket.gethostname()[:80]}:{os.getpid()}:{secrets.token_hex(4)}"


#: How long a job's lease outlives its holder's last renewal (renewed before each call a
#: pass works on; a holder that dies mid-pass blocks the others this long at most).
_LEASE_TTL_S = 30.0


def _postcall_reconciler(
    settings: Settings,
    vendors: Vendors,
    store: SqlCallStore,
    http: httpx.AsyncClient,
    clock: Clock,
    metrics: Metrics,
    postcall: PostCallService,
    lease: JobLease,
) -> PostCallReconciler | None:
    """security.md F.42's job, unless disabled (0 minutes) or there is no key to fetch with."""
    key = settings.elevenlabs_api_key.get_secret_value() if settings.elevenlabs_api_key else None
    if settings.postcall_reconcile_minutes == 0 or not (key or vendors.sandbox is not None):
        return None
    return PostCallReconciler(
        fetches=SqlPostCallFetches(store.engine),
        history=ElevenLabsConversations(
            api_base_url=vendors.elevenlabs_base_url, api_key=key, http=http
        ),
        postcall=postcall,
        store=store,
        clock=clock,
        metrics=metrics,
        after=timedelta(minutes=settings.postcall_reconcile_minutes),
        job_lease=lease,
    )


def _build_admission(
    settings: Settings,
    store: SqlCallStore,
    key: bytes,
    clock: Clock,
    metrics: Metrics,
    sandbox: bool,
    redis: Redis | None,
    safety: Safety,
    refusals: RefusalLog,
) -> PolicyAdmission:
    limits = limits_in_force(settings, sandbox=sandbox)
    if redis is not None:
        from callbridge.adapters.quota.redis import RedisQuotaStore

        quotas: QuotaStore = RedisQuotaStore(redis)
    else:
        quotas = MemoryQuotaStore()
    window = settings.quiet_window()
    return PolicyAdmission(
        numbers=NumberPolicy(
            allowed_countries=frozenset(settings.allowed_countries),
            allowed_types=frozenset(settings.allowed_number_types),
        ),
        quiet_hours=QuietHours(start=window[0], end=window[1]) if window else None,
        limits=limits,
        quotas=quotas,
        dnc=SqlDoNotCallList(store.engine),
        key=key,
        default_region=settings.default_region,
        clock=clock,
        ledger=SqlSpendLedger(store.engine),
        calls=store,
        # A call's slot lives as long as the call can: ring, then talk to the time limit.
        slot_ttl_s=settings.ring_timeout + settings.time_limit + SLOT_MARGIN_S,
        metrics=metrics,
        killswitch=safety.killswitch,
        alerts=safety.alerts,
        refusals=refusals,
    )


def _redis(settings: Settings) -> Redis | None:
    """One Redis client for quotas, tokens, live events and the kill switch (or None)."""
    if not settings.redis_url:
        return None
    from redis import asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialWithJitterBackoff

    # While Redis is away a request must fail in well under a second (503, Retry-After),
    # not wait out redis-py's default of ten retries; two quick ones still ride over a
    # pooled connection that died with a restart (the next one reconnects).
    return aioredis.from_url(
        settings.redis_url,
        socket_connect_timeout=1.0,
        socket_timeout=2.0,
        retry=Retry(ExponentialWithJitterBackoff(base=0.01, cap=0.1), 2),
    )


def _readiness(store: SqlCallStore, redis: Redis | None) -> Readiness:
    """``/readyz``'s probes: the database always, Redis when it is configured."""
    probes: dict[str, Probe] = {"database": store.ping}
    if redis is not None:
        probes["redis"] = partial(ping, redis)
    return Readiness(probes)


def _human_check(
    settings: Settings, http: httpx.AsyncClient, public: str
) -> TurnstileVerifier | None:
    """The request's human check: Turnstile when configured, otherwise nothing."""
    if not settings.turnstile_secret:
        return None
    return TurnstileVerifier(
        secret=settings.turnstile_secret.get_secret_value(),
        http=http,
        verify_url=settings.turnstile_verify_url or DEFAULT_VERIFY_URL,
        expected_hostname=hostnames_of([*settings.allowed_origins, public]),
        expected_action=WIDGET_ACTION,
    )


def _build_sandbox(settings: Settings, account_sid: str, auth_token: str, public: str) -> Sandbox:
    # Imported here: outside the sandbox, production never loads the emulators.
    from callbridge.sandbox.standalone import make_emulators

    twilio, elevenlabs = make_emulators(
        settings, account_sid=account_sid, auth_token=auth_token, server_base_url=public
    )
    return Sandbox(twilio=twilio, elevenlabs=elevenlabs)


def _dialing_guard(
    settings: Settings, vendors: Vendors, metrics: Metrics, alerts: Alerts
) -> DialingPermissionsGuard:
    """security.md B18's check. The in-process emulator serves no HTTP before start-up,
    so when it is the Twilio in use it is read in process (same requests, no socket)."""
    transport: httpx.AsyncBaseTransport | None = None
    twilio_base = vendors.twilio_base_url
    emulators = vendors.sandbox
    if emulators is not None and settings.twilio_api_base_url == "https://api.twilio.com":
        transport = httpx.ASGITransport(
            app=emulators.twilio.asgi_app, root_path=urlsplit(twilio_base).path
        )
    provider = TwilioDialingPermissions(
        account_sid=vendors.account_sid,
        auth_token=vendors.auth_token or "",
        voice_base_url=voice_base_url(twilio_base),
        request_timeout=settings.twilio_timeout,
        transport=transport,
    )
    return DialingPermissionsGuard(
        provider=provider,
        allowed_countries=settings.allowed_countries,
        mode=CheckMode(settings.dialing_permissions_check.value),
        metrics=metrics,
        alerts=alerts,
    )


@dataclass(frozen=True, slots=True)
class VendorEndpoints:
    """Where the vendors' APIs are for a configuration, as :func:`build` would use them.

    A transport is set when the API is an emulator served in this process (no socket).
    """

    twilio_base: str
    elevenlabs_base: str
    account_sid: str | None
    auth_token: str | None
    from_number: str | None
    agent_id: str | None
    elevenlabs_api_key: str | None
    sandbox: bool
    twilio_transport: httpx.AsyncBaseTransport | None = None
    elevenlabs_transport: httpx.AsyncBaseTransport | None = None


def vendor_endpoints(
    settings: Settings, *, in_process: bool = False, host: str = "127.0.0.1", port: int = 8000
) -> VendorEndpoints:
    """The vendors' API roots and credentials for commands that talk to them directly
    (``setup``, ``doctor --online``).

    In the sandbox, a base URL left at the vendor's default means the emulators of the
    callbridge serving ``PUBLIC_BASE_URL``; with ``in_process`` (a read-only check), it
    means emulators built here for this settings, reached through an ASGI transport.
    """
    key = settings.elevenlabs_api_key.get_secret_value() if settings.elevenlabs_api_key else None
    token = settings.twilio_auth_token.get_secret_value() if settings.twilio_auth_token else None
    if not settings.use_sandbox:
        return VendorEndpoints(
            twilio_base=settings.twilio_api_base_url,
            elevenlabs_base=settings.elevenlabs_api_base_url,
            account_sid=settings.twilio_account_sid,
            auth_token=token,
            from_number=settings.twilio_phone_number,
            agent_id=settings.elevenlabs_agent_id,
            elevenlabs_api_key=key,
            sandbox=False,
        )
    public = settings.public_base_url or f"http://{host}:{port}"
    twilio_base = _override_or(
        settings.twilio_api_base_url, "https://api.twilio.com", f"{public}/sandbox/twilio"
    )
    el_base = _override_or(
        settings.elevenlabs_api_base_url,
        "https://api.elevenlabs.io",
        f"{public}/sandbox/elevenlabs",
    )
    twilio_transport = el_transport = None
    account_sid = settings.twilio_account_sid
    if in_process and (
        settings.twilio_api_base_url == "https://api.twilio.com"
        or settings.elevenlabs_api_base_url == "https://api.elevenlabs.io"
    ):
        from callbridge.sandbox.standalone import make_emulators

        account_sid = account_sid or "AC" + secrets.token_hex(16)
        token = token or secrets.token_hex(16)
        twilio, elevenlabs = make_emulators(
            settings, account_sid=account_sid, auth_token=token, server_base_url=None
        )
        if settings.twilio_api_base_url == "https://api.twilio.com":
            twilio_transport = httpx.ASGITransport(
                app=twilio.asgi_app, root_path=urlsplit(twilio_base).path
            )
        if settings.elevenlabs_api_base_url == "https://api.elevenlabs.io":
            el_transport = httpx.ASGITransport(
                app=elevenlabs.asgi_app, root_path=urlsplit(el_base).path
            )
    return VendorEndpoints(
        twilio_base=twilio_base,
        elevenlabs_base=el_base,
        account_sid=account_sid,
        auth_token=token,
        from_number=settings.twilio_phone_number or SANDBOX_FROM,
        agent_id=settings.elevenlabs_agent_id or SANDBOX_AGENT_ID,
        elevenlabs_api_key=key,
        sandbox=True,
        twilio_transport=twilio_transport,
        elevenlabs_transport=el_transport,
    )
