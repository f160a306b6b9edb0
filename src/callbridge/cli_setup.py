"""``callbridge setup``: configure the ElevenLabs agent for callbridge through its API.

Reads the agent, prints what it would change (and what each audio format costs the
bridge), then applies the changes with ``PATCH`` after ``--yes`` or a confirmation.
Switching the audio to μ-law 8000 is offered on its own, confirmed separately
(``--ulaw`` with ``--yes``), because the web widget uses the same formats. A second
run finds nothing to change and says so.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import httpx
import typer
from rich.console import Console

from callbridge.cli_common import fail, settings_or_exit
from callbridge.errors import CallbridgeError, ConfigError
from callbridge.settings import Settings

if TYPE_CHECKING:
    from callbridge.bootstrap import VendorEndpoints

__all__ = ["agent_setup_for", "setup"]

out = Console()
T = TypeVar("T")


def agent_setup_for(settings: Settings, http: httpx.AsyncClient, ends: VendorEndpoints) -> Any:
    """The :class:`~callbridge.services.agent_setup.AgentSetup` for ``settings``.

    Raises:
        ConfigError: no agent id, or no API key outside the sandbox.
    """
    from callbridge.adapters.elevenlabs.agent_config import ElevenLabsAgentConfig
    from callbridge.services.agent_setup import AgentSetup

    if not ends.agent_id:
        raise ConfigError("ELEVENLABS_AGENT_ID is not set: give the id of your agent.")
    if not ends.sandbox and not ends.elevenlabs_api_key:
        raise ConfigError(
            "ELEVENLABS_API_KEY is not set: create a key with access to ElevenLabs Agents."
        )
    api = ElevenLabsAgentConfig(
        api_base_url=ends.elevenlabs_base, api_key=ends.elevenlabs_api_key, http=http
    )
    return AgentSetup(
        api=api, agent_id=ends.agent_id, first_message_override=bool(settings.first_message)
    )


def _run(settings: Settings, work: Callable[[Any], Awaitable[T]]) -> T:
    from callbridge.bootstrap import vendor_endpoints

    async def go() -> T:
        ends = vendor_endpoints(settings)
        async with httpx.AsyncClient() as http:
            return await work(agent_setup_for(settings, http, ends))

    try:
        return asyncio.run(go())
    except CallbridgeError as exc:
        fail(str(exc))


def setup(
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Apply without asking (not the audio switch).")
    ] = False,
    ulaw: Annotated[
        bool | None,
        typer.Option(
            "--ulaw/--keep-audio",
            help="Switch the agent's audio to ulaw_8000 both ways (affects the web widget too).",
        ),
    ] = None,
) -> None:
    """Configure the ElevenLabs agent (tools, events, variables, overrides) for callbridge."""
    settings = settings_or_exit()
    reading = _run(settings, lambda s: s.read())
    plan = reading.plan
    agent = reading.agent
    out.print(f"Agent [bold]{agent.get('name', '')}[/] ({agent.get('agent_id', '')})")
    for cost in plan.audio:
        mark = "[green]✓[/]" if cost.passthrough else "[yellow]![/]"
        out.print(f"  {mark} audio {cost.direction} {cost.format}: {cost.cost}")
    for note in reading.notes:
        out.print(f"  [yellow]![/] {note}")
    if plan.up_to_date:
        out.print(
            "[green]✓[/] The agent already has everything callbridge needs; nothing to change."
        )
    else:
        out.print("[bold]setup will:[/]")
        for change in plan.changes:
            out.print(f"  • {change.describe()}")
        if not yes and not typer.confirm("Apply these changes?", default=True):
            out.print("Nothing changed.")
            raise typer.Exit(1)
    audio = False
    if plan.audio_change is not None:
        out.print(f"[bold]offer:[/] {plan.audio_change.describe()}.")
        if ulaw is None and yes:
            out.print("  Not switched: pass --ulaw to switch, --keep-audio to silence this offer.")
        elif ulaw is None:
            audio = typer.confirm("Switch the audio to ulaw_8000?", default=False)
        else:
            audio = ulaw
    if plan.up_to_date and not audio:
        return

    done: list[str] = _run(settings, lambda s: s.apply(reading, audio=audio))
    for line in done:
        out.print(f"  [green]✓[/] {line}")
    out.print("[green]✓[/] The agent is set up. `callbridge doctor --online` checks it.")
