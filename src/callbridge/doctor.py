"""``callbridge doctor``: every setting's state (secrets masked) and what is wrong."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import SecretStr
from rich.console import Console
from rich.table import Table

from callbridge.errors import CallbridgeError, ConfigError, ProviderError
from callbridge.settings import Settings, load_settings

if TYPE_CHECKING:
    from callbridge.bootstrap import Container


def _shown(value: object) -> str:
    if value is None:
        return "[dim]not set[/]"
    if isinstance(value, SecretStr):
        secret = value.get_secret_value()
        return f"set (…{secret[-2:]})" if len(secret) > 8 else "set"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "[dim]none[/]"
    return str(value)


def run_doctor(console: Console, *, online: bool = False) -> int:
    """Print the report; 0 when nothing is wrong, 1 otherwise.

    With ``online``, Twilio's dialing permissions are read and checked too (security.md B18).
    """
    try:
        settings = load_settings()
    except ConfigError as exc:
        console.print(f"[bold red]✗[/] {exc}")
        return 1
    table = Table(title="callbridge settings")
    table.add_column("setting")
    table.add_column("value")
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        env = getattr(alias, "choices", [name.upper()])[0]
        table.add_row(str(env), _shown(getattr(settings, name)))
    console.print(table)
    problems = _problems(settings)
    for finding in several_processes_missing(settings):
        # REDIS_URL says other processes share the work: then what they lack is a problem.
        if settings.redis_url and finding.blocking:
            problems.append(finding.text)
        else:
            console.print(f"[bold yellow]![/] for several processes: {finding.text}")
    if online:
        problems += _online_problems(settings, console)
        problems += _account_problems(settings, console)
    mode = "sandbox (emulated Twilio and ElevenLabs)" if settings.use_sandbox else "production"
    console.print(f"mode: [bold]{mode}[/]")
    _print_origins(settings, console)
    for problem in problems:
        console.print(f"[bold red]✗[/] {problem}")
    if not problems:
        console.print("[bold green]✓[/] no problems found")
    return 1 if problems else 0


def _print_origins(settings: Settings, console: Console) -> None:
    """The sites that may ask for calls, as the server will enforce them."""
    from callbridge.bootstrap import build

    try:
        allowed = build(settings).origins.allowed
    except ConfigError:
        return  # reported with the other problems
    console.print(
        "sites that may ask for calls (CALLBRIDGE_ALLOWED_ORIGINS, callbridge's own"
        f"{', loopback' if settings.use_sandbox else ''}): " + ", ".join(sorted(allowed)),
        soft_wrap=True,
    )


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing several processes would lack; ``blocking`` when they cannot work without it
    (SQLite still serves several processes on one machine)."""

    text: str
    blocking: bool = True


def several_processes_missing(settings: Settings) -> list[Finding]:
    """What several ``callbridge`` processes (behind a load balancer, or ``--role``) would
    lack with these settings, one sentence each."""
    from callbridge.bootstrap import in_process_emulators
    from callbridge.cpu_slice import current_slice_ns

    found: list[Finding] = []
    derived = settings.twilio_auth_token is not None and not settings.use_sandbox
    # With REDIS_URL set, the server itself refuses to start without it (bootstrap says so).
    if settings.secret_key is None and not derived and not settings.redis_url:
        found.append(
            Finding(
                "CALLBRIDGE_SECRET_KEY is not set: each process would make its own key and "
                "refuse the others' call tokens; set the same one everywhere."
            )
        )
    if not settings.redis_url:
        found.append(
            Finding(
                "REDIS_URL is not set: quotas, page tokens, live call events and the kill "
                "switch would be each process's own."
            )
        )
    if settings.database_url.startswith("sqlite"):
        found.append(
            Finding(
                "DATABASE_URL is SQLite: one file serves processes on one machine only; "
                "use PostgreSQL for several machines.",
                blocking=False,
            )
        )
    if in_process_emulators(settings):
        found.append(
            Finding(
                "The sandbox's emulators run inside each process: run `callbridge sandbox` "
                "once and set TWILIO_API_BASE_URL and ELEVENLABS_API_BASE_URL to it."
            )
        )
    if settings.media_slice_us and current_slice_ns() is None:
        found.append(
            Finding(
                "this system keeps no per-task CPU time slice (Linux 6.12+ does: "
                "CALLBRIDGE_MEDIA_SLICE_US): give --role media processes cores the control "
                "process does not use (systemd's CPUAffinity=), or a burst of call set-ups "
                "delays their frames by up to a time slice.",
                blocking=False,
            )
        )
    return found


