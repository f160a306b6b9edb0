"""The ``callbridge soak`` command (Typer), registered in :mod:`callbridge.cli`.

Nothing heavy is imported until the command runs, so ``callbridge --help`` stays fast.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

__all__ = ["soak_command"]


def soak_command(
    calls: Annotated[
        int, typer.Option("--calls", min=10, max=2000, help="Call requests in the day.")
    ] = 300,
    duration: Annotated[
        float,
        typer.Option("--duration", min=30.0, help="Seconds the day is compressed into."),
    ] = 180.0,
    json_file: Annotated[
        Path | None, typer.Option("--json", help="Also write the result to this JSON file.")
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            help="An empty PostgreSQL database to use instead of "
            "starting one (then it is not stopped as a fault).",
        ),
    ] = None,
    redis_url: Annotated[
        str | None,
        typer.Option(
            "--redis-url",
            help="A Redis to use instead of starting one (then it is not stopped as a fault).",
        ),
    ] = None,
    settings: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="NAME=VALUE: one more setting for the servers (repeat it); "
            "a quota setting replaces the one configured to the traffic.",
        ),
    ] = None,
    workdir: Annotated[
        Path | None, typer.Option("--workdir", help="Keep the logs here (kept on failure).")
    ] = None,
) -> None:
    """A compressed day of real operation: two servers behind nginx on one PostgreSQL and
    one Redis, the sandbox as Twilio and ElevenLabs, every callee behaviour, a kill -9,
    a database outage and a Redis outage; then invariants, not timings.

    Needs nginx, PostgreSQL (initdb, pg_ctl) and redis-server on this machine unless
    their URLs are given. Prints a one-screen summary; exits 1 if an invariant failed.
    """
    from callbridge.cli_common import fail
    from callbridge.errors import ConfigError
    from callbridge.soak.profile import ci_profile
    from callbridge.soak.report import as_json, summary_lines
    from callbridge.soak.runner import SoakOptions, run_soak

    extra: dict[str, str] = {}
    for item in settings or []:
        name, has_value, value = item.partition("=")
        if not has_value or not name.strip():
            fail(f"--set needs NAME=VALUE, not {item!r}")
        extra[name.strip()] = value
    try:
        profile = replace(ci_profile(), calls=calls, duration_s=duration, extra_env=extra)
    except ValueError as exc:
        fail(str(exc))
    options = SoakOptions(profile, database_url=database_url, redis_url=redis_url, workdir=workdir)
    try:
        result = asyncio.run(run_soak(options))
    except ConfigError as exc:
        fail(str(exc))
    except (asyncio.CancelledError, KeyboardInterrupt):
        fail("The soak was interrupted; what it started has been stopped.", code=130)
    for line in summary_lines(result):
        typer.echo(line)
    if json_file is not None:
        json_file.write_text(json.dumps(as_json(result), indent=2) + "\n")
    if not result.passed:
        raise typer.Exit(1)
