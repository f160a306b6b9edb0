"""The ``callbridge bench`` command (Typer); the lead registers it in :mod:`callbridge.cli`.

Nothing heavy is imported until the command runs, so ``callbridge --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

__all__ = ["bench_command"]


def _steps(value: str | None) -> tuple[int, ...]:
    if not value:
        return ()
    try:
        steps = tuple(int(part) for part in value.split(",") if part.strip())
    except ValueError:
        raise typer.BadParameter("give concurrency steps like 25,50,100,200") from None
    if not steps or any(s < 1 for s in steps):
        raise typer.BadParameter("give concurrency steps like 25,50,100,200")
    return steps


def bench_command(
    calls: Annotated[int, typer.Option("--calls", min=1, max=1200, help="Concurrent calls.")] = 50,
    duration: Annotated[
        float, typer.Option("--duration", min=1.0, help="Seconds each call streams.")
    ] = 20.0,
    ramp: Annotated[
        str | None,
        typer.Option(
            "--ramp",
            help="Concurrency steps, e.g. 25,50,100,200,400: finds how many "
            "calls one core carries (no frame lost, p99 added latency < 20 ms).",
        ),
    ] = None,
    target: Annotated[
        str | None,
        typer.Option(
            "--target",
            help="A server already running (its http base URL), instead "
            "of starting one; it must use the base URLs printed at start.",
        ),
    ] = None,
    server_pid: Annotated[
        int | None, typer.Option("--server-pid", help="With --target: its pid, for CPU and RSS.")
    ] = None,
    json_file: Annotated[
        Path | None, typer.Option("--json", help="Also write the figures to this JSON file.")
    ] = None,
    baseline: Annotated[
        bool, typer.Option("--baseline/--no-baseline", help="Also measure the baseline relay.")
    ] = True,
    baseline_script: Annotated[
        Path | None,
        typer.Option(
            "--baseline-script",
            exists=True,
            dir_okay=False,
            help="Another Python relay with the baseline's command line in the baseline's "
            "place, e.g. benchmarks/lean_relay.py.",
        ),
    ] = None,
    smoke: Annotated[
        bool, typer.Option("--smoke", help="A few calls for a few seconds: does it work at all.")
    ] = False,
    pin: Annotated[
        bool, typer.Option("--pin/--no-pin", help="Server on core 0, load generator on core 1.")
    ] = True,
    arrival_rate: Annotated[
        float, typer.Option("--arrival-rate", min=0.5, help="New calls per second.")
    ] = 20.0,
    twilio_port: Annotated[
        int, typer.Option("--twilio-port", help="Port of the Twilio REST peer (0: any).")
    ] = 0,
    agent_port: Annotated[
        int, typer.Option("--agent-port", help="Port of the agent peer (0: any).")
    ] = 0,
    agent_first_audio_ms: Annotated[
        float,
        typer.Option(
            "--agent-first-audio-ms",
            min=0.0,
            help="How long the emulated agent takes to its first words after the "
            "conversation starts (a real agent's LLM + TTS: ~500-1000 ms).",
        ),
    ] = 0.0,
    server_setting: Annotated[
        list[str] | None,
        typer.Option(
            "--server-setting",
            help="KEY=VALUE given to the server under test, e.g. CALLBRIDGE_PREWARM=false "
            "(repeatable).",
        ),
    ] = None,
    roles: Annotated[
        bool,
        typer.Option(
            "--roles",
            help="Run a --role control and a --role media process instead of one --role "
            "all; the figures are the media process's. They share an SQLite file unless "
            "--server-setting DATABASE_URL=postgresql+asyncpg://… (SQLite's lock can "
            "refuse streams under heavy load).",
        ),
    ] = False,
    repeat: Annotated[
        int,
        typer.Option(
            "--repeat",
            min=1,
            max=20,
            help="Measure callbridge and the relays this many rounds, alternating their "
            "order; figures are medians, ratios the median of the rounds' ratios.",
        ),
    ] = 1,
    warmup_calls: Annotated[
        int,
        typer.Option(
            "--warmup-calls",
            min=0,
            max=50,
            help="Calls each process carries before it is measured (its one-time memory "
            "growth is reported apart).",
        ),
    ] = 3,
    compare_node: Annotated[
        bool,
        typer.Option(
            "--compare-node",
            help="Also measure the lean Node relay (benchmarks/node_relay; needs node and "
            "npm: installs ws into ~/.cache/callbridge).",
        ),
    ] = False,
    profile_memory: Annotated[
        bool,
        typer.Option(
            "--profile-memory",
            help="Run the server once more under tracemalloc and print the allocation "
            "sites that grow most per call.",
        ),
    ] = False,
) -> None:
    """Measure how many calls one core carries and how much latency the bridge adds."""
    from rich.console import Console

    from callbridge.bench.node import NodeRelay, NodeUnavailable
    from callbridge.bench.runner import BenchOptions, run_sync, show, write_json
    from callbridge.bench.twilio_flow import FlowConfig

    console = Console(stderr=True)
    node: NodeRelay | None = None
    if compare_node:
        try:
            node = NodeRelay.prepare()
        except NodeUnavailable as exc:
            console.print(f"[red]{exc}[/]")
            raise typer.Exit(2) from None

    extra: dict[str, Any] = {}
    if baseline_script is not None:
        extra["baseline_script"] = baseline_script.resolve()
    options = BenchOptions(
        calls=3 if smoke else calls,
        duration_s=3.0 if smoke else duration,
        ramp=() if smoke else _steps(ramp),
        target=target,
        server_pid=server_pid,
        baseline=baseline,
        pin=pin,
        arrival_rate=arrival_rate,
        flow=FlowConfig(answer_s=0.1, consent_s=0.1, greeting_s=0.1, stream_delay_s=0.05)
        if smoke
        else FlowConfig(),
        twilio_port=twilio_port or (8101 if target else 0),
        agent_port=agent_port or (8102 if target else 0),
        server_env=_settings(server_setting or []),
        agent_first_audio_ms=agent_first_audio_ms,
        roles=roles,
        profile_memory=profile_memory,
        repeat=repeat,
        warmup_calls=warmup_calls,
        node=node,
        **extra,
    )
    try:
        figures = run_sync(options, console)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    show(figures, Console())
    if json_file is not None:
        write_json(figures, json_file)
        console.print(f"figures written to {json_file}")


def _settings(pairs: list[str]) -> dict[str, str]:
    """``KEY=VALUE`` strings as a dict (a pair without ``=`` is an error)."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--server-setting")
        out[key.strip()] = value
    return out
