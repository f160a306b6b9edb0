"""``callbridge bench``: start what is measured, drive the load, report.

The load generator is this process (pinned to core 1: the media endpoints) and its
child, the flow driver that plays Twilio's set-up side
(:mod:`callbridge.bench.flow_process`, same core, lower priority). For each run it starts a
fresh callbridge server (``callbridge serve`` in the sandbox, its own SQLite file,
abuse quotas raised, pinned to core 0) pointed at the load generator's Twilio REST
peer and agent peer, then the baseline relay (``benchmarks/baseline_relay.py``,
also on core 0) with the same load, and prints both with their ratio. Each process
first carries a few warm-up calls, so its one-time costs (lazy imports, caches,
allocator arenas) are reported apart from the memory a call adds. ``--repeat N``
measures them alternately N times, the order reversed every other round so that
a drift in the machine's load falls on both alike; the figures are the medians
and each ratio the median of the rounds' ratios (:mod:`callbridge.bench.report`).
``--compare-node`` adds our lean Node relay (:mod:`callbridge.bench.node`). ``--ramp``
repeats the server run at each step and stops at the first step that loses a
frame or has a p99 added latency of 20 ms or more. ``--target`` drives a server
that is already running (configured with the peers' base URLs, printed at start)
instead of starting one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from rich.console import Console

from callbridge.bench.loadgen import LoadConfig, Peers, run_load
from callbridge.bench.memprofile import DIR_ENV, SNAPSHOT, STARTED, top_per_call
from callbridge.bench.node import NodeRelay
from callbridge.bench.procs import (
    Managed,
    can_pin,
    clean_env,
    free_port,
    pin_self,
    python,
    read_proc,
)
from callbridge.bench.report import (
    combine,
    median_ratios,
    passes,
    print_memory,
    print_ramp,
    print_table,
    ratio_spread,
    ratios,
    summarise,
)
from callbridge.bench.twilio_flow import FlowConfig

__all__ = ["LIFTED_LIMITS", "BenchOptions", "run_bench"]

AGENT_ID = "agent_bench"
#: The abuse limits a bench server runs with: high enough that load is never refused
#: by policy (the benches measure the server, not the abuse policy).
LIFTED_LIMITS = {
    "CALLBRIDGE_PER_NUMBER_HOURLY": "1000",
    "CALLBRIDGE_PER_NUMBER_DAILY": "1000",
    "CALLBRIDGE_PER_NUMBER_COOLDOWN": "1",
    "CALLBRIDGE_PER_IP_HOURLY": "1000000",
    "CALLBRIDGE_PER_IP_BLOCK_HOURLY": "1000000",
    "CALLBRIDGE_DISTINCT_NUMBERS_PER_IP_DAILY": "1000000",
    "CALLBRIDGE_PER_COUNTRY_DAILY": "1000000",
    "CALLBRIDGE_PER_PREFIX_DAILY": "1000000",
    "CALLBRIDGE_MAX_CONCURRENT_CALLS": "100000",
    "CALLBRIDGE_DAILY_SPEND_CAP_CENTS": "1000000000",
}
#: Where the baseline relay lives in a source checkout (src/callbridge/bench/ → repo root).
DEFAULT_BASELINE = Path(__file__).resolve().parents[3] / "benchmarks" / "baseline_relay.py"
_RAMP_SETTLE_S = 10.0
#: The control process's ``nice`` under ``--roles``, as ``deploy/systemd`` runs it: the
#: two share core 0 here, and the media process's frames go before a set-up's work
#: (at equal priority the kernel lets a burst of set-ups run for its whole time slice,
#: several milliseconds, while frames wait).
CONTROL_NICE = 5
_CLI = "from callbridge.cli import main; main()"
_PROFILED_CLI = "from callbridge.bench.memprofile import install; install(); " + _CLI


@dataclass(frozen=True)
class BenchOptions:
    """Everything ``callbridge bench`` can be told."""

    calls: int = 50
    duration_s: float = 20.0
    ramp: tuple[int, ...] = ()
    target: str | None = None
    server_pid: int | None = None
    baseline: bool = True
    baseline_script: Path = DEFAULT_BASELINE
    pin: bool = True
    arrival_rate: float = 20.0
    flow: FlowConfig = field(default_factory=FlowConfig)
    twilio_port: int = 0
    agent_port: int = 0
    workdir: Path | None = None
    server_env: dict[str, str] = field(default_factory=dict)
    agent_first_audio_ms: float = 0.0
    #: run a ``--role control`` and a ``--role media`` process instead of one ``all``
    roles: bool = False
    #: also run the server once under tracemalloc and report the top allocations per call
    profile_memory: bool = False
    #: rounds of the measurement, the targets' order alternating
    repeat: int = 1
    #: calls each process carries before it is measured (0: none)
    warmup_calls: int = 3
    #: also measure the lean Node relay (prepared by the caller: see :class:`NodeRelay`)
    node: NodeRelay | None = None


def server_env(
    peers: Peers, port: int, database: Path, duration_s: float, extra: dict[str, str]
) -> dict[str, str]:
    """The server under test's environment: the sandbox, our peers, quotas raised."""
    assert peers.rest is not None and peers.agent is not None
    return clean_env(
        {
            "CALLBRIDGE_SANDBOX": "true",
            "TWILIO_ACCOUNT_SID": peers.account_sid,
            "TWILIO_AUTH_TOKEN": peers.auth_token,
            "TWILIO_API_BASE_URL": peers.rest.base_url,
            "ELEVENLABS_API_BASE_URL": peers.agent.base_url,
            "ELEVENLABS_AGENT_ID": AGENT_ID,
            "CALLBRIDGE_SECRET_KEY": secrets.token_hex(32),
            "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
            "DATABASE_URL": f"sqlite+aiosqlite:///{database}",
            **LIFTED_LIMITS,
            # The bench finds how many calls a core carries: no overload gate in its way.
            "CALLBRIDGE_MAX_SETUPS_IN_FLIGHT": "0",
            "CALLBRIDGE_TIME_LIMIT": str(max(600, int(duration_s) + 120)),
            "CALLBRIDGE_QUIET_HOURS": "off",
            "CALLBRIDGE_DRAIN_SECONDS": "0",
            "CALLBRIDGE_LOG_FORMAT": "json",
            **extra,
        }
    )


