"""``callbridge dnc``: add, remove and list numbers on the do-not-call list.

Numbers are stored as keyed hashes under the same key the server uses
(:func:`callbridge.bootstrap._secret_key`: ``CALLBRIDGE_SECRET_KEY``, or derived
from ``TWILIO_AUTH_TOKEN``), so an entry added here is refused by every server
process. With neither set the server's key is random per start and the list
could not be matched: the command says so and stops.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from callbridge.cli_common import console, fail, local_time, settings_or_exit
from callbridge.errors import CallbridgeError, ConfigError
from callbridge.settings import Settings

dnc_app = typer.Typer(help="The do-not-call list.", no_args_is_help=True)

NumberArg = Annotated[str, typer.Argument(help='The number, e.g. "+1 234 567 8900".')]


def hashing_key(settings: Settings) -> bytes:
    """The key the server hashes numbers with, derived exactly as the server does.

    Raises:
        ConfigError: the server's key would be random (nothing here could match it).
    """
    from callbridge.bootstrap import _secret_key

    sandbox = settings.use_sandbox
    if settings.secret_key is None and (sandbox or settings.twilio_auth_token is None):
        raise ConfigError(
            "Set CALLBRIDGE_SECRET_KEY (or TWILIO_AUTH_TOKEN outside the sandbox): without it "
            "the server picks a random key at each start and this list could not be matched."
        )
    return _secret_key(settings, sandbox)


def _number(settings: Settings, raw: str) -> tuple[str, str]:
    """(keyed hash, masked form) of a typed number."""
    from callbridge.domain.phone import normalise
    from callbridge.domain.quotas import hashed

    number = normalise(raw, settings.default_region)
    return hashed(number.e164, hashing_key(settings)), number.masked


def _run(settings: Settings, action: str, raw: str | None) -> None:
    from callbridge.adapters.db.do_not_call import SqlDoNotCallList
    from callbridge.adapters.db.migrate import upgrade
    from callbridge.adapters.db.store import SqlCallStore, make_engine

    async def go() -> None:
        number = _number(settings, raw) if raw is not None else None
        await upgrade(settings.database_url)
        store = SqlCallStore(make_engine(settings.database_url))
        dnc = SqlDoNotCallList(store.engine)
        try:
            if action == "add":
                assert number is not None
                # Audited as the web page's changes are (who: the command line).
                await dnc.change_by_person("added", number[0], number[1], "cli")
                console.print(f"[green]{number[1]} is on the do-not-call list[/]")
            elif action == "remove":
                assert number is not None
                if await dnc.change_by_person("removed", number[0], number[1], "cli"):
                    console.print(f"[green]{number[1]} is off the do-not-call list[/]")
                else:
                    console.print(f"{number[1]} was not on the do-not-call list")
            else:
                entries = await dnc.entries()
                table = Table(title=f"{len(entries)} numbers on the do-not-call list")
                for column in ("number", "source", "added"):
                    table.add_column(column)
                for entry in entries:
                    table.add_row(entry.masked, entry.source, local_time(entry.added_at))
                Console().print(table)
        finally:
            await store.aclose()

    try:
        asyncio.run(go())
    except CallbridgeError as exc:
        fail(str(exc))


@dnc_app.command("add")
def add(number: NumberArg) -> None:
    """Never call this number again."""
    _run(settings_or_exit(), "add", number)


@dnc_app.command("remove")
def remove(number: NumberArg) -> None:
    """Take this number off the list (only with the callee's consent)."""
    _run(settings_or_exit(), "remove", number)


@dnc_app.command("list")
def list_numbers() -> None:
    """Show the list, numbers masked."""
    _run(settings_or_exit(), "list", None)
