"""The operator's commands (``calls show``, ``forget``, ``retention run``) and the draining server.

:data:`calls_app` is the ``callbridge calls`` group: ``cli.py`` makes its listing the
group's callback, so ``callbridge calls --status completed`` still lists and
``callbridge calls show ID`` shows one call. :func:`attach_operator_commands` adds
``forget`` and ``retention`` to the main app. :func:`serve_draining` runs uvicorn so
that SIGTERM drains calls (security.md E.36) before the server stops.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

import structlog
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from callbridge.cli_common import console, fail, local_time, settings_or_exit
from callbridge.errors import CallbridgeError
from callbridge.settings import Settings

if TYPE_CHECKING:  # the CLI imports the database layers only when a command needs them
    from callbridge.services.operator import OperatorService

_log = structlog.get_logger(__name__)
out = Console()

calls_app = typer.Typer(
    help="Recent calls (`callbridge calls`), or one call (`callbridge calls show ID`).",
    invoke_without_command=True,
    no_args_is_help=False,
)
retention_app = typer.Typer(help="Retention of transcripts and chat context.", no_args_is_help=True)


def _number_key(settings: Settings) -> bytes | None:
    """The key the server hashes numbers with, when it is not a per-process random one."""
    if settings.secret_key is not None:
        return settings.secret_key.get_secret_value().encode()
    if settings.twilio_auth_token is not None and not settings.use_sandbox:
        token = settings.twilio_auth_token.get_secret_value()
        return hashlib.sha256(b"callbridge-key|" + token.encode()).digest()
    return None


@asynccontextmanager
async def _operator(settings: Settings) -> AsyncIterator[OperatorService]:
    from callbridge.adapters.db.migrate import upgrade
    from callbridge.adapters.db.queries import OperatorQueries
    from callbridge.adapters.db.store import SqlCallStore, make_engine
    from callbridge.bootstrap import SystemClock
    from callbridge.services.operator import OperatorService

    await upgrade(settings.database_url)
    store = SqlCallStore(make_engine(settings.database_url))
    try:
        yield OperatorService(
            queries=OperatorQueries(store),
            clock=SystemClock(),
            key=_number_key(settings),
            default_region=settings.default_region,
        )
    finally:
        await store.aclose()


def run_operator(work: Callable[[OperatorService], Awaitable[Any]]) -> Any:
    """Run ``work`` with the operator's use cases on the configured database; a
    callbridge error exits 2 with its sentence."""
    return _run(work)


def _run(work: Callable[[OperatorService], Awaitable[Any]]) -> Any:
    settings = settings_or_exit()

    async def go() -> Any:
        async with _operator(settings) as operator:
            return await work(operator)

    try:
        return asyncio.run(go())
    except CallbridgeError as exc:
        fail(str(exc))


# callbridge calls show ID ---------------------------------------------------------------


@calls_app.command("show")
def calls_show(
    call_id: Annotated[
        str, typer.Argument(help="The call's id (call_…), or any start of it that is unique.")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print the call as JSON.")] = False,
) -> None:
    """Show one call: facts, the web chat's context, the timeline and the transcript."""
    from callbridge.services.operator import detail_view

    async def work(operator: OperatorService) -> dict[str, Any]:
        return detail_view(await operator.call(await operator.resolve_id(call_id)))

    view: dict[str, Any] = _run(work)
    if as_json:
        print(json.dumps(view, indent=2, ensure_ascii=False))
        return
    _print_call(view)


def _print_call(view: dict[str, Any]) -> None:
    from datetime import datetime

    out.print(f"[bold]{view['call_id']}[/]  to {view['to']}  [bold]{view['outcome']}[/]")
    facts = [
        ("placed", local_time(view["created_at"])),
        ("answered", local_time(view["answered_at"])),
        ("ended", local_time(view["ended_at"])),
        ("duration", f"{view['duration_s']} s" if view["duration_s"] is not None else None),
        ("price", view["price_text"]),
        ("answered by", view["answered_by"]),
        ("failure", view["failure_code"]),
        ("reason", view["failure_reason"]),
        ("twilio call", view["call_sid"]),
    ]
    for label, value in facts:
        if value:
            out.print(f"  [dim]{label:>12}[/]  {escape(str(value))}")
    context = {k: v for k, v in view["context"].items() if v}
    if context:
        out.print("\n[bold]What the agent was told[/]")
        for key, value in context.items():
            out.print(f"  [dim]{key:>15}[/]  {escape(str(value))}")  # visitor-typed text
    start = datetime.fromisoformat(view["created_at"])
    table = Table(title="Timeline", title_justify="left")
    for column in ("at", "status", "source", "detail"):
        table.add_column(column)
    for e in view["timeline"]:
        offset = (datetime.fromisoformat(e["at"]) - start).total_seconds()
        detail = ", ".join(f"{k}={v}" for k, v in e["detail"].items())
        table.add_row(f"+{offset:.1f}s", e["status"], e["source"], escape(detail))
    out.print()
    out.print(table)
    out.print("\n[bold]Transcript[/]")
    # A turn with no words (the transcript of a noise) is left out, not shown empty.
    spoken = [t for t in view["transcript"] if t["text"].strip() or t["heard_text"]]
    if not spoken:
        out.print("  [dim](none)[/]")
    for turn in spoken:
        who = {"agent": "Agent", "user": "Callee"}.get(turn["role"], turn["role"])
        if turn["interrupted"]:
            heard = turn["heard_text"] or ""
            cut = turn["text"][len(heard) :] if turn["text"].startswith(heard) else turn["text"]
            out.print(
                f"  [bold]{who}:[/] {escape(heard)}[strike dim]{escape(cut)}[/]  "
                "[yellow](cut off)[/]"
            )
        else:
            # Escaped: "[caller spoke for 1.2 s]" is text, not markup to swallow.
            out.print(f"  [bold]{who}:[/] {escape(turn['text'])}")
    if view["analysis"] is not None:
        out.print("\n[bold]Post-call analysis[/]")
        out.print_json(json.dumps(view["analysis"]))