@contextlib.asynccontextmanager
async def _server(
    options: BenchOptions,
    peers: Peers,
    workdir: Path,
    duration_s: float,
    tag: str,
    extra_env: dict[str, str] | None = None,
    entry: str = _CLI,
) -> AsyncIterator[tuple[str, int | None]]:
    """A fresh server under test (or the ``--target``); yields its base URL and pid."""
    if options.target is not None:
        yield options.target.rstrip("/"), options.server_pid
        return
    port = free_port()
    env = server_env(peers, port, workdir / f"{tag}.db", duration_s, options.server_env)
    env |= extra_env or {}
    if not options.roles:
        async with _serve(options, env, port, "all", workdir / f"{tag}.log", entry) as managed:
            yield f"http://127.0.0.1:{port}", managed.pid
        return
    # The media process gets its own address for the stream (TwiML's URL and the
    # stream's signature check), as a proxy in front of both would give it.
    media_port = free_port()
    env["CALLBRIDGE_MEDIA_BASE_URL"] = f"http://127.0.0.1:{media_port}"
    async with (
        _serve(options, env, port, "control", workdir / f"{tag}-control.log", entry, CONTROL_NICE),
        _serve(options, env, media_port, "media", workdir / f"{tag}-media.log", entry) as media,
    ):
        # CPU, memory and latency are the media process's: it is what carries the calls.
        yield f"http://127.0.0.1:{port}", media.pid