def _problems(settings: Settings) -> list[str]:
    """Every problem at once: the settings :func:`~callbridge.bootstrap.build` needs, the
    production ones it does without, and the database (when the rest lets it be built)."""
    from callbridge.bootstrap import build, configuration_problems

    problems = configuration_problems(settings)
    if not settings.use_sandbox:
        if not settings.elevenlabs_webhook_secret:
            problems.append("ELEVENLABS_WEBHOOK_SECRET is not set: post-call webhooks are refused.")
        if not settings.allowed_origins:
            problems.append(
                "CALLBRIDGE_ALLOWED_ORIGINS is empty: only pages served by callbridge may ask."
            )
        if settings.secret_key is None:
            problems.append(
                "CALLBRIDGE_SECRET_KEY is not set: a key derived from TWILIO_AUTH_TOKEN is used."
            )
    # The sandbox needs no operator password: `callbridge demo` makes one for each run.
    if not settings.use_sandbox and not settings.admin_password and not settings.admin_token:
        problems.append("Neither CALLBRIDGE_ADMIN_PASSWORD nor CALLBRIDGE_ADMIN_TOKEN is set.")
    if not configuration_problems(settings):  # else build() stops at the first of them
        try:
            container = build(settings)
        except ConfigError as exc:
            problems.append(str(exc))
        else:
            asyncio.run(_close(container))
    try:
        asyncio.run(_ping(settings.database_url))
    except CallbridgeError as exc:
        problems.append(f"The database at DATABASE_URL does not answer: {exc}")
    return problems


async def _close(container: Container) -> None:
    await container.store.aclose()
    await container.http.aclose()


async def _ping(database_url: str) -> None:
    from callbridge.adapters.db.store import SqlCallStore, make_engine

    store = SqlCallStore(make_engine(database_url))
    try:
        await store.ping()
    finally:
        await store.aclose()


def _online_problems(settings: Settings, console: Console) -> list[str]:
    """Twilio's dialing permissions against the allowlist: violations are problems,
    allowed countries Twilio will not call are printed as warnings."""
    from callbridge.bootstrap import build
    from callbridge.domain.dialing_permissions import PermissionReport

    try:
        container = build(settings)
    except ConfigError:
        return []  # already reported by _problems
    guard = container.safety.dialing_permissions

    async def read() -> PermissionReport:
        try:
            report: PermissionReport = await guard.check()
            return report
        finally:
            await container.store.aclose()
            await container.http.aclose()

    try:
        report = asyncio.run(read())
    except ProviderError as exc:
        return [f"Twilio's dialing permissions could not be read: {exc}."]
    for finding in report.warnings:
        console.print(f"[bold yellow]![/] {finding.sentence}")
    if report.ok:
        console.print(
            "[bold green]✓[/] Twilio's dialing permissions stay within "
            f"CALLBRIDGE_ALLOWED_COUNTRIES ({', '.join(settings.allowed_countries)})"
        )
    return [finding.sentence for finding in report.violations]


def _account_problems(settings: Settings, console: Console) -> list[str]:
    """ElevenLabs, the caller id and the public address (:mod:`callbridge.doctor_online`):
    warnings and passes are printed, problems returned."""
    from callbridge.doctor_online import online_findings

    problems: list[str] = []
    for finding in online_findings(settings):
        if finding.level == "problem":
            problems.append(finding.text)
        elif finding.level == "warning":
            console.print(f"[bold yellow]![/] {finding.text}")
        else:
            console.print(f"[bold green]✓[/] {finding.text}")
    return problems
