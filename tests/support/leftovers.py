"""What a test run leaves behind, and a watchdog for an interpreter that cannot exit.

A pytest run that has printed its summary can still hang: Python joins every non-daemon
thread (the worker threads of ``asyncio.to_thread`` among them) before it exits, so one
blocking call in a worker thread that never returns holds the process, and CI, until its
time limit. This plugin

- at the end of the session, after a grace period, names every thread still running a
  job, with where it is, and fails the run: such a thread would hold the exit;
- names every child process still alive then, and stops it (a note, not a failure: a
  process does not hold the exit, but it should not outlive the run);
- notes SQLite connections never closed (their aiosqlite worker threads are daemon
  threads since sqlite_loop made them so, so they no longer hold the exit: a note, not
  a failure); and
- once the summary is printed, arms ``faulthandler`` so that a process still alive a
  minute later prints every thread's stack and exits with status 1, rather than hanging.
"""

from __future__ import annotations

import contextlib
import faulthandler
import gc
import os
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import pytest

#: How long the run waits for threads and children to finish on their own.
GRACE_SECONDS = 15.0
#: How long the interpreter may take to exit once the summary is printed.
EXIT_WATCHDOG_SECONDS = 60


@dataclass(frozen=True)
class Leftover:
    """A thread or a process that outlived the tests."""

    kind: str
    name: str
    where: str


def _idle_pool_worker(frame: FrameType) -> bool:
    """True for a ``concurrent.futures`` worker waiting for work (its own frame is the
    innermost: the queue is C code). Such a worker exits at shutdown."""
    code = frame.f_code
    return code.co_name == "_worker" and code.co_filename.endswith("concurrent/futures/thread.py")


def busy_threads() -> list[Leftover]:
    """Non-daemon threads other than the main one that are doing something."""
    frames = sys._current_frames()
    found = []
    for thread in threading.enumerate():
        if thread is threading.main_thread() or thread.daemon or not thread.is_alive():
            continue
        frame = frames.get(thread.ident or -1)
        if frame is None or _idle_pool_worker(frame):
            continue
        where = "".join(traceback.format_stack(frame)[-6:])
        found.append(Leftover("thread", thread.name, where))
    return found


def live_children() -> list[Leftover]:
    """This process's children that are alive (not zombies), from ``/proc``."""
    me = os.getpid()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            argv = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        # The command name may hold spaces and parentheses: split after the last ")".
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == me and state != "Z":
            found.append(Leftover("process", entry.name, argv.strip()))
    return found


def leftovers(grace: float = GRACE_SECONDS) -> list[Leftover]:
    """Busy threads and live children still there after ``grace`` seconds."""
    deadline = time.monotonic() + grace
    while True:
        found = busy_threads() + live_children()
        if not found or time.monotonic() >= deadline:
            return found
        time.sleep(0.2)


def unclosed_sqlite_connections() -> int:
    """How many aiosqlite connections are open and unreachable from anything but their
    thread: each keeps a worker thread (aiosqlite's ``_connection_worker_thread``)."""
    gc.collect()  # a connection only in a reference cycle is closed by its finaliser
    return sum(
        getattr(getattr(thread, "_target", None), "__name__", "") == "_connection_worker_thread"
        for thread in threading.enumerate()
    )


def stop_processes(pids: list[int], grace: float = 5.0) -> None:
    """SIGTERM each child, SIGKILL what is left after ``grace`` seconds, and reap them."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while pids and time.monotonic() < deadline:
            pids = [pid for pid in pids if not _reaped(pid)]
            time.sleep(0.1)
        if not pids:
            return


def _reaped(pid: int) -> bool:
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True  # reaped elsewhere (its Popen)
    return done == pid


_threads: list[Leftover] = []
_processes: list[Leftover] = []
_unclosed_sqlite: list[int] = [0]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail a run that leaves a working thread; stop the processes it leaves."""
    found = leftovers()
    _threads[:] = [leftover for leftover in found if leftover.kind == "thread"]
    _processes[:] = [leftover for leftover in found if leftover.kind == "process"]
    stop_processes([int(leftover.name) for leftover in _processes])
    _unclosed_sqlite[0] = unclosed_sqlite_connections()
    if _threads and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Name what was left behind, and where each thread is."""
    if _unclosed_sqlite[0]:
        terminalreporter.write_sep(
            "-", f"{_unclosed_sqlite[0]} SQLite connection(s) never closed", yellow=True
        )
    if _processes:
        terminalreporter.write_sep("-", "processes left running (now stopped)", yellow=True)
        for leftover in _processes:
            terminalreporter.write_line(f"{leftover.name}: {leftover.where}")
    if _threads:
        terminalreporter.write_sep("=", "threads left working (the run fails)", red=True)
        for leftover in _threads:
            terminalreporter.write_line(f"{leftover.name}:\n{leftover.where}")


def pytest_unconfigure(config: pytest.Config) -> None:
    """If the interpreter cannot exit within a minute, print every stack and exit 1."""
    faulthandler.dump_traceback_later(EXIT_WATCHDOG_SECONDS, exit=True, file=sys.__stderr__)
