"""The media path's writes, done in the background: the pumps never wait on the database.

A bridge hands its records (transcript turns, stream events, the agent conversation's
id) to the process's one :class:`BackgroundWriter` and goes on at once. The writer is a
bounded queue and one task that writes in batches (every turn of a batch in one
transaction). When the queue is full the oldest item that is not critical is dropped
(the oldest item if all are critical) and counted in
``callbridge_writer_dropped_total{kind,reason="full"}``: a pump is never made to wait
for room. A batch that fails is retried with a growing pause (the database may be
restarting); an item still failing after :data:`ATTEMPTS` tries is dropped and counted
with ``reason="failed"``. A batch the database does not answer within
:data:`WRITE_TIMEOUT_S` (a lock held by someone else, a server that stopped answering)
is abandoned, counted in ``callbridge_writer_timeouts_total`` and retried like a failed
one, so one hung write never holds every later record back for good. A bridge flushes
when its stream ends (so the transcript is there when the call is), and the container
flushes at shutdown.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import structlog

from callbridge.errors import CallbridgeError, StoreError
from callbridge.metrics import Metrics
from callbridge.ports import CallEvent, CallStore, StatusUpdate, TranscriptTurn
from callbridge.tasks import cancel_and_wait

_log = structlog.get_logger(__name__)

#: Items a process may hold unwritten before it drops the oldest non-critical one.
CAPACITY = 10_000
#: Items written per batch at most.
BATCH = 256
#: Tries of one item before it is dropped (pauses double from 0.1 s up to 2 s).
ATTEMPTS = 6
#: Seconds one batch may take before it is abandoned and retried. A cancelled write is
#: rolled back; if the database had already committed it when the answer was lost, the
#: retry writes those records again (at least once, never silently lost).
WRITE_TIMEOUT_S = 10.0


@dataclass(slots=True)
class _Item:
    kind: str  # "turns", "event", "call_update"
    critical: bool
    seq: int = 0
    turns: Sequence[TranscriptTurn] = ()
    event: CallEvent | None = None
    call_id: str = ""
    changes: StatusUpdate | None = None
    tries: int = field(default=0)


class BackgroundWriter:
    """One per process: queues the media path's writes and writes them in batches."""

    def __init__(
        self,
        *,
        store: CallStore,
        metrics: Metrics,
        capacity: int = CAPACITY,
        write_timeout_s: float = WRITE_TIMEOUT_S,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._capacity = capacity
        self._write_timeout_s = write_timeout_s
        self._queue: deque[_Item] = deque()
        self._in_flight: list[_Item] = []
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()
        self._submitted = 0
        self._done = 0  # every item with seq <= this is written or dropped
        self._task: asyncio.Task[None] | None = None

    @property
    def pending(self) -> int:
        """Items submitted and not yet written or dropped."""
        return self._submitted - self._done

    def start(self) -> None:
        """Start the writing task."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="callbridge-background-writer"
            )

    async def aclose(self, *, timeout_s: float = 5.0) -> None:
        """Write what is queued (for ``timeout_s`` at most), then stop."""
        if self._task is not None:
            await self.flush(timeout_s=timeout_s)
        task, self._task = self._task, None
        await cancel_and_wait(task)
        if self.pending:
            _log.warning("writer_closed_unwritten", items=self.pending)

    # Submitting: never waits ------------------------------------------------------------

    def turns(self, turns: Sequence[TranscriptTurn]) -> None:
        """Queue a call's transcript turns (critical)."""
        if turns:
            self._put(_Item("turns", critical=True, turns=list(turns)))

    def event(self, event: CallEvent, *, critical: bool = False) -> None:
        """Queue a timeline event (not critical unless said)."""
        self._put(_Item("event", critical=critical, event=event))

    def call_update(self, call_id: str, changes: StatusUpdate) -> None:
        """Queue a change to a call's row (critical)."""
        self._put(_Item("call_update", critical=True, call_id=call_id, changes=changes))

    def _put(self, item: _Item) -> None:
        if len(self._queue) >= self._capacity:
            self._drop_one()
        self._submitted += 1
        item.seq = self._submitted
        self._queue.append(item)
        self._gauge()
        self._wake.set()

    def _drop_one(self) -> None:
        victim = next((i for i in self._queue if not i.critical), self._queue[0])
        self._queue.remove(victim)
        self._dropped(victim, "full")

    def _dropped(self, item: _Item, reason: str) -> None:
        self._metrics.writer_dropped.labels(kind=item.kind, reason=reason).inc()
        _log.warning("writer_dropped", kind=item.kind, reason=reason)
        self._settled(item)

    # Waiting ----------------------------------------------------------------------------

    async def flush(self, *, timeout_s: float = 5.0) -> bool:
        """Wait until everything submitted so far is written or dropped.

        Returns False if that took longer than ``timeout_s`` (the items stay queued).
        """
        target = self._submitted
        self._wake.set()
        try:
            async with asyncio.timeout(timeout_s):
                while self._lowest_unsettled() <= target:
                    self._progress.clear()
                    await self._progress.wait()
        except TimeoutError:
            return False
        return True

    def _lowest_unsettled(self) -> int:
        """The smallest seq not yet written or dropped (past the last one if none)."""
        lowest = self._submitted + 1
        if self._queue:
            lowest = min(lowest, self._queue[0].seq)
        if self._in_flight:
            lowest = min(lowest, min(i.seq for i in self._in_flight))
        return lowest

    # Writing ----------------------------------------------------------------------------

    async def _run(self) -> None:
        pause = 0.1
        while True:
            if not self._queue and not self._in_flight:
                self._wake.clear()
                await self._wake.wait()
            while self._queue and len(self._in_flight) < BATCH:
                self._in_flight.append(self._queue.popleft())
            self._gauge()
            try:
                async with asyncio.timeout(self._write_timeout_s):
                    await self._write(self._in_flight)
            except (StoreError, TimeoutError) as exc:
                if isinstance(exc, TimeoutError):
                    self._metrics.writer_timeouts.inc()
                    error = f"no answer within {self._write_timeout_s:g} s"
                else:
                    error = str(exc)
                _log.warning("writer_batch_failed", error=error, items=len(self._in_flight))
                for item in list(self._in_flight):
                    item.tries += 1
                    if item.tries >= ATTEMPTS:
                        self._in_flight.remove(item)
                        self._dropped(item, "failed")
                self._progress.set()
                await asyncio.sleep(pause)
                pause = min(2.0, pause * 2)
                continue
            pause = 0.1

    async def _write(self, batch: list[_Item]) -> None:
        """Write ``batch``, removing each item once it is written (a retry repeats none).

        Raises:
            StoreError: the database failed (what is left of ``batch`` is unwritten).
        """
        turns = [i for i in batch if i.kind == "turns"]
        if turns:
            await self._store.add_turns([t for i in turns for t in i.turns])
            for item in turns:
                batch.remove(item)
                self._settled(item)
        for item in list(batch):
            try:
                if item.kind == "call_update":
                    assert item.changes is not None
                    await self._store.update_call(item.call_id, item.changes)
                else:
                    assert item.event is not None
                    await self._store.add_event(item.event)
            except StoreError:
                raise
            except CallbridgeError as exc:  # e.g. the call is gone: retrying cannot help
                _log.warning("writer_refused", kind=item.kind, error=str(exc))
                batch.remove(item)
                self._dropped(item, "refused")
                continue
            batch.remove(item)
            self._settled(item)

    def _settled(self, _item: _Item) -> None:
        self._done += 1
        self._progress.set()
        self._metrics.writer_queue.set(self.pending)

    def _gauge(self) -> None:
        self._metrics.writer_queue.set(len(self._queue) + len(self._in_flight))
