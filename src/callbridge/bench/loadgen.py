"""One load run: N calls, each streaming for S seconds, against one target.

Two kinds of target get the very same load (the same frames, the same agent
behaviour, seeded per call):

* ``flow``: a callbridge server (or any server with the same endpoints). Calls go
  through the whole flow (:mod:`callbridge.bench.twilio_flow`), which runs in a
  process of its own (:mod:`callbridge.bench.flow_process`) so that its set-up
  bursts never delay a frame's send or receive time here; it hands each call's
  stream back to the media endpoints of this process. The server reaches the
  Twilio REST peer (in the driver process) and the agent peer (here) through the
  base URLs it was configured with.
* ``direct``: the baseline relay. It has no REST API, TwiML or signatures, so the
  callee opens its media stream straight at the relay's WebSocket, with the call
  id in ``customParameters``; the relay opens the agent socket. The media
  endpoints (callee streams, frame clock, agent peer) are the same for both kinds. Only the media
  path is compared (``setup_ms`` is not measured for the baseline).

Calls start ``1 / arrival_rate`` seconds apart. Each callee hangs up ``duration``
seconds after its stream's ``start``; frames sent in the last half second are
not counted (they may still be in flight when the callee hangs up).
"""

from __future__ import annotations

import asyncio
import gc
import os
import secrets
import time
from dataclasses import dataclass, field
from typing import Literal

from callbridge.bench.agent_peer import AgentPeer
from callbridge.bench.callee import CalleeStream, FrameClock
from callbridge.bench.flow_process import FlowDriver
from callbridge.bench.probe import CallProbe, Registry
from callbridge.bench.procs import (
    ProcSample,
    ProcSampler,
    busy_percent,
    core_times,
    read_proc,
)
from callbridge.bench.twilio_flow import FlowConfig

__all__ = ["LoadConfig", "RunResult", "bench_number", "run_load"]

_AREAS = ("202", "212", "213", "312", "415", "617", "703", "206", "305", "404", "512", "646")
_GRACE_NS = 500_000_000


