"""The ``callbridge`` command: demo, serve, call, calls, doctor, db, sandbox, dnc."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import secrets
import sys
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from callbridge.cli_common import console, fail, settings_or_exit
from callbridge.cli_dnc import dnc_app
from callbridge.cli_operator import attach_operator_commands, calls_app, serve_draining
from callbridge.cli_setup import setup as setup_command
from callbridge.errors import CallbridgeError, ConfigError
from callbridge.settings import Role, Settings

app = typer.Typer(
    help="callbridge: a website visitor asks for a call; Twilio places it; an AI agent talks.",
    no_args_is_help=True,
    add_completion=False,
)
db_app = typer.Typer(help="The database.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(dnc_app, name="dnc")

_DEFAULT_URL = "http://127.0.0.1:8000"
HostOpt = Annotated[str, typer.Option("--host", help="Address to listen on.")]
PortOpt = Annotated[int, typer.Option("--port", help="Port to listen on.")]


RoleOpt = Annotated[
    Role,
    typer.Option(
        "--role",
        help="all: one process does everything. control: every door but the media stream, "
        "and the background jobs. media: the media stream only (put a proxy in front that "
        "routes /api/call/media-stream to the media processes).",
    ),
]


def _run_server(
    settings: Settings, host: str, port: int, *, demo: bool, role: Role = Role.ALL
) -> None:

    from callbridge import log_setup
    from callbridge.adapters.db.migrate import upgrade_sync
    from callbridge.bootstrap import build, in_process_emulators
    from callbridge.web.app import create_app
    from callbridge.web.stream_protocol import MediaStreamProtocol

    fmt = settings.log_format if settings.log_format != "auto" else ("console" if demo else "json")
    log_setup.configure(fmt)
    try:
        upgrade_sync(settings.database_url)  # a clear sentence, not a lifespan traceback
        container = build(settings, host=host, port=port, role=role)
        if container.role.serves_control:  # a media process places no calls
            asyncio.run(container.safety.dialing_permissions.at_startup())  # security.md B18
    except ConfigError as exc:
        fail(str(exc))
    if role is Role.MEDIA and settings.media_slice_us:
        _media_slice(settings.media_slice_us)
    base = container.public_base_url
    if container.role is not Role.ALL:
        console.print(f"[bold green]callbridge[/] {role.value} process on {host}:{port} ({base})")
    elif container.sandbox is not None and in_process_emulators(settings):
        console.print(
            "[bold green]callbridge sandbox[/] — Twilio and ElevenLabs are emulated on this "
            "machine; no real calls are placed.\n"
            f"  Open the contact page:   [bold]{base}/[/]\n"
            f"  Answer calls here:       [bold]{base}/sandbox/phone[/]\n"
            f"  Operator view:           {base}/admin\n"
            f'  Place a call from a shell: callbridge call "+1 234 567 8900" --url {base}',
            soft_wrap=True,  # a command cut in two can't be pasted: the terminal wraps, not us
        )
    else:
        console.print(f"[bold green]callbridge[/] serving {base} on {host}:{port}")
    serve_draining(
        create_app(container),
        container.operator.drain.drain,
        host=host,
        port=port,
        log_level="warning",
        # websockets' sans-I/O protocol: the measured cheapest per media frame here
        # (the legacy "websockets" implementation cost 1.4-1.5x the CPU per call), on
        # a lighter queue and flag (~3.9 KB less per call: see stream_protocol).
        ws=MediaStreamProtocol,
        ws_max_size=64 * 1024,
        # Declined if a client offers it (a server may): μ-law in base64 hardly
        # compresses, and each socket would keep two zlib streams (~50 KB a call,
        # more than the rest of a call's memory) and spend CPU on every frame.
        ws_per_message_deflate=False,
        timeout_graceful_shutdown=5,
        **_proxy_options(settings),
    )


def _proxy_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's proxy headers, believed from ``CALLBRIDGE_TRUSTED_PROXIES`` only.

    Behind nginx the scheme and client address of a request are the proxy's
    ``X-Forwarded-Proto`` and ``X-Forwarded-For``, but only when the connection comes
    from a trusted proxy: from anywhere else they are ignored (security.md C23). With
    no trusted proxy, no header is believed. Twilio's signatures never depend on them:
    they are checked over ``PUBLIC_BASE_URL`` (see ``web.twilio_hooks.public_url``).
    """
    if not settings.trusted_proxies:
        return {"proxy_headers": False}
    networks = []
    for entry in settings.trusted_proxies:
        try:
            # uvicorn wants exact networks: 10.0.0.1/8 is read as 10.0.0.0/8, as client_ip does.
            networks.append(str(ipaddress.ip_network(entry, strict=False)))
        except ValueError:
            fail(f"CALLBRIDGE_TRUSTED_PROXIES: {entry!r} is not an IP address or network.")
    return {"proxy_headers": True, "forwarded_allow_ips": networks}


