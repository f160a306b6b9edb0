"""What every ``callbridge`` command shares: the error console, failing with one
sentence, and loading the settings."""

from __future__ import annotations

from datetime import datetime
from typing import Any, NoReturn

import typer
from rich.console import Console

from callbridge.errors import ConfigError
from callbridge.settings import Settings, load_settings

__all__ = ["console", "fail", "local_time", "settings_or_exit"]

#: Messages for people (errors, progress), on stderr so stdout stays for data.
console = Console(stderr=True)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``callbridge: message`` and exit with ``code``."""
    console.print(f"[bold red]callbridge:[/] {message}")
    raise typer.Exit(code)


def settings_or_exit(**overrides: Any) -> Settings:
    """The settings, or exit 2 with the one sentence that says what is wrong."""
    try:
        return load_settings(**overrides)
    except ConfigError as exc:
        fail(str(exc))


def local_time(value: datetime | str | None) -> str:
    """A stored (UTC) time in this terminal's time zone, with its offset:
    ``2026-12-01 19:40:04+01:00``; "" for None."""
    if value is None:
        return ""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.astimezone().isoformat(sep=" ", timespec="seconds")
