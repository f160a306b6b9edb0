"""The post-call reconciler: a call whose post-call webhook never came gets its data anyway.

security.md F.42. ElevenLabs posts ``post_call_transcription`` once, without retries
unless they are turned on (protocols.md §4.10), so an outage, a wrong webhook URL or a
lost delivery would leave a call without its transcript and analysis for good. Every
``interval_s`` this job looks for calls that ended more than ``after`` ago (but within
``horizon``), have an ElevenLabs conversation id and no processed post-call record, and
fetches each conversation from the Conversations API
(:class:`~callbridge.ports.ConversationHistory`):

- ``done``: handed to :meth:`PostCallService.accept_fetched
  <callbridge.services.postcall.PostCallService.accept_fetched>` — the webhook's own
  claim and processing, so a webhook and a fetch are processed once in whatever order
  they come (outcome ``attached``, or ``already`` when the webhook won);
- ``initiated``/``in-progress``/``processing`` (``pending``), 404 (``not_found``) or a
  provider failure (``error``): tried again later, backing off, at most
  ``max_attempts`` times, then given up (``gave_up``);
- ``failed``: ElevenLabs will not produce more; recorded and not tried again.

A conversation given up or failed gets a ``postcall_unavailable`` event on its call's
timeline. Credentials refused (401/403) or rate limiting end the pass without counting
an attempt: the fault is ours or passing, not the conversation's.

Many processes may run this job against one database. Each pass runs only while its
process holds the job's lease (:class:`~callbridge.services.job_lease.JobLease`), and
the loop outlives every error (:func:`~callbridge.tasks.run_forever`). Within a pass,
taking a conversation is one
conditional write of its attempts row (:meth:`PostCallFetches.take`), so only one
process fetches it per round; and processing takes the post-call record's claim, an
insert on the conversation id's primary key, which exactly one process (or webhook
delivery) can win. The rest only log and count.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Protocol

import structlog

from callbridge.errors import ErrorCategory, NotFound, ProtocolError, ProviderError
from callbridge.metrics import Metrics
from callbridge.ports import CallEvent, CallStore, Clock, ConversationHistory
from callbridge.services.job_lease import JobLease
from callbridge.services.postcall import PostCallService
from callbridge.tasks import cancel_and_wait, run_forever

_log = structlog.get_logger(__name__)

_PENDING = frozenset({"initiated", "in-progress", "processing"})
_NO_DATA = frozenset({"pending", "not_found", "error", "failed"})
#: Outcomes after which the conversation is fetched again (until ``max_attempts``).
_RETRIED = frozenset({"pending", "not_found", "error", "already"})
#: Credentials refused or rate limited: the pass stops, no attempt is counted.
_REFUSED = "refused"


class PostCallFetches(Protocol):
    """The reconciler's bookkeeping (see :mod:`callbridge.adapters.db.postcall_fetches`)."""

    async def due(
        self, *, ended_before: datetime, ended_after: datetime, now: datetime, limit: int
    ) -> Sequence[tuple[str, str]]:
        """``(call_id, conversation_id)`` of the calls whose conversation is due."""
        ...

    async def take(
        self, conversation_id: str, call_id: str, *, now: datetime, lease_until: datetime
    ) -> int | None:
        """Take a due conversation; the attempts made so far, or None if not ours."""
        ...

    async def record(
        self, conversation_id: str, *, outcome: str, now: datetime, retry_at: datetime | None
    ) -> None:
        """Count an attempt; try again at ``retry_at``, or never (None)."""
        ...