@app.command()
def demo(
    host: HostOpt = "127.0.0.1",
    port: PortOpt = 8000,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            min=1,
            help="Server processes (on PORT, PORT+1, ...), beside one `callbridge sandbox`; "
            "more than one shares Redis (REDIS_URL, or a redis-server started for the run).",
        ),
    ] = 1,
    sandbox_port: Annotated[
        int, typer.Option("--sandbox-port", help="With --workers: the emulators' port.")
    ] = 8100,
) -> None:
    """Run everything on this machine: the service and the sandbox emulators (no accounts)."""
    settings = settings_or_exit()
    overrides: dict[str, Any] = {}
    if workers > 1:
        overrides["sandbox"] = True  # several processes: the sandbox, never real calls
    if not settings.has_twilio_credentials and settings.sandbox is None:
        overrides["sandbox"] = True
    demo_password = None
    if settings.admin_password is None and (settings.use_sandbox or overrides):
        # The sandbox's operator view needs a login: a throwaway one for this run.
        demo_password = secrets.token_urlsafe(9)
        overrides["admin_password"] = demo_password
    if overrides:
        settings = settings_or_exit(**overrides)
    if demo_password is not None:
        console.print(
            f"Operator view password for this run: [bold]{demo_password}[/] "
            "(set CALLBRIDGE_ADMIN_PASSWORD to choose one)",
            soft_wrap=True,
        )
    if workers > 1:
        from callbridge.cli_demo import WorkersFailed, run_workers

        try:
            code = run_workers(
                settings,
                host=host,
                port=port,
                workers=workers,
                sandbox_port=sandbox_port,
                admin_password=demo_password,
                console=console,
            )
        except (ConfigError, WorkersFailed) as exc:
            fail(str(exc))
        raise typer.Exit(code)
    _run_server(settings, host, port, demo=True)


def _media_slice(slice_us: int) -> None:
    """Ask Linux for a short CPU slice for this thread, the event loop's (callbridge.cpu_slice)."""
    import structlog

    from callbridge.cpu_slice import request_slice

    result = request_slice(slice_us)
    log = structlog.get_logger("callbridge.cpu_slice")
    if result.granted:
        log.info("media_slice", slice_us=(result.slice_ns or 0) // 1000)
    else:
        log.warning("media_slice_not_granted", wanted_us=slice_us, reason=result.reason)


@app.command()
def serve(host: HostOpt = "127.0.0.1", port: PortOpt = 8000, role: RoleOpt = Role.ALL) -> None:
    """Serve callbridge (real Twilio and ElevenLabs unless CALLBRIDGE_SANDBOX=true)."""
    settings = settings_or_exit()
    if not settings.use_sandbox or settings.sandbox:
        _run_server(settings, host, port, demo=False, role=role)
        return
    fail(
        "TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN are not set. Set them to place real calls, "
        "or run `callbridge demo` (or CALLBRIDGE_SANDBOX=true) for the sandbox."
    )


@app.command()
def call(
    number: Annotated[
        str | None, typer.Argument(help='The number to call, e.g. "+1 234 567 8900".')
    ] = None,
    url: Annotated[
        str | None,
        typer.Option(
            help="The callbridge server [default: PUBLIC_BASE_URL, else http://127.0.0.1:8000]."
        ),
    ] = None,
    name: Annotated[str | None, typer.Option(help="The visitor's name.")] = None,
    reason: Annotated[str | None, typer.Option(help="Why they want a call.")] = None,
    self_test: Annotated[
        bool,
        typer.Option(
            "--self-test",
            help="Call TARGET_PHONE_NUMBER as a test (needs CALLBRIDGE_ADMIN_TOKEN) and "
            "print each stage's time, the transcript and the price.",
        ),
    ] = False,
    wait: Annotated[
        float, typer.Option(help="With --self-test: seconds to wait for the price.")
    ] = 60.0,
    at: Annotated[
        str | None,
        typer.Option(
            "--at",
            help="Schedule the call instead: an ISO 8601 time (2026-12-02T09:00-05:00; "
            "without an offset, this machine's zone) or a delay (30m, 2h, 1d).",
        ),
    ] = None,
    retry: Annotated[
        bool, typer.Option("--retry", help="Try again once if the line is busy or unanswered.")
    ] = False,
) -> None:
    """Place a call through a running server and print its status changes until it ends
    (with --at: schedule it and print when it is due)."""
    from callbridge.follow import place_and_follow
    from callbridge.follow import self_test as run_self_test

    default_url = url is None
    settings = settings_or_exit()
    url = url or settings.public_base_url or _DEFAULT_URL
    if self_test:
        if number is not None:
            fail("--self-test calls TARGET_PHONE_NUMBER (the server's): give no number.")
        token = settings.admin_token
        if token is None:
            fail("--self-test uses the operator API: set CALLBRIDGE_ADMIN_TOKEN.")
        try:
            code = asyncio.run(run_self_test(url, token.get_secret_value(), console, wait_s=wait))
        except KeyboardInterrupt:
            code = 130
        raise typer.Exit(code)
    if number is None:
        fail("Give the number to call, or --self-test.")
    token = settings.admin_token
    when = _at(at) if at else None
    try:
        code = asyncio.run(
            place_and_follow(
                url,
                number,
                name,
                reason,
                console,
                admin_token=token.get_secret_value() if token is not None else None,
                default_url=default_url,
                at=when,
                retry=retry,
            )
        )
    except KeyboardInterrupt:
        code = 130
    raise typer.Exit(code)


app.add_typer(calls_app, name="calls")
attach_operator_commands(app)
app.command("setup")(setup_command)


@calls_app.callback(invoke_without_command=True)
def calls(
    ctx: typer.Context,
    status: Annotated[str | None, typer.Option(help="Only calls with this status.")] = None,
    since: Annotated[
        str | None, typer.Option(help="Only calls newer than this: 2h, 3d or an ISO date.")
    ] = None,
    limit: Annotated[int, typer.Option(help="How many calls at most.")] = 30,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
    scheduled: Annotated[
        bool, typer.Option("--scheduled", help="Only the calls scheduled for later, soonest first.")
    ] = False,
) -> None:
    """List recent calls from the database (`callbridge calls show ID` for one)."""
    if ctx.invoked_subcommand is not None:
        return
    from callbridge.domain.call import LISTED_STATUSES

    if status is not None and status not in LISTED_STATUSES:
        fail(f"--status {status!r} is not a status. Give one of: {', '.join(LISTED_STATUSES)}.")
    from callbridge.adapters.db.queries import CallFilter
    from callbridge.cli_operator import run_operator
    from callbridge.services.operator import call_summary

    flt = CallFilter(status=status, since=_since(since), limit=limit)

    async def work(operator: Any) -> list[Any]:
        return list(await operator.calls(flt))

    rows = _scheduled_rows(limit) if scheduled else run_operator(work)
    if as_json:
        for c in rows:
            view = call_summary(c)
            print(
                json.dumps(
                    {
                        "call_id": c.id,
                        "to": view["to"],
                        "status": view["outcome"],
                        "created_at": c.created_at.isoformat(),
                        "duration": c.duration_s,
                        "failure": c.failure_code,
                        "test": c.is_test,
                        "scheduled_for": c.scheduled_for.isoformat() if c.scheduled_for else None,
                    }
                )
            )
        return
    if scheduled:
        _print_scheduled(rows)
        return
    zone = datetime.now().astimezone().strftime("%z")
    table = Table(
        title=f"{len(rows)} recent calls (times UTC{zone[:3]}:{zone[3:]})",
        title_justify="left",
        box=None,
        padding=(0, 2, 0, 0),
        header_style="bold",
    )
    # The id is what `calls show` takes: never cut or wrapped; the other columns give way.
    table.add_column("call id", no_wrap=True, min_width=len(rows[0].id) if rows else None)
    table.add_column("to", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("created", no_wrap=True)
    table.add_column("secs", justify="right")
    table.add_column("failure")
    for c in rows:
        view = call_summary(c)
        table.add_row(
            c.id,
            view["to"],
            view["outcome"] + (" (test)" if c.is_test else ""),
            c.created_at.astimezone().strftime("%m-%d %H:%M:%S"),
            f"{c.duration_s}s" if c.duration_s is not None else "",
            c.failure_code or "",
        )
    Console().print(table)


def _at(value: str) -> str:
    """``--at``: a delay (30m, 2h, 1d) or an ISO 8601 time, as an ISO time with an offset."""
    units = {"m": "minutes", "h": "hours", "d": "days"}
    text = value.strip()
    if text and text[-1] in units and text[:-1].isdigit():
        return (datetime.now(UTC) + timedelta(**{units[text[-1]]: int(text[:-1])})).isoformat()
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        fail(f"--at {value!r}: give an ISO 8601 time like 2026-12-02T09:00-05:00, or 30m, 2h, 1d.")
    return (parsed if parsed.tzinfo else parsed.astimezone()).isoformat()


def _since(value: str | None) -> datetime | None:
    if not value:
        return None
    units = {"m": "minutes", "h": "hours", "d": "days"}
    if value[-1] in units and value[:-1].isdigit():
        return datetime.now(UTC) - timedelta(**{units[value[-1]]: int(value[:-1])})
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        fail(f"--since {value!r}: give 30m, 2h, 3d or an ISO date.")
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@app.command()
def doctor(
    online: Annotated[
        bool,
        typer.Option(
            "--online",
            help=(
                "Also check the real accounts: the agent, the caller id, the dialing "
                "permissions and PUBLIC_BASE_URL."
            ),
        ),
    ] = False,
) -> None:
    """Check the configuration and say what is wrong."""
    from callbridge.doctor import run_doctor

    raise typer.Exit(run_doctor(console, online=online))


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply database migrations (also done at start-up)."""
    settings = settings_or_exit()
    from callbridge.adapters.db.migrate import upgrade_sync

    try:
        upgrade_sync(settings.database_url)
    except ConfigError as exc:
        fail(str(exc))
    console.print("[green]database is up to date[/]")


@app.command()
def sandbox(host: HostOpt = "127.0.0.1", port: PortOpt = 8100) -> None:
    """Serve the Twilio and ElevenLabs emulators alone (for another server or a benchmark).

    The callee of every call follows CALLBRIDGE_SANDBOX_CALLEE, comma-separated steps:
    answer=N (answer after N s), busy, no-answer, reject, fail, speak[=FILE.wav],
    digits=KEYS, hangup=N (N s after answering); default answer=2,digits=1,speak,hangup=60.

    CALLBRIDGE_SANDBOX_CALLEES scripts callees per destination, winning over that
    default: NUMBER=SCRIPT entries separated by ';', NUMBER an E.164 number or a prefix
    ending in '*' (the exact number wins, then the longest prefix), e.g.
    '+12025550101=busy;+1212555*=answer=1,digits=1,speak,hangup=40'; or the path of a
    .json file holding {"+12025550101": "busy", "+1212555*": "answer=1,hangup=40"}.
    """
    from callbridge.sandbox.standalone import run_sandbox

    run_sandbox(settings_or_exit(), host, port, console)


def _attach_bench() -> None:
    from callbridge.bench import bench_command

    app.command("bench", help="Measure calls per core and the latency the bridge adds.")(
        bench_command
    )


_attach_bench()


def _attach_soak() -> None:
    from callbridge.soak import soak_command

    app.command("soak")(soak_command)


_attach_soak()


def main() -> None:
    """Entry point of the ``callbridge`` script."""
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    try:
        app()
    except CallbridgeError as exc:
        console.print(f"[bold red]callbridge:[/] {exc}")
        sys.exit(2)


def _scheduled_rows(limit: int) -> list[Any]:
    """The calls waiting for their time, soonest first (`callbridge calls --scheduled`)."""
    settings = settings_or_exit()
    from callbridge.adapters.db.schedule import SqlSchedule
    from callbridge.adapters.db.store import SqlCallStore, make_engine

    async def load() -> list[Any]:
        store = SqlCallStore(make_engine(settings.database_url))
        try:
            return list(await SqlSchedule(store).upcoming(limit=limit))
        finally:
            await store.aclose()

    try:
        return asyncio.run(load())
    except CallbridgeError as exc:
        fail(str(exc))


def _print_scheduled(rows: list[Any]) -> None:
    """The scheduled calls as a table, in local time."""
    from callbridge.domain.privacy import mask_number

    zone = datetime.now().astimezone().strftime("%z")
    table = Table(
        title=f"{len(rows)} scheduled calls (times UTC{zone[:3]}:{zone[3:]})",
        title_justify="left",
    )
    table.add_column("call id", no_wrap=True)
    for column in ("to", "due", "asked for", "retry"):
        table.add_column(column)
    for c in rows:
        table.add_row(
            c.id,
            mask_number(c.to_number),
            c.scheduled_for.astimezone().strftime("%Y-%m-%d %H:%M") if c.scheduled_for else "",
            c.created_at.astimezone().strftime("%Y-%m-%d %H:%M"),
            f"retry {c.attempt - 1}" if c.attempt > 1 else "",
        )
    Console().print(table)