def _serve(
    options: BenchOptions,
    env: dict[str, str],
    port: int,
    role: str,
    log: Path,
    entry: str,
    nice: int = 0,
) -> Managed:
    """``callbridge serve --role ROLE`` on ``port`` (core 0 when pinned, at ``nice``)."""
    argv = [
        python(),
        "-c",
        entry,
        "serve",
        "--role",
        role,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    return Managed(
        argv,
        env=env,
        log=log,
        ready_url=f"http://127.0.0.1:{port}/readyz",
        pin_core=0 if options.pin else None,
        nice=nice,
    )


@contextlib.asynccontextmanager
async def _relay(
    options: BenchOptions, peers: Peers, workdir: Path, tag: str, node: bool = False
) -> AsyncIterator[tuple[str, int]]:
    """A fresh baseline relay (or the Node relay); yields its media-stream URL and pid."""
    assert peers.agent is not None
    port = free_port()
    agent_url = f"ws://127.0.0.1:{peers.agent.port}/v1/convai/conversation?agent_id={AGENT_ID}"
    if node:
        assert options.node is not None
        command = options.node.argv()
    else:
        command = [python(), str(options.baseline_script)]
    argv = [*command, "--port", str(port), "--agent-url", agent_url]
    managed = Managed(
        argv,
        env=clean_env({}),
        log=workdir / f"{tag}.log",
        ready_port=port,
        pin_core=0 if options.pin else None,
    )
    async with managed:
        yield f"ws://127.0.0.1:{port}/media-stream", managed.pid


#: What each measured target is called in the figures, in a round's first order.
TARGET_NAMES = ("callbridge", "baseline", "node_relay")
_WARMUP_S = 2.0
_SETTLE_S = 1.0


async def _measure(
    options: BenchOptions, peers: Peers, workdir: Path, config: LoadConfig, which: str, tag: str
) -> dict[str, Any]:
    """Start ``which`` (a name of :data:`TARGET_NAMES`) afresh, warm it up, measure it."""
    if which == "callbridge":
        target = _server(options, peers, workdir, config.duration_s, tag)
        kind: Literal["flow", "direct"] = "flow"
    else:
        target = _relay(options, peers, workdir, tag, node=which == "node_relay")
        kind = "direct"
    async with target as (url, pid):
        start = read_proc(pid) if pid else None
        if options.warmup_calls:
            # The same few calls for every target, so one-time costs (lazy imports,
            # compiled caches, allocator arenas) are not charged to the measured calls.
            warm_up = replace(config, calls=options.warmup_calls, duration_s=_WARMUP_S)
            await run_load(peers, warm_up, kind=kind, target=url, server_pid=None)
            await asyncio.sleep(_SETTLE_S)
        result = await run_load(peers, config, kind=kind, target=url, server_pid=pid)
    figures = summarise(result)
    if start is not None and result.idle is not None:
        figures["server"]["rss_mb_start"] = round(start.rss_bytes / 2**20, 1)
        figures["server"]["rss_mb_warmup"] = round(
            (result.idle.rss_bytes - start.rss_bytes) / 2**20, 2
        )
    return figures


async def run_bench(options: BenchOptions, console: Console | None = None) -> dict[str, Any]:
    """Run the benchmark; returns the figures (``baseline`` and ``ramp`` included when run)."""
    console = console or Console(stderr=True)
    if options.pin and not can_pin():
        console.print("[yellow]fewer than two cores or no taskset: processes are not pinned[/]")
        options = replace(options, pin=False)
    if options.pin:
        pin_self(1)
    peers = Peers(
        account_sid="AC" + secrets.token_hex(16) if options.target is None else _env_sid(),
        auth_token=secrets.token_hex(16) if options.target is None else _env_token(),
        agent_first_audio_s=options.agent_first_audio_ms / 1000,
    )
    await peers.start(agent_port=options.agent_port, rest_port=options.twilio_port)
    try:
        with tempfile.TemporaryDirectory(prefix="callbridge-bench-") as tmp:
            workdir = options.workdir or Path(tmp)
            if options.target is not None:
                assert peers.rest is not None and peers.agent is not None
                console.print(
                    f"target {options.target} must run with TWILIO_API_BASE_URL="
                    f"{peers.rest.base_url} ELEVENLABS_API_BASE_URL={peers.agent.base_url}"
                )
            return await _run(options, peers, workdir, console)
    finally:
        await peers.aclose()


async def _run(
    options: BenchOptions, peers: Peers, workdir: Path, console: Console
) -> dict[str, Any]:
    config = LoadConfig(
        calls=options.calls,
        duration_s=options.duration_s,
        arrival_rate=options.arrival_rate,
        flow=options.flow,
    )
    names = [n for n in TARGET_NAMES if n == "callbridge" or _wanted(options, n)]
    rounds: list[dict[str, Any]] = []
    for index in range(options.repeat):
        # A B, B A, …: a load that drifts during the rounds weighs on both alike.
        order = names if index % 2 == 0 else names[::-1]
        entry: dict[str, Any] = {"round": index, "order": list(order)}
        for which in order:
            step = f" (round {index + 1}/{options.repeat})" if options.repeat > 1 else ""
            console.print(f"{which}: {config.calls} calls × {config.duration_s:g} s{step} …")
            tag = f"{which}-{index}"
            entry[which] = await _measure(options, peers, workdir, config, which, tag)
        for which in names[1:]:
            entry[f"ratio_to_{which}"] = _ratios(entry["callbridge"], entry[which])
        if "node_relay" in entry:
            entry["ratio_node_to_callbridge"] = _ratios(entry["node_relay"], entry["callbridge"])
        rounds.append(entry)
    figures = combine([r["callbridge"] for r in rounds])
    for which in names[1:]:
        figures[which] = combine([r[which] for r in rounds])
    for key in ("ratio_to_baseline", "ratio_node_to_callbridge"):
        if key in rounds[0]:
            per_round = [r[key] for r in rounds]
            figures[key] = median_ratios(per_round)
            figures[key.replace("ratio_", "ratio_spread_", 1)] = ratio_spread(per_round)
    figures["rounds"] = rounds
    figures["meta"] = {
        "pinned": options.pin,
        "repeat": options.repeat,
        "warmup_calls": options.warmup_calls,
        "arrival_rate": options.arrival_rate,
        "target": options.target or "callbridge serve (started by the bench)",
    }
    if options.roles:
        figures["meta"]["roles"] = "control + media (figures are the media process's)"
    if options.profile_memory:
        console.print(f"memory profile (tracemalloc): {config.calls} calls …")
        figures["memory_profile"] = await _profile(options, peers, workdir, config)
    if options.ramp:
        figures["ramp"] = await _ramp(options, peers, workdir, console)
    return figures


def _wanted(options: BenchOptions, name: str) -> bool:
    return (name == "baseline" and options.baseline) or (
        name == "node_relay" and options.node is not None
    )


def _ratios(ours: dict[str, Any], theirs: dict[str, Any]) -> Any:
    """One round's ratios, on the figures both sides have in common."""
    keys = (
        "frames",
        "added_latency_ms",
        "added_latency_steady_ms",
        "first_agent_audio_ms",
        "clear_ms",
        "server",
    )
    return ratios({k: ours[k] for k in keys}, theirs)


async def _profile(
    options: BenchOptions, peers: Peers, workdir: Path, config: LoadConfig
) -> dict[str, Any]:
    """One more server run under tracemalloc: what each call added, by source line.

    Tracing starts after a few warm-up calls and the snapshot is taken once every call's
    stream is up: what is still held, divided by the calls. Only the allocation
    sites are reported: the run's latency and CPU carry tracemalloc's cost.
    """
    out = workdir / "memprofile"
    out.mkdir(exist_ok=True)
    extra = {DIR_ENV: str(out)}
    async with _server(
        options, peers, workdir, config.duration_s, "profile", extra, _PROFILED_CLI
    ) as (url, pid):
        assert pid is not None
        # A few calls first, so one-time costs (lazy imports, SQLAlchemy's compiled
        # statements, caches) are paid before tracing starts and not counted per call.
        warm_up = replace(config, calls=min(5, config.calls), duration_s=2.0)
        await run_load(peers, warm_up, kind="flow", target=url, server_pid=None)
        await _signal(pid, out / STARTED)
        load = asyncio.get_running_loop().create_task(
            run_load(peers, config, kind="flow", target=url, server_pid=pid)
        )
        await asyncio.sleep(0)  # run_load has installed this run's registry
        registry = peers.registry
        while True:  # until every call's stream is up (or the run ended early)
            if load.done() or all(p.stream_start_ns is not None for p in registry):
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)
        taken_ns = time.monotonic_ns()
        await _signal(pid, out / SNAPSHOT)
        result = await load
    ends = [p.end_ns for p in result.probes if p.end_ns is not None]
    up = all(p.stream_start_ns is not None for p in result.probes)
    entries = top_per_call(out / SNAPSHOT, config.calls)
    return {
        "calls": config.calls,
        "taken_with_every_call_up": up and bool(ends) and taken_ns < min(ends),
        "top": [
            {"where": e.where, "kib_per_call": e.kib_per_call, "blocks_per_call": e.blocks_per_call}
            for e in entries
        ],
    }


