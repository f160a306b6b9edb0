"""The ElevenLabs post-call webhook: verify, acknowledge, then attach the results to the call.

security.md 41 and protocols.md §4.10. :meth:`PostCallService.receive` runs on the
request and does only what must happen before the 200:

1. refuse everything when no webhook secret is configured (fail closed);
2. verify ``ElevenLabs-Signature`` on the raw body (HMAC-SHA256, 30 min tolerance)
   *before* parsing anything; a bad, missing or stale signature writes nothing;
3. parse the envelope strictly enough to know its type and ``conversation_id``;
4. claim the conversation id in the database (its primary key), so a duplicate
   delivery — in any process — is acknowledged and never processed again.

The rest (finding the call, storing the analysis and the transcript) runs in a
background task owned by :class:`PostCallService` — tracked in a set, awaited by
:meth:`PostCallService.aclose`, never a bare ``create_task`` — so the answer is
sent in milliseconds whatever the database is doing. A claim whose processing
fails is released, so ElevenLabs' retry is processed.

A conversation fetched from the Conversations API when its webhook never came
(security.md F.42, :mod:`callbridge.services.postcall_reconcile`) goes through
:meth:`PostCallService.accept_fetched`: the same claim, then the same processing, so
whichever of the webhook and the fetch comes first is processed and the other is not.

Transcripts are personal data: only calls we placed keep one (web-chat
conversations of the same agent are acknowledged and dropped), and no transcript
text is ever logged.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import orjson
import structlog

from callbridge.adapters.elevenlabs.webhook_signature import verify
from callbridge.errors import StoreError, ValidationFailed, WebhookRejected
from callbridge.ports import CallEvent, CallStore, Clock, StatusUpdate, TranscriptTurn

_log = structlog.get_logger(__name__)

#: How old an ``ElevenLabs-Signature`` timestamp may be (``ELEVENLABS_TOLERANCE``).
TOLERANCE_S = 30 * 60
TRANSCRIPTION = "post_call_transcription"
#: The claim's ``event_type`` when the conversation was fetched instead of delivered.
FETCHED = "conversation_fetch"
_MAX_ID = 200
_MAX_TURNS = 2000


class PostCallRecords(Protocol):
    """One record per conversation id (see :mod:`callbridge.adapters.db.postcall`)."""

    async def claim(self, conversation_id: str, event_type: str, now: datetime) -> bool:
        """Record a delivery; True only for the first one of a conversation."""
        ...

    async def release(self, conversation_id: str) -> None:
        """Forget an unprocessed claim."""
        ...

    async def finish(
        self, conversation_id: str, *, call_id: str | None, transcript: str | None, now: datetime
    ) -> None:
        """Mark the delivery processed."""
        ...

    async def find_call(self, conversation_id: str, call_id_hint: str | None) -> str | None:
        """The call the conversation belongs to."""
        ...


@dataclass(frozen=True, slots=True)
class PostCallJob:
    """A verified, claimed delivery, waiting to be processed."""

    conversation_id: str
    event_type: str
    data: Mapping[str, Any]


class PostCallService:
    """Receives post-call webhooks and attaches their results to calls.

    Args:
        secret: the webhook's shared secret; None refuses every delivery.
        calls: the call store.
        records: the per-conversation records.
        clock: the clock (timestamps of records and events).
        wall_time: unix seconds, for the signature's tolerance.
        tolerance_s: how old a signature may be.
    """

    def __init__(
        self,
        *,
        secret: str | None,
        calls: CallStore,
        records: PostCallRecords,
        clock: Clock,
        wall_time: Callable[[], float] = time.time,
        tolerance_s: int = TOLERANCE_S,
    ) -> None:
        self._secret = secret or None
        self._calls = calls
        self._records = records
        self._clock = clock
        self._wall_time = wall_time
        self._tolerance_s = tolerance_s
        self._tasks: set[asyncio.Task[None]] = set()
        self.processed = 0

    @property
    def configured(self) -> bool:
        """Whether a webhook secret is set (otherwise every delivery is refused)."""
        return self._secret is not None

    def ensure_configured(self) -> None:
        """Refuse before reading the body when there is no secret.

        Raises:
            WebhookRejected: 403, ``webhook_not_configured``.
        """
        if self._secret is None:
            raise WebhookRejected(
                "Post-call webhooks are refused: ELEVENLABS_WEBHOOK_SECRET is not configured.",
                code="webhook_not_configured",
            )

    async def receive(self, body: bytes, signature: str | None) -> PostCallJob | None:
        """Verify and claim a delivery; the job to process, or None if there is none.

        Raises:
            WebhookRejected: no secret configured; missing, bad or stale signature.
            ValidationFailed: a correctly signed body that is not a webhook envelope.
        """
        self.ensure_configured()
        assert self._secret is not None
        verify(body, signature, self._secret, self._wall_time(), self._tolerance_s)
        event_type, conversation_id, data = _envelope(body)
        if event_type != TRANSCRIPTION:
            # Audio and initiation-failure deliveries carry nothing we keep.
            _log.info("postcall_ignored", event_type=event_type)
            return None
        if not await self._records.claim(conversation_id, event_type, self._clock.now()):
            _log.info("postcall_duplicate", conversation_id=conversation_id)
            return None
        return PostCallJob(conversation_id, event_type, data)

    async def accept_fetched(self, conversation_id: str, data: Mapping[str, Any]) -> bool:
        """Claim and process a conversation fetched from the Conversations API, now.

        ``data`` has the webhook ``data`` object's shape. The claim is the webhook's
        (the conversation id is its record's primary key), so a conversation already
        delivered, or fetched by another process, is not processed again.

        Returns:
            True if this call processed it; False if it was already claimed.

        Raises:
            StoreError: the database failed (the claim is released first).
        """
        if not await self._records.claim(conversation_id, FETCHED, self._clock.now()):
            return False
        try:
            await self.process(PostCallJob(conversation_id, FETCHED, data))
        except StoreError:
            try:
                await self._records.release(conversation_id)
            except StoreError:
                pass
            raise
        return True

    def submit(self, job: PostCallJob) -> None:
        """Process ``job`` in a tracked background task."""
        self._spawn(self._process_safely(job))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self, grace_s: float = 10.0) -> None:
        """Wait for the deliveries being processed (tests, shutdown)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=grace_s)

    async def aclose(self, grace_s: float = 10.0) -> None:
        """Finish (or, after ``grace_s``, cancel) the deliveries being processed."""
        await self.drain(grace_s)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _process_safely(self, job: PostCallJob) -> None:
        try:
            await self.process(job)
        except StoreError as exc:
            _log.error("postcall_failed", conversation_id=job.conversation_id, error=exc.message)
            try:
                await self._records.release(job.conversation_id)
            except StoreError:
                pass

    async def process(self, job: PostCallJob) -> None:
        """Attach the conversation's analysis and transcript to its call.

        Raises:
            StoreError: the database failed (the claim is released by the caller).
        """
        data = job.data
        hint = _call_id_hint(data)
        call_id = await self._records.find_call(job.conversation_id, hint)
        now = self._clock.now()
        if call_id is None:
            # Not one of our phone calls (e.g. the web chat): keep nothing of it.
            await self._records.finish(job.conversation_id, call_id=None, transcript=None, now=now)
            _log.info("postcall_unmatched", conversation_id=job.conversation_id)
            self.processed += 1
            return
        transcript = _transcript(data)
        await self._calls.update_call(call_id, StatusUpdate(analysis=_analysis_json(data)))
        if transcript and not await self._calls.turns(call_id):
            await self._add_turns(call_id, transcript, data)
        await self._records.finish(
            job.conversation_id,
            call_id=call_id,
            transcript=json.dumps(transcript) if transcript else None,
            now=now,
        )
        await self._calls.add_event(
            CallEvent(
                call_id=call_id,
                source="elevenlabs",
                status="postcall_received",
                at=now,
                detail={
                    "conversation_id": job.conversation_id,
                    "turns": len(transcript),
                    "via": job.event_type,
                },
            )
        )
        self.processed += 1
        _log.info("postcall_attached", call_id=call_id, turns=len(transcript))

    async def _add_turns(
        self, call_id: str, transcript: list[dict[str, Any]], data: Mapping[str, Any]
    ) -> None:
        metadata = data.get("metadata")
        start = metadata.get("start_time_unix_secs") if isinstance(metadata, dict) else None
        base = (
            datetime.fromtimestamp(start, UTC)
            if isinstance(start, int | float) and 0 < start < 2**33
            else self._clock.now()
        )
        for turn in transcript:
            offset = turn.get("time_in_call_secs")
            at = base + timedelta(seconds=offset if isinstance(offset, int | float) else 0)
            await self._calls.add_turn(
                TranscriptTurn(call_id=call_id, role=turn["role"], text=turn["message"], at=at)
            )


def _envelope(body: bytes) -> tuple[str, str, Mapping[str, Any]]:
    try:
        envelope = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ValidationFailed("The webhook body must be JSON.") from None
    if not isinstance(envelope, dict) or not isinstance(envelope.get("type"), str):
        raise ValidationFailed("The webhook body has no type.")
    data = envelope.get("data")
    if not isinstance(data, dict):
        raise ValidationFailed("The webhook body has no data object.")
    conversation_id = data.get("conversation_id")
    if not isinstance(conversation_id, str) or not 0 < len(conversation_id) <= _MAX_ID:
        raise ValidationFailed("The webhook names no conversation_id.")
    return str(envelope["type"])[:40], conversation_id, data


def _call_id_hint(data: Mapping[str, Any]) -> str | None:
    init = data.get("conversation_initiation_client_data")
    variables = init.get("dynamic_variables") if isinstance(init, dict) else None
    value = variables.get("call_id") if isinstance(variables, dict) else None
    return value if isinstance(value, str) and 0 < len(value) <= 40 else None


def _transcript(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    turns = data.get("transcript")
    if not isinstance(turns, list):
        return []
    kept: list[dict[str, Any]] = []
    for turn in turns[:_MAX_TURNS]:
        if not isinstance(turn, dict):
            continue
        role, message = turn.get("role"), turn.get("message")
        if role in ("agent", "user") and isinstance(message, str) and message:
            offset = turn.get("time_in_call_secs")
            kept.append(
                {
                    "role": role,
                    "message": message,
                    "time_in_call_secs": offset if isinstance(offset, int | float) else None,
                }
            )
    return kept


def _analysis_json(data: Mapping[str, Any]) -> str:
    metadata = data.get("metadata") if isinstance(data.get("metadata"), dict) else {}
    assert isinstance(metadata, dict)
    kept = {
        "conversation_id": data.get("conversation_id"),
        "status": data.get("status"),
        "analysis": data.get("analysis") if isinstance(data.get("analysis"), dict) else None,
        "metadata": {
            name: metadata.get(name)
            for name in ("call_duration_secs", "termination_reason", "cost", "start_time_unix_secs")
            if name in metadata
        },
    }
    return json.dumps(kept, sort_keys=True)
