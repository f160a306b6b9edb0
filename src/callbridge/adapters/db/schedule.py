"""The scheduler's reads and claims on the calls table (call me later, issue 15).

A scheduled call is a row of ``calls`` in status ``scheduled`` with ``scheduled_for``
(UTC). Any number of processes may run the scheduler; a due call is claimed once:

* PostgreSQL: ``SELECT … FOR UPDATE SKIP LOCKED`` picks due rows no other pass holds,
  and the same transaction moves them on (``requested`` to place, ``missed`` when past
  the grace window), so a second pass never sees them.
* SQLite: one writer at a time, and no ``SKIP LOCKED``; each candidate is claimed by a
  conditional ``UPDATE … WHERE id = ? AND status = 'scheduled'`` whose row count
  decides which pass won.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, bindparam, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased

from callbridge.adapters.db.models import CallRow, SpendLedgerRow
from callbridge.adapters.db.spend_ledger import day_date
from callbridge.adapters.db.store import SqlCallStore, _to_call, utc_aware
from callbridge.adapters.db.transaction import connection, transaction
from callbridge.domain.call import Call, CallStatus
from callbridge.ports import Claimed, Pending, SpendHold

#: Why a scheduled call ended without being placed (the visitor's sentence, then the detail).
MISSED_REASON = "We couldn't call at the time you asked: our service was down. Please ask again."
CANCELLED_REASON = "The call was cancelled."


def _retry_wanted(max_attempt: Any, since: Any) -> ColumnElement[bool]:
    """Busy / no-answer calls since ``since`` that asked for a retry, at most
    ``max_attempt`` attempts deep, that have no retry yet (a SQL condition)."""
    child = aliased(CallRow)
    return and_(
        CallRow.retry_on_no_answer.is_(True),
        CallRow.status.in_([CallStatus.BUSY.value, CallStatus.NO_ANSWER.value]),
        CallRow.attempt <= max_attempt,
        func.coalesce(CallRow.ended_at, CallRow.created_at) >= since,
        ~select(child.id).where(child.idempotency_key == "retry:" + CallRow.id).exists(),
    )


def _any_work() -> Select[Any]:
    """Whether a pass has anything to do: one row at most, built once (see has_work)."""
    due = and_(
        CallRow.status == CallStatus.SCHEDULED.value,
        CallRow.scheduled_for <= bindparam("now", type_=CallRow.scheduled_for.type),
    )
    retry = _retry_wanted(
        bindparam("max_attempt"), bindparam("since", type_=CallRow.created_at.type)
    )
    return select(CallRow.id).where(or_(due, retry)).limit(1)


_ANY_WORK = _any_work()


class SqlSchedule:
    """Implements :class:`callbridge.ports.ScheduleBook` on SQLite and PostgreSQL."""

    def __init__(self, store: SqlCallStore) -> None:
        self._store = store
        self._sessions = async_sessionmaker(store.engine, expire_on_commit=False)
        self._postgres = store.engine.dialect.name == "postgresql"

    def _tx(self) -> AbstractAsyncContextManager[AsyncSession]:
        return transaction(self._sessions)

    async def has_work(self, now: datetime, *, retry_since: datetime, max_attempt: int) -> bool:
        """Whether a call is due at ``now`` or a retry is wanted (as :meth:`retry_candidates`
        finds them); ``max_attempt`` 0: retries are not looked for.

        One Core statement built once, on a bare connection: the scheduler's idle pass
        every few seconds. Built afresh through the ORM each time, the two queries of a
        pass cost 30-40 ms of CPU in one step of the loop that pumps the media, with 100
        calls up (issue 12: code this rare runs cold).
        """
        params = {"now": now, "since": retry_since, "max_attempt": max_attempt}
        async with connection(self._store.engine) as conn:
            return (await conn.execute(_ANY_WORK, params)).first() is not None

    async def claim_due(self, now: datetime, *, grace: timedelta, limit: int = 50) -> Claimed:
        """Claim the scheduled calls due at ``now``: those within ``grace`` of their time
        become ``requested`` (to be placed by the caller), older ones ``missed``."""
        due = (
            select(CallRow)
            .where(
                CallRow.status == CallStatus.SCHEDULED.value,
                CallRow.scheduled_for <= now,
            )
            .order_by(CallRow.scheduled_for)
            .limit(limit)
        )
        claimed = Claimed()
        if self._postgres:
            async with self._tx() as session:
                rows = (await session.execute(due.with_for_update(skip_locked=True))).scalars()
                for row in rows:
                    self._move(row, now, grace)
                    (claimed.to_place if row.status == "requested" else claimed.missed).append(
                        _to_call(row)
                    )
            return claimed
        async with self._tx() as session:
            candidates = list((await session.execute(due)).scalars())
        for row in candidates:
            assert row.scheduled_for is not None
            late = utc_aware(row.scheduled_for) < now - grace
            values = _missed_values(now) if late else {"status": CallStatus.REQUESTED.value}
            async with self._tx() as session:
                result = await session.execute(
                    update(CallRow)
                    .where(CallRow.id == row.id, CallRow.status == CallStatus.SCHEDULED.value)
                    .values(**values)
                )
                won = getattr(result, "rowcount", 0) == 1
            if won:
                call = await self._store.get_call(row.id)
                assert call is not None
                (claimed.missed if late else claimed.to_place).append(call)
        return claimed

    @staticmethod
    def _move(row: CallRow, now: datetime, grace: timedelta) -> None:
        assert row.scheduled_for is not None
        if utc_aware(row.scheduled_for) < now - grace:
            for name, value in _missed_values(now).items():
                setattr(row, name, value)
        else:
            row.status = CallStatus.REQUESTED.value

    async def pending(self, e164: str, requester_hash: str | None) -> Pending:
        """How many scheduled calls wait for ``e164``, and from ``requester_hash``."""
        waiting = CallRow.status == CallStatus.SCHEDULED.value
        async with self._tx() as session:
            for_number = (
                await session.execute(
                    select(func.count()).where(waiting, CallRow.to_number == e164)
                )
            ).scalar_one()
            from_requester = 0
            if requester_hash is not None:
                from_requester = (
                    await session.execute(
                        select(func.count()).where(
                            waiting,
                            CallRow.client_ip_hash == requester_hash,
                            CallRow.retry_of.is_(None),
                        )
                    )
                ).scalar_one()
        return Pending(for_number=int(for_number), from_requester=int(from_requester))

    async def cancel(self, call_id: str, now: datetime) -> list[Call]:
        """Cancel ``call_id`` and its retries while they are still scheduled.

        Returns:
            The calls this cancelled (empty when none was still scheduled).
        """
        async with self._tx() as session:
            ids = list(
                (
                    await session.execute(
                        select(CallRow.id).where(
                            CallRow.status == CallStatus.SCHEDULED.value,
                            (CallRow.id == call_id) | (CallRow.retry_of == call_id),
                        )
                    )
                ).scalars()
            )
        cancelled = []
        for one in ids:
            async with self._tx() as session:
                result = await session.execute(
                    update(CallRow)
                    .where(CallRow.id == one, CallRow.status == CallStatus.SCHEDULED.value)
                    .values(
                        status=CallStatus.CANCELED.value,
                        failure_code="cancelled",
                        failure_reason=CANCELLED_REASON,
                        ended_at=now,
                    )
                )
                won = getattr(result, "rowcount", 0) == 1
            if won:
                call = await self._store.get_call(one)
                assert call is not None
                cancelled.append(call)
        return cancelled

    async def retry_candidates(self, since: datetime, *, max_attempt: int) -> Sequence[Call]:
        """Busy / no-answer calls since ``since`` whose visitor asked for a retry, at most
        ``max_attempt`` attempts deep, that have no retry yet."""
        stmt = (
            select(CallRow)
            .where(_retry_wanted(max_attempt, since))
            .order_by(CallRow.created_at)
            .limit(100)
        )
        async with self._tx() as session:
            return [_to_call(r) for r in (await session.execute(stmt)).scalars()]

    async def hold_spend(self, call_id: str, spend: SpendHold, at: datetime) -> None:
        """Write a claimed call's spend ledger line, unless it has one."""
        try:
            async with self._tx() as session:
                session.add(
                    SpendLedgerRow(
                        call_id=call_id,
                        day=day_date(spend.day),
                        country_code=spend.country_code,
                        reserved_micros=spend.reserved_micros,
                        updated_at=at,
                    )
                )
        except IntegrityError:
            return  # written by an earlier attempt

    async def no_retry(self, call_id: str) -> None:
        """Take back a call's retry wish (the callee declined): it is never tried again."""
        async with self._tx() as session:
            await session.execute(
                update(CallRow).where(CallRow.id == call_id).values(retry_on_no_answer=False)
            )

    async def upcoming(self, until: datetime | None = None, *, limit: int = 200) -> list[Call]:
        """Scheduled calls (due before ``until``, if given), soonest first."""
        stmt = (
            select(CallRow)
            .where(CallRow.status == CallStatus.SCHEDULED.value)
            .order_by(CallRow.scheduled_for)
            .limit(limit)
        )
        if until is not None:
            stmt = stmt.where(CallRow.scheduled_for < until)
        async with self._tx() as session:
            return [_to_call(r) for r in (await session.execute(stmt)).scalars()]


def _missed_values(now: datetime) -> dict[str, object]:
    return {
        "status": CallStatus.MISSED.value,
        "failure_code": "missed",
        "failure_reason": f"{MISSED_REASON} (not placed within the grace window)",
        "ended_at": now,
    }