# callbridge forget NUMBER ---------------------------------------------------------------


def forget(
    number: Annotated[str, typer.Argument(help='The number, e.g. "+1 234 567 8900".')],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    include_dnc: Annotated[
        bool,
        typer.Option("--include-dnc", help="Also take the number off the do-not-call list."),
    ] = False,
) -> None:
    """Delete a number's calls, timelines and transcripts (a deletion request)."""
    from callbridge.adapters.db.queries import CallFilter
    from callbridge.domain.privacy import mask_number
    from callbridge.services.operator import e164_of

    settings = settings_or_exit()
    try:
        e164 = e164_of(number, settings.default_region)
    except CallbridgeError as exc:
        fail(str(exc))

    async def count(operator: OperatorService) -> int:
        return len(await operator.calls(CallFilter(number=e164, limit=1000)))

    found: int = _run(count)
    what = f"{found} call(s) to {mask_number(e164)}"
    if include_dnc:
        what += " and its do-not-call entry"
    if not yes and not typer.confirm(f"Delete {what}, with their timelines and transcripts?"):
        console.print("Nothing deleted.")
        raise typer.Exit(1)
    if _number_key(settings) is None:
        console.print(
            "[yellow]note:[/] no CALLBRIDGE_SECRET_KEY, so refusals and the do-not-call list "
            "(stored as keyed hashes) cannot be matched and are left as they are."
        )

    async def work(operator: OperatorService) -> Any:
        return await operator.forget(e164, include_dnc=include_dnc)

    result = _run(work)
    console.print(
        f"[green]Deleted[/] {result.calls} call(s), {result.events} event(s), "
        f"{result.turns} transcript turn(s), {result.refusals} refusal(s), "
        f"{result.do_not_call} do-not-call entr{'y' if result.do_not_call == 1 else 'ies'}."
    )


# callbridge retention run ---------------------------------------------------------------


@retention_app.command("run")
def retention_run(
    days: Annotated[
        int | None,
        typer.Option(help="Clear text older than this many days (default: the setting).", min=1),
    ] = None,
) -> None:
    """Clear transcripts and chat context older than CALLBRIDGE_RETENTION_DAYS now."""
    wanted = days or settings_or_exit().retention_days
    if wanted is None:
        fail("Retention is off: give --days N or set CALLBRIDGE_RETENTION_DAYS.")

    async def work(operator: OperatorService) -> Any:
        return await operator.purge(wanted)

    result = _run(work)
    console.print(
        f"[green]Cleared[/] {result.calls} call(s) and {result.turns} transcript turn(s) "
        f"older than {wanted} days (before {result.cutoff:%Y-%m-%d %H:%M} UTC)."
    )


def attach_operator_commands(app: typer.Typer) -> None:
    """Add ``forget`` and ``retention`` to the main ``callbridge`` app."""
    app.command("forget")(forget)
    app.add_typer(retention_app, name="retention")


# The draining server --------------------------------------------------------------------


def serve_draining(app: Any, drain: Callable[[], Awaitable[object]] | None, **options: Any) -> None:
    """Run ``app`` under uvicorn; the first SIGTERM drains before the server stops.

    On SIGTERM, ``drain()`` runs while the server keeps serving (status callbacks and
    TwiML for calls in progress must still arrive); when it returns, uvicorn shuts
    down as usual (lifespan shutdown included). A second SIGTERM, or SIGINT, stops
    at once as uvicorn does by default.

    Args:
        app: the ASGI app.
        drain: ``container.operator.drain.drain`` (None: plain uvicorn).
        options: :class:`uvicorn.Config` options (host, port, log_level, …).
    """
    import uvicorn

    class DrainingServer(uvicorn.Server):
        def __init__(self, config: uvicorn.Config) -> None:
            super().__init__(config)
            self._loop: asyncio.AbstractEventLoop | None = None
            self._drain_started = False
            self._drain_task: asyncio.Task[None] | None = None

        async def serve(self, sockets: Any = None) -> None:
            self._loop = asyncio.get_running_loop()
            await super().serve(sockets)

        async def _drain_then_exit(self) -> None:
            assert drain is not None
            try:
                await drain()
            finally:
                self.should_exit = True

        def _start_drain(self) -> None:
            self._drain_task = asyncio.ensure_future(self._drain_then_exit())

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            if drain is None or sig != signal.SIGTERM or self._drain_started or not self._loop:
                super().handle_exit(sig, frame)
                return
            self._drain_started = True
            self._loop.call_soon_threadsafe(self._start_drain)

    options.setdefault("timeout_graceful_shutdown", 5)
    DrainingServer(uvicorn.Config(app, **options)).run()