class PostCallReconciler:
    """Fetches the conversations whose post-call webhook did not come.

    Args:
        fetches: the attempts' bookkeeping.
        history: ElevenLabs' Conversations API.
        postcall: the webhook's service (claim and processing).
        store: the call store (timeline events).
        clock: the clock.
        metrics: ``callbridge_postcall_reconciled_total`` by outcome.
        after: how long after a call's end its webhook may still come (the ``X`` of F.42).
        interval_s: seconds between passes.
        batch: conversations fetched per pass at most.
        max_attempts: fetches of one conversation before giving up.
        retry_s: the first retry's delay; doubled each time, up to an hour.
        horizon: calls that ended longer ago than this are not looked at.
        lease_s: how long a taken conversation is left to the process that took it.
        job_lease: the job's lease (None: this process alone works the passes).
        backoff_cap_s: the longest wait after failed passes in a row.
    """

    def __init__(
        self,
        *,
        fetches: PostCallFetches,
        history: ConversationHistory,
        postcall: PostCallService,
        store: CallStore,
        clock: Clock,
        metrics: Metrics | None,
        after: timedelta,
        interval_s: float = 60.0,
        batch: int = 20,
        max_attempts: int = 6,
        retry_s: float = 60.0,
        horizon: timedelta = timedelta(days=7),
        lease_s: float = 300.0,
        job_lease: JobLease | None = None,
        backoff_cap_s: float = 600.0,
    ) -> None:
        self._fetches = fetches
        self._history = history
        self._postcall = postcall
        self._store = store
        self._clock = clock
        self._metrics = metrics
        self.after = after
        self.max_attempts = max_attempts
        self._interval_s = interval_s
        self._batch = batch
        self._retry_s = retry_s
        self._horizon = horizon
        self._lease = timedelta(seconds=lease_s)
        self._job_lease = job_lease
        self._backoff_cap_s = backoff_cap_s
        self._task: asyncio.Task[None] | None = None

    async def run_once(self, now: datetime | None = None) -> Counter[str]:
        """One pass, if this process holds the job's lease; how many conversations ended
        in each outcome.

        Args:
            now: the pass's time (the clock's by default; tests move it forward).

        Raises:
            StoreError: the database failed (the pass stops; the next one resumes).
        """
        lease = self._job_lease
        if lease is not None and not await lease.hold():
            return Counter()
        try:
            return await self._pass(now or self._clock.now())
        finally:
            if lease is not None:
                await lease.let_go()

    async def _pass(self, now: datetime) -> Counter[str]:
        outcomes: Counter[str] = Counter()
        due = await self._fetches.due(
            ended_before=now - self.after,
            ended_after=now - self._horizon,
            now=now,
            limit=self._batch,
        )
        for call_id, conversation_id in due:
            if self._job_lease is not None and not await self._job_lease.hold():
                break  # lost the lease (expired under a slow pass): another process goes on
            with structlog.contextvars.bound_contextvars(call_id=call_id):
                outcome = await self._reconcile(call_id, conversation_id, now)
            if outcome is not None:
                outcomes[outcome] += 1
            if outcome == _REFUSED:
                break
        if outcomes:
            _log.info("postcall_reconcile_pass", **dict(outcomes))
        return outcomes

    async def _reconcile(self, call_id: str, conversation_id: str, now: datetime) -> str | None:
        made = await self._fetches.take(
            conversation_id, call_id, now=now, lease_until=now + self._lease
        )
        if made is None:
            return None  # another process has it this round
        attempt = made + 1
        outcome = await self._fetch_and_apply(conversation_id)
        if outcome == _REFUSED:
            return outcome  # the lease runs out, then the conversation is due again
        retry = outcome in _RETRIED
        give_up = retry and attempt >= self.max_attempts
        delay = timedelta(seconds=min(3600.0, self._retry_s * 2 ** (attempt - 1)))
        await self._fetches.record(
            conversation_id,
            outcome=outcome,
            now=now,
            retry_at=now + delay if retry and not give_up else None,
        )
        self._count(outcome)
        log = _log.bind(conversation_id=conversation_id, outcome=outcome, attempt=attempt)
        if outcome in _NO_DATA and (give_up or not retry):
            if give_up:
                self._count("gave_up")
            log.warning("postcall_unavailable", gave_up=give_up)
            await self._store.add_event(
                CallEvent(
                    call_id=call_id,
                    source="elevenlabs",
                    status="postcall_unavailable",
                    at=self._clock.now(),
                    detail={
                        "conversation_id": conversation_id,
                        "outcome": outcome,
                        "attempts": attempt,
                    },
                )
            )
        else:
            log.info("postcall_reconciled", retry=retry and not give_up)
        return outcome

    async def _fetch_and_apply(self, conversation_id: str) -> str:
        try:
            conversation = await self._history.fetch_conversation(conversation_id)
        except NotFound:
            return "not_found"
        except ProviderError as exc:
            if exc.category in (ErrorCategory.AUTH, ErrorCategory.RATE_LIMIT):
                _log.warning("postcall_reconcile_refused", error=exc.message)
                return _REFUSED
            _log.warning("postcall_fetch_failed", error=exc.message)
            return "error"
        except ProtocolError as exc:
            _log.warning("postcall_fetch_failed", error=exc.message)
            return "error"
        if conversation.status == "done":
            accepted = await self._postcall.accept_fetched(conversation_id, conversation.data)
            return "attached" if accepted else "already"
        if conversation.status == "failed":
            return "failed"
        return "pending" if conversation.status in _PENDING else "error"

    def _count(self, outcome: str) -> None:
        if self._metrics is not None:
            self._metrics.postcall_reconciled.labels(outcome=outcome).inc()

    def start(self) -> None:
        """Run in the background until :meth:`aclose`, surviving every error."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                run_forever(
                    "postcall_reconciler",
                    self.run_once,
                    interval_s=self._interval_s,
                    backoff_cap_s=self._backoff_cap_s,
                    errors=self._metrics,
                ),
                name="callbridge-postcall-reconciler",
            )

    @property
    def running(self) -> bool:
        """Whether the background loop is running."""
        return self._task is not None and not self._task.done()

    async def aclose(self) -> None:
        """Stop the background loop."""
        task, self._task = self._task, None
        await cancel_and_wait(task)
