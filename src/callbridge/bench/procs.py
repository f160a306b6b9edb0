"""The processes under test: start them pinned to a core, watch them through /proc, stop them.

The server under test (``callbridge serve`` in the sandbox, pointed at the load
generator's peers) and the baseline relay each run in their own process, pinned
with ``taskset -c 0`` when the machine has two cores or more; the load generator
pins itself to core 1. CPU time is ``utime + stime`` from ``/proc/<pid>/stat``;
memory is ``VmRSS`` (and its anonymous part, ``RssAnon``) and the thread count
``Threads`` from ``/proc/<pid>/status``.

A started process is always stopped: :class:`Managed` is an async context
manager that sends SIGINT, then SIGKILL after a grace period, also when the
block is left by Ctrl-C or an error.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import httpx

from callbridge.tasks import cancel_and_wait

__all__ = [
    "Managed",
    "ProcSample",
    "ProcSampler",
    "answers",
    "free_port",
    "pin_self",
    "read_proc",
    "stop_process",
]

_TICKS = os.sysconf("SC_CLK_TCK")
_SCRUBBED = ("CALLBRIDGE_", "TWILIO_", "ELEVENLABS_")
_SCRUBBED_NAMES = ("PUBLIC_BASE_URL", "NEXT_PUBLIC_APP_URL", "DATABASE_URL", "REDIS_URL")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def can_pin() -> bool:
    """Whether there are two cores to split and ``taskset`` to split them with."""
    return len(os.sched_getaffinity(0)) >= 2 and shutil.which("taskset") is not None


def pin_self(core: int) -> None:
    """Run this process (the load generator) on ``core`` only."""
    os.sched_setaffinity(0, {core})


def clean_env(extra: Mapping[str, str]) -> dict[str, str]:
    """This environment without callbridge/vendor settings, plus ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(_SCRUBBED) and k not in _SCRUBBED_NAMES
    }
    env.update(extra)
    return env


@dataclass(frozen=True, slots=True)
class ProcSample:
    """One reading of a process: when, CPU seconds so far, resident memory, threads."""

    at: float
    cpu_s: float
    rss_bytes: int
    #: the anonymous part of ``rss_bytes`` (heap, arenas, stacks: not mapped files)
    rss_anon_bytes: int = 0
    threads: int = 0


def read_proc(pid: int) -> ProcSample:
    """Read a process's CPU time and RSS now.

    Raises:
        OSError: the process is gone.
    """
    with open(f"/proc/{pid}/stat", "rb") as stat:
        raw = stat.read()
    fields = raw[raw.rindex(b")") + 2 :].split()
    cpu = (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime (fields 14, 15)
    rss = anon = threads = 0
    with open(f"/proc/{pid}/status", "rb") as status:
        for line in status:
            if line.startswith(b"VmRSS:"):
                rss = int(line.split()[1]) * 1024
            elif line.startswith(b"RssAnon:"):
                anon = int(line.split()[1]) * 1024
            elif line.startswith(b"Threads:"):
                threads = int(line.split()[1])
                break  # the last of the three in the file
    return ProcSample(time.monotonic(), cpu, rss, anon, threads)


class ProcSampler:
    """Reads a process every ``interval`` seconds while it runs."""

    def __init__(self, pid: int, interval: float = 0.25) -> None:
        self.pid = pid
        self._interval = interval
        self.samples: list[ProcSample] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start sampling (one reading at once)."""
        self._take()
        self._task = asyncio.get_running_loop().create_task(self._run())

    def _take(self) -> None:
        try:
            self.samples.append(read_proc(self.pid))
        except OSError:
            return

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            self._take()

    async def stop(self) -> None:
        """Stop sampling (one last reading)."""
        task, self._task = self._task, None
        await cancel_and_wait(task)
        self._take()


class Managed:
    """A child process that is stopped when the ``async with`` block ends, whatever happens."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        log: Path,
        ready_url: str | None = None,
        ready_port: int | None = None,
        pin_core: int | None = None,
        nice: int = 0,
        start_timeout: float = 30.0,
    ) -> None:
        self._argv = list(argv)
        if nice:
            self._argv = ["nice", "-n", str(nice), *self._argv]  # nice execs it: same pid
        if pin_core is not None:
            self._argv = ["taskset", "-c", str(pin_core), *self._argv]
        self._env = dict(env)
        self._log = log
        self._ready_url = ready_url
        self._ready_port = ready_port
        self._timeout = start_timeout
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """The process id (``taskset`` execs the command, so it is the command's)."""
        assert self.proc is not None
        return self.proc.pid

    async def __aenter__(self) -> Managed:
        with self._log.open("ab") as log:
            # Popen returns at once (it does not wait for the child): fine in a coroutine.
            self.proc = subprocess.Popen(  # noqa: S603, ASYNC220 - our own interpreter and script
                self._argv, env=self._env, stdout=log, stderr=subprocess.STDOUT
            )
        try:
            await self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.stop)

    async def _wait_ready(self) -> None:
        deadline = time.monotonic() + self._timeout
        async with httpx.AsyncClient(timeout=2.0) as http:
            while time.monotonic() < deadline:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    tail = self._log.read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"{self._argv[-1]} exited at start-up:\n{tail}")
                if await self._ready(http):
                    return
                await asyncio.sleep(0.1)
        raise RuntimeError(f"{' '.join(self._argv)} was not ready in {self._timeout:.0f} s")

    async def _ready(self, http: httpx.AsyncClient) -> bool:
        assert self._ready_url is not None or self._ready_port is not None
        return await answers(http, url=self._ready_url, port=self._ready_port)

    def stop(self, grace: float = 10.0) -> None:
        """SIGINT, then SIGKILL after ``grace`` seconds (idempotent)."""
        stop_process(self.proc, signal.SIGINT, grace)


async def answers(http: httpx.AsyncClient, *, url: str | None, port: int | None) -> bool:
    """Whether a child process is ready now: ``url`` answers 200, or else the loopback
    ``port`` accepts a connection (with neither to ask, it is)."""
    if url is not None:
        try:
            return (await http.get(url)).status_code == 200
        except httpx.HTTPError:
            return False
    if port is None:
        return True
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    return True


def stop_process(proc: subprocess.Popen[bytes] | None, sig: int, grace: float) -> None:
    """Send ``sig``, then SIGKILL after ``grace`` seconds (idempotent)."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def core_times() -> list[tuple[int, int]]:
    """(busy, total) clock ticks of every core so far, from ``/proc/stat``."""
    out: list[tuple[int, int]] = []
    with open("/proc/stat", "rb") as stat:
        for line in stat:
            if line.startswith(b"cpu") and line[3:4].isdigit():
                ticks = [int(v) for v in line.split()[1:]]
                idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
                out.append((sum(ticks) - idle, sum(ticks)))
    return out


def busy_percent(before: list[tuple[int, int]], after: list[tuple[int, int]]) -> list[float]:
    """How busy each core was between two :func:`core_times` readings, in percent."""
    return [
        round(100 * (b2 - b1) / max(1, t2 - t1), 1)
        for (b1, t1), (b2, t2) in zip(before, after, strict=False)
    ]


def python() -> str:
    """This interpreter (the venv's when run from it)."""
    return sys.executable