def bench_number(index: int) -> str:
    """A fictional, valid US number per call: ``+1 AAA 555 01xx`` (1,200 of them)."""
    area = _AREAS[(index // 100) % len(_AREAS)]
    return f"+1{area}55501{index % 100:02d}"


@dataclass(frozen=True, slots=True)
class LoadConfig:
    """What one run does."""

    calls: int
    duration_s: float
    arrival_rate: float = 20.0
    flow: FlowConfig = field(default_factory=FlowConfig)
    open_timeout_s: float = 10.0


@dataclass
class RunResult:
    """Everything measured in one run, before it is summarised."""

    kind: Literal["flow", "direct"]
    config: LoadConfig
    probes: list[CallProbe]
    server: list[ProcSample]
    loadgen: list[ProcSample]
    #: the flow driver process's readings (its CPU counts as the load generator's)
    driver: list[ProcSample]
    lateness_ns: list[int]
    #: the server read just before the first call (after the runner's warm-up, if any)
    idle: ProcSample | None
    agent_errors: list[str]
    #: how busy each core was during the run (other people's work included), percent
    cores_busy: list[float] = field(default_factory=list)
    load_average: float | None = None


@dataclass
class Peers:
    """The load generator's listening ends, shared by the runs of one ``bench``.

    ``agent`` (and every callee stream) lives in this process; ``rest`` is the flow
    driver process, which holds the Twilio REST peer.
    """

    account_sid: str
    auth_token: str
    registry: Registry = field(default_factory=Registry)
    agent: AgentPeer | None = None
    rest: FlowDriver | None = None
    agent_first_audio_s: float = 0.0

    async def start(self, *, agent_port: int = 0, rest_port: int = 0) -> None:
        """Listen on loopback (0: any free port)."""
        self.agent = AgentPeer(self.registry, first_audio_delay_s=self.agent_first_audio_s)
        await self.agent.start(agent_port)
        self.rest = FlowDriver()
        await self.rest.start(
            account_sid=self.account_sid, auth_token=self.auth_token, rest_port=rest_port
        )

    async def aclose(self) -> None:
        """Stop listening (and the flow driver)."""
        if self.rest is not None:
            await self.rest.aclose()
        if self.agent is not None:
            await self.agent.aclose()


async def run_load(
    peers: Peers,
    config: LoadConfig,
    *,
    kind: Literal["flow", "direct"],
    target: str,
    server_pid: int | None,
) -> RunResult:
    """Run ``config.calls`` calls against ``target`` and measure them.

    Args:
        peers: the started agent and REST peers.
        config: how many calls, how long, how fast they arrive.
        kind: ``flow`` (a callbridge-like server at ``target`` = its http base URL)
            or ``direct`` (a relay whose media-stream WebSocket URL is ``target``).
        server_pid: the process to read CPU and memory of (None: not measured).
    """
    registry = peers.registry = Registry()
    assert peers.agent is not None
    peers.agent.registry = registry
    clock = FrameClock()
    server = ProcSampler(server_pid) if server_pid else None
    idle = read_proc(server_pid) if server_pid else None
    me = ProcSampler(os.getpid())
    assert peers.rest is not None
    driver = peers.rest
    driver_cpu = ProcSampler(driver.pid) if driver.pid else None
    probes = [
        CallProbe(index=i, call_id=f"bench_{i}_{secrets.token_hex(4)}", number=bench_number(i))
        for i in range(config.calls)
    ]
    for probe in probes:
        registry.add(probe)

    async def run_stream(stream: CalleeStream) -> None:
        await _stream(stream, clock, config)

    async def one(probe: CallProbe) -> None:
        await asyncio.sleep(probe.index / config.arrival_rate)
        if kind == "flow":
            await driver.call(probe)
            return
        stream = CalleeStream(
            probe,
            url=target,
            parameters={"call_id": probe.call_id},
            call_sid="CA" + secrets.token_hex(16),
            account_sid=peers.account_sid,
        )
        try:
            await run_stream(stream)
            probe.completed = probe.error is None
        except (OSError, TimeoutError) as exc:
            probe.fail(f"{type(exc).__name__}: {exc}")

    if kind == "flow":
        await driver.begin(
            target=target, config=config.flow, registry=registry, run_stream=run_stream
        )
    # The load generator's own pauses would be counted as the bridge's latency: no
    # cyclic GC while the calls run (a run allocates little that needs it).
    gc.collect()
    gc.freeze()
    gc.disable()
    cores_before = core_times()
    clock.start()
    me.start()
    if driver_cpu is not None:
        driver_cpu.start()
    if server is not None:
        server.start()
    try:
        budget = config.calls / config.arrival_rate + config.duration_s + 120
        async with asyncio.timeout(budget), asyncio.TaskGroup() as group:
            for probe in probes:
                group.create_task(one(probe))
    finally:
        gc.enable()
        gc.unfreeze()
        cores = busy_percent(cores_before, core_times())
        await clock.aclose()
        await me.stop()
        if driver_cpu is not None:
            await driver_cpu.stop()
        if server is not None:
            await server.stop()
        if kind == "flow":
            await driver.end()
    return RunResult(
        kind=kind,
        config=config,
        probes=probes,
        server=server.samples if server else [],
        loadgen=me.samples,
        driver=driver_cpu.samples if driver_cpu else [],
        lateness_ns=list(clock.lateness_ns),
        idle=idle,
        agent_errors=list(peers.agent.errors),
        cores_busy=cores,
        load_average=round(os.getloadavg()[0], 2),
    )


async def _stream(stream: CalleeStream, clock: FrameClock, config: LoadConfig) -> None:
    """Open the stream, send frames for ``duration``, hang up, wait for the reader."""
    import websockets

    probe = stream.probe
    try:
        await stream.open(config.open_timeout_s)
    except (OSError, TimeoutError, websockets.InvalidHandshake) as exc:
        probe.fail(f"media stream refused: {type(exc).__name__}: {exc}")
        return
    assert probe.stream_start_ns is not None
    probe.end_ns = probe.stream_start_ns + int(config.duration_s * 1e9)
    probe.cutoff_ns = probe.end_ns - _GRACE_NS
    clock.add(stream)
    reader = asyncio.get_running_loop().create_task(stream.read())
    try:
        await asyncio.sleep(max(0.0, (probe.end_ns - time.monotonic_ns()) / 1e9))
    finally:
        clock.remove(stream)
        await stream.hang_up()
        try:
            await asyncio.wait_for(reader, 5)
        except TimeoutError:
            probe.fail("the media stream did not close after stop")