async def _signal(pid: int, path: Path, within: float = 60.0) -> None:
    """Signal the profiled server (start tracing, or take the snapshot); wait for ``path``."""
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + within
    while not await asyncio.to_thread(path.exists):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the profiled server wrote no {path.name} in {within:.0f} s")
        await asyncio.sleep(0.1)


async def _ramp(
    options: BenchOptions, peers: Peers, workdir: Path, console: Console
) -> dict[str, Any]:
    steps: list[dict[str, Any]] = []
    carried: dict[str, int | None] = {}
    targets = ("callbridge", "baseline") if options.baseline else ("callbridge",)
    for which in targets:
        best: int | None = None
        for calls in options.ramp:
            duration = max(options.duration_s, calls / options.arrival_rate + _RAMP_SETTLE_S)
            config = LoadConfig(
                calls=calls,
                duration_s=duration,
                arrival_rate=options.arrival_rate,
                flow=options.flow,
            )
            console.print(f"ramp {which}: {calls} calls × {duration:g} s …")
            figures = await _measure(
                options, peers, workdir, config, which, f"ramp-{which}-{calls}"
            )
            ok = passes(figures)
            steps.append({"target": which, "calls": calls, "pass": ok, "figures": figures})
            if not ok:
                break
            best = calls
        carried[which] = best
    print_ramp(steps, carried, console)
    return {
        "steps": steps,
        "carried_calls_per_core": carried.get("callbridge"),
        "baseline_carried_calls_per_core": carried.get("baseline"),
    }


def _env_sid() -> str:
    import os

    sid = os.environ.get("TWILIO_ACCOUNT_SID")
    if not sid:
        raise SystemExit("--target needs TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN (the target's)")
    return sid


def _env_token() -> str:
    import os

    token = os.environ.get("TWILIO_AUTH_TOKEN")
    if not token:
        raise SystemExit("--target needs TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN (the target's)")
    return token


def write_json(figures: dict[str, Any], path: Path) -> None:
    """Write the figures as JSON."""
    path.write_text(json.dumps(figures, indent=2, sort_keys=False) + "\n")


def show(figures: dict[str, Any], console: Console) -> None:
    """Print the main table (and the memory profile when one was taken)."""
    print_table(figures, console)
    if "memory_profile" in figures:
        print_memory(figures["memory_profile"], console)


def run_sync(options: BenchOptions, console: Console) -> dict[str, Any]:
    """Run the benchmark on a fresh event loop (uvloop when installed)."""
    try:
        import uvloop

        factory: Any = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvicorn[standard] brings uvloop
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(run_bench(options, console))
