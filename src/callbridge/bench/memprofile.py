"""Where a server's memory per call goes: tracemalloc snapshots taken on a signal.

``callbridge bench --profile-memory`` runs the server under test once more with
:func:`install` called before ``callbridge`` starts. The first ``SIGUSR1`` starts :mod:`tracemalloc`
(the bench sends it before the first call, so start-up is neither slowed nor
counted); the second dumps a snapshot into ``BENCH_MEMPROFILE_DIR`` (sent once every
call is up). Every block in it was allocated since the first signal and is still
alive: what the calls hold. :func:`top_per_call` ranks it per call by source line.
tracemalloc slows every allocation, so that run's latency and CPU are not reported.
"""

from __future__ import annotations

import os
import signal
import tracemalloc
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

__all__ = ["DIR_ENV", "SNAPSHOT", "STARTED", "MemoryEntry", "install", "top_per_call"]

#: Where the server writes ``started`` (tracing is on) and ``snapshot.tm``.
DIR_ENV = "BENCH_MEMPROFILE_DIR"
STARTED = "started"
SNAPSHOT = "snapshot.tm"
_FRAMES = 16


def install() -> None:
    """Start tracing on the first SIGUSR1 and dump a snapshot on the next.

    Called by the profiled server's entry point before ``callbridge`` runs (the
    bench's ``-c`` line), so this module never imports the CLI.
    """
    out = Path(os.environ[DIR_ENV])

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        if not tracemalloc.is_tracing():
            tracemalloc.start(_FRAMES)
            (out / STARTED).touch()
            return
        snapshot = tracemalloc.take_snapshot().filter_traces(
            (tracemalloc.Filter(False, tracemalloc.__file__),)
        )
        partial = out / f"{SNAPSHOT}.part"
        snapshot.dump(str(partial))
        partial.rename(out / SNAPSHOT)

    signal.signal(signal.SIGUSR1, on_signal)


@dataclass(frozen=True, slots=True)
class MemoryEntry:
    """One allocation site's growth per call between the two snapshots."""

    where: str
    kib_per_call: float
    blocks_per_call: float


def top_per_call(snapshot: Path, calls: int, limit: int = 15) -> list[MemoryEntry]:
    """The ``limit`` allocation sites holding the most memory per call in ``snapshot``.

    A site is the line that allocated, with the innermost callbridge frame that led
    to it when that is another line, so each entry names our code that asked.
    """
    stats = tracemalloc.Snapshot.load(str(snapshot)).statistics("traceback")
    grouped: dict[str, list[float]] = {}
    for stat in stats:
        where = _site(stat.traceback)
        totals = grouped.setdefault(where, [0.0, 0.0])
        totals[0] += stat.size
        totals[1] += stat.count
    ranked = sorted(grouped.items(), key=lambda kv: kv[1][0], reverse=True)[:limit]
    per = max(calls, 1)
    return [
        MemoryEntry(where, round(size / 1024 / per, 2), round(count / per, 1))
        for where, (size, count) in ranked
    ]


def _site(traceback: tracemalloc.Traceback) -> str:
    """``file:line`` of the allocation, with the callbridge frame that led to it."""
    frames = list(reversed(list(traceback)))  # a Traceback runs oldest first
    alloc = frames[0]
    # The innermost frame of ours below the server's entry (serve_draining runs the loop).
    ours = next(
        (f for f in frames if "/callbridge/" in f.filename and "/callbridge/cli" not in f.filename),
        None,
    )
    where = f"{_short(alloc.filename)}:{alloc.lineno}"
    if ours is not None and ours is not alloc:
        where += f" ← {_short(ours.filename)}:{ours.lineno}"
    return where


def _short(filename: str) -> str:
    for marker in ("/site-packages/", "/src/", "/lib/python3.11/"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename
