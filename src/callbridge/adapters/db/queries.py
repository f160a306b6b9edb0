"""The operator's reads and deletions: call lists, one call in full, overview numbers.

Writes on the call path live in :mod:`callbridge.adapters.db.store`; this module is
what ``/admin``, the admin API and the operator's CLI commands read, plus the two
deletions the operator promises (security.md F.46):

- :meth:`OperatorQueries.forget` removes one number's calls, timelines, transcripts
  and refusals (and its do-not-call row only when asked: keeping it is what keeps
  the promise "never call me again");
- :meth:`OperatorQueries.purge_older_than` clears transcripts (the bridge's turns and
  the post-call webhook's copy), web-chat context and post-call analysis of calls
  older than N days, keeping each call's row (status,
  duration, price) so the overview's numbers stay true.
"""

from __future__ import annotations

import re
import statistics
from collections import Counter
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation

from sqlalchemy import ColumnElement, and_, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from callbridge.adapters.db.do_not_call import (
    DoNotCallChange,
    DoNotCallEntry,
    SqlDoNotCallList,
)
from callbridge.adapters.db.models import (
    CallRow,
    DoNotCallAuditRow,
    DoNotCallRow,
    EventRow,
    TurnRow,
)
from callbridge.adapters.db.postcall import PostCallRow
from callbridge.adapters.db.refusals import RefusalLog, RefusalRow
from callbridge.adapters.db.store import SqlCallStore, _to_call, utc_aware
from callbridge.adapters.db.transaction import transaction
from callbridge.domain.call import (
    CONSENT_NOT_GIVEN,
    NO_CONSENT,
    OPTED_OUT,
    TERMINAL,
    Call,
    CallStatus,
    outcome_of,
)
from callbridge.ports import CallEvent, TranscriptTurn

_LIVE = tuple(s.value for s in CallStatus if s not in TERMINAL and s is not CallStatus.SCHEDULED)
_DIGITS = re.compile(r"\D")


@dataclass(frozen=True, slots=True)
class CallFilter:
    """Which calls to list (every field optional).

    Attributes:
        status: one :class:`~callbridge.domain.call.CallStatus` value, or an outcome
            (``opted_out``, ``no_consent``): ``completed`` then means completed calls
            whose callee did not opt out or withhold consent, as the list shows them.
        since: calls created at or after this instant.
        until: calls created before this instant.
        number: a full number (``+12345678900``, spaces allowed) matches exactly;
            fewer digits (``8900``) match the end of the number.
        limit: at most this many calls, newest first.
    """

    status: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    number: str | None = None
    limit: int = 100


@dataclass(frozen=True, slots=True)
class CallDetail:
    """A call with its timeline and transcript, oldest first."""

    call: Call
    events: Sequence[CallEvent]
    turns: Sequence[TranscriptTurn]


@dataclass(frozen=True, slots=True)
class DayCount:
    """Calls created on one (UTC) day."""

    day: date
    total: int
    answered: int


@dataclass(frozen=True, slots=True)
class Overview:
    """The numbers of the overview page, over the last ``len(days)`` days.

    ``answer_rate`` is answered calls over ended calls that Twilio dialled; times are
    seconds; spend is the absolute sum of Twilio's (negative) ``price`` values.
    """

    since: datetime
    days: Sequence[DayCount]
    total: int
    answered: int
    answer_rate: float | None
    median_time_to_answer_s: float | None
    avg_duration_s: float | None
    spend_today: Decimal
    spend_month: Decimal
    price_unit: str | None
    statuses: dict[str, int] = field(default_factory=dict)
    refusals: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ForgetResult:
    """What :meth:`OperatorQueries.forget` removed."""

    calls: int = 0
    events: int = 0
    turns: int = 0
    refusals: int = 0
    do_not_call: int = 0


@dataclass(frozen=True, slots=True)
class PurgeResult:
    """What :meth:`OperatorQueries.purge_older_than` cleared."""

    cutoff: datetime
    calls: int = 0
    turns: int = 0


def normalise_number(raw: str) -> str:
    """``"+1 (234) 567-8900"`` → ``"+12345678900"``; digits alone stay digits alone."""
    digits = _DIGITS.sub("", raw)
    return ("+" + digits) if raw.strip().startswith("+") else digits


def status_clause(status: str) -> ColumnElement[bool]:
    """Calls whose operator-facing status (:func:`~callbridge.domain.call.outcome_of`)
    is ``status``."""
    completed = CallRow.status == CallStatus.COMPLETED.value
    if status == OPTED_OUT:
        return and_(completed, CallRow.consent == "opted_out")
    if status == NO_CONSENT:
        return and_(completed, CallRow.consent.in_(sorted(CONSENT_NOT_GIVEN)))
    if status == CallStatus.COMPLETED.value:
        not_given = ["opted_out", *sorted(CONSENT_NOT_GIVEN)]
        return and_(completed, or_(CallRow.consent.is_(None), CallRow.consent.not_in(not_given)))
    return CallRow.status == status


def _price(raw: str | None) -> Decimal:
    if not raw:
        return Decimal(0)
    try:
        return abs(Decimal(raw))
    except InvalidOperation:
        return Decimal(0)


def _rowcount(result: object) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


class OperatorQueries:
    """Reads and deletions for the operator, over the same engine as the call store."""

    def __init__(self, store: SqlCallStore, refusals: RefusalLog | None = None) -> None:
        self._store = store
        self._refusals = refusals or RefusalLog(store.engine)
        self._sessions = async_sessionmaker(store.engine, expire_on_commit=False)
        self._dnc = SqlDoNotCallList(store.engine)

    def _tx(self) -> AbstractAsyncContextManager[AsyncSession]:
        return transaction(self._sessions)

    # Reads ------------------------------------------------------------------------------

    async def list_calls(self, flt: CallFilter) -> list[Call]:
        """Calls matching ``flt``, newest first."""
        stmt = select(CallRow).order_by(CallRow.created_at.desc(), CallRow.id.desc())
        if flt.status:
            stmt = stmt.where(status_clause(flt.status))
        if flt.since:
            stmt = stmt.where(CallRow.created_at >= flt.since)
        if flt.until:
            stmt = stmt.where(CallRow.created_at < flt.until)
        if flt.number:
            wanted = normalise_number(flt.number)
            if wanted.startswith("+"):
                stmt = stmt.where(CallRow.to_number == wanted)
            elif wanted:
                stmt = stmt.where(CallRow.to_number.like(f"%{wanted}"))
        stmt = stmt.limit(max(1, min(flt.limit, 1000)))
        async with self._tx() as session:
            return [_to_call(r) for r in (await session.execute(stmt)).scalars()]

    async def ids_starting(self, prefix: str, *, limit: int = 10) -> list[str]:
        """Ids of calls that start with ``prefix`` (at most ``limit``), oldest first."""
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        stmt = (
            select(CallRow.id)
            .where(CallRow.id.like(escaped + "%", escape="\\"))
            .order_by(CallRow.created_at, CallRow.id)
            .limit(limit)
        )
        async with self._tx() as session:
            return list((await session.execute(stmt)).scalars())

    async def call_detail(self, call_id: str) -> CallDetail | None:
        """One call with its timeline and transcript, or None."""
        call = await self._store.get_call(call_id)
        if call is None:
            return None
        return CallDetail(
            call=call,
            events=await self._store.events(call_id),
            turns=await self._store.turns(call_id),
        )

    async def live_calls(self, *, since: datetime) -> list[Call]:
        """Calls created since ``since`` that Twilio dialled and that have not ended."""
        stmt = (
            select(CallRow)
            .where(
                CallRow.status.in_(_LIVE),
                CallRow.call_sid.is_not(None),
                # A scheduled call is live from its time, not from when it was asked for.
                func.coalesce(CallRow.scheduled_for, CallRow.created_at) >= since,
            )
            .order_by(CallRow.created_at)
        )
        async with self._tx() as session:
            return [_to_call(r) for r in (await session.execute(stmt)).scalars()]

    async def overview(self, now: datetime, *, days: int = 14) -> Overview:
        """Counts, rates, times and spend over the last ``days`` UTC days (today included)."""
        today = now.astimezone(UTC).date()
        first_day = today - timedelta(days=days - 1)
        month_start = today.replace(day=1)
        since = datetime.combine(min(first_day, month_start), datetime.min.time(), UTC)
        window = datetime.combine(first_day, datetime.min.time(), UTC)
        stmt = select(
            CallRow.created_at,
            CallRow.status,
            CallRow.call_sid,
            CallRow.answered_at,
            CallRow.duration_s,
            CallRow.price,
            CallRow.price_unit,
            CallRow.provider_error_code,
            CallRow.consent,
        ).where(CallRow.created_at >= since)
        async with self._tx() as session:
            rows = (await session.execute(stmt)).all()
        refusals = await self._refusals.counts_since(window)
        per_day: dict[date, list[int]] = {first_day + timedelta(d): [0, 0] for d in range(days)}
        statuses: Counter[str] = Counter()
        twilio_refusals: Counter[str] = Counter()
        waits: list[float] = []
        durations: list[int] = []
        ended_dialled = answered = total = 0
        spend_today = spend_month = Decimal(0)
        unit: str | None = None
        for (
            created_raw,
            status,
            sid,
            answered_raw,
            duration,
            price,
            price_unit,
            pcode,
            consent,
        ) in rows:
            created = utc_aware(created_raw)
            answered_at = utc_aware(answered_raw)
            assert created is not None
            day = created.astimezone(UTC).date()
            cost = _price(price)
            if day >= month_start:
                spend_month += cost
            if day == today:
                spend_today += cost
            unit = unit or price_unit
            if created < window:
                continue
            total += 1
            # How calls ended, as the list shows it: opted_out and no_consent apart.
            known = status in CallStatus._value2member_map_
            statuses[outcome_of(CallStatus(status), consent) if known else status] += 1
            per_day[day][0] += 1
            if pcode is not None:
                twilio_refusals[f"twilio_{pcode}"] += 1
            if answered_at is not None:
                answered += 1
                per_day[day][1] += 1
                waits.append((answered_at - created).total_seconds())
            if sid is not None and status not in _LIVE:
                ended_dialled += 1
            if duration is not None and answered_at is not None:
                durations.append(duration)
        for reason, n in twilio_refusals.items():
            refusals[reason] = refusals.get(reason, 0) + n
        return Overview(
            since=window,
            days=[DayCount(d, t, a) for d, (t, a) in sorted(per_day.items())],
            total=total,
            answered=answered,
            answer_rate=(answered / ended_dialled) if ended_dialled else None,
            median_time_to_answer_s=statistics.median(waits) if waits else None,
            avg_duration_s=(sum(durations) / len(durations)) if durations else None,
            spend_today=spend_today,
            spend_month=spend_month,
            price_unit=unit,
            statuses=dict(statuses.most_common()),
            refusals=dict(sorted(refusals.items(), key=lambda p: (-p[1], p[0]))),
        )

    async def do_not_call(self) -> Sequence[DoNotCallEntry]:
        """The do-not-call list, newest first (numbers masked: only hashes are stored)."""
        return await self._dnc.entries()

    async def do_not_call_changes(self, *, limit: int = 50) -> Sequence[DoNotCallChange]:
        """People's changes to the do-not-call list, newest first."""
        return await self._dnc.changes(limit=limit)

    async def change_do_not_call(self, action: str, number_hash: str, masked: str, by: str) -> bool:
        """Add or remove a number for a person, audited (see :class:`SqlDoNotCallList`)."""
        return await self._dnc.change_by_person(action, number_hash, masked, by)

    # Deletions --------------------------------------------------------------------------

    async def forget(
        self, number_e164: str, *, number_hash: str | None = None, include_dnc: bool = False
    ) -> ForgetResult:
        """Delete every call of a number with its timeline and transcript, in one transaction.

        Args:
            number_e164: the number, as stored (E.164).
            number_hash: its keyed hash (``domain.policy.hashed``); when given, the
                number's refusals go too, and its do-not-call row if ``include_dnc``.
            include_dnc: also take the number off the do-not-call list.
        """
        ids = select(CallRow.id).where(CallRow.to_number == number_e164).scalar_subquery()
        async with self._tx() as session:
            await session.execute(delete(PostCallRow).where(PostCallRow.call_id.in_(ids)))
            events = await session.execute(delete(EventRow).where(EventRow.call_id.in_(ids)))
            turns = await session.execute(delete(TurnRow).where(TurnRow.call_id.in_(ids)))
            calls = await session.execute(delete(CallRow).where(CallRow.to_number == number_e164))
            refusals = dnc = None
            if number_hash is not None:
                refusals = await session.execute(
                    delete(RefusalRow).where(RefusalRow.number_hash == number_hash)
                )
                await session.execute(
                    delete(DoNotCallAuditRow).where(DoNotCallAuditRow.number_hash == number_hash)
                )
                if include_dnc:
                    dnc = await session.execute(
                        delete(DoNotCallRow).where(DoNotCallRow.number_hash == number_hash)
                    )
        return ForgetResult(
            calls=_rowcount(calls),
            events=_rowcount(events),
            turns=_rowcount(turns),
            refusals=_rowcount(refusals) if refusals is not None else 0,
            do_not_call=_rowcount(dnc) if dnc is not None else 0,
        )

    async def purge_older_than(self, days: int, *, now: datetime) -> PurgeResult:
        """Clear transcripts, chat context and analysis of calls created ``days`` ago or more.

        The call rows stay (status, times, duration, price, answered-by, failure), and so
        do their status timelines, which hold no words of the conversation.
        """
        cutoff = now - timedelta(days=days)
        old = CallRow.created_at < cutoff
        has_text = or_(
            CallRow.context_name.is_not(None),
            CallRow.context_reason.is_not(None),
            CallRow.context_summary.is_not(None),
            CallRow.context_conversation_id.is_not(None),
            CallRow.analysis.is_not(None),
            CallRow.response_json.is_not(None),
        )
        old_ids = select(CallRow.id).where(old).scalar_subquery()
        async with self._tx() as session:
            with_turns = (
                await session.execute(
                    select(func.count(func.distinct(TurnRow.call_id))).where(
                        TurnRow.call_id.in_(old_ids)
                    )
                )
            ).scalar_one()
            turns = await session.execute(delete(TurnRow).where(TurnRow.call_id.in_(old_ids)))
            await session.execute(
                update(PostCallRow)
                .where(
                    PostCallRow.transcript.is_not(None),
                    or_(
                        PostCallRow.call_id.in_(old_ids),
                        (PostCallRow.call_id.is_(None)) & (PostCallRow.received_at < cutoff),
                    ),
                )
                .values(transcript=None)
            )
            cleared = await session.execute(
                update(CallRow)
                .where(old, has_text)
                .values(
                    context_name=None,
                    context_reason=None,
                    context_summary=None,
                    context_conversation_id=None,
                    analysis=None,
                    response_json=None,
                )
            )
        return PurgeResult(
            cutoff=cutoff,
            calls=max(_rowcount(cleared), int(with_turns)),
            turns=_rowcount(turns),
        )
