"""The post-call reconciler's bookkeeping: one row per conversation it fetched (migration 0004).

A row records how often a conversation was fetched, what the last fetch found and
when the next one is due; ``settled_at`` ends the attempts. Taking a conversation
moves ``next_attempt_at`` forward in one conditional statement (or inserts the row,
whose primary key is the conversation id), so of several processes sharing the
database exactly one fetches a due conversation in a given round.

The conversation's *processing* stays guarded by the post-call record of
:mod:`callbridge.adapters.db.postcall`, the same claim the webhook takes.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, Integer, String, and_, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from callbridge.adapters.db.models import Base, CallRow
from callbridge.adapters.db.postcall import PostCallRow
from callbridge.adapters.db.transaction import transaction


class PostCallFetchRow(Base):
    """The reconciler's attempts at one conversation."""

    __tablename__ = "postcall_fetches"

    conversation_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    call_id: Mapped[str] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    outcome: Mapped[str | None] = mapped_column(String(20))
    settled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class SqlPostCallFetches:
    """Implements :class:`callbridge.services.postcall_reconcile.PostCallFetches`.

    Args:
        engine: the engine of the :class:`~callbridge.adapters.db.store.SqlCallStore`.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)

    def _tx(self) -> AbstractAsyncContextManager[AsyncSession]:
        return transaction(self._sessions)

    async def due(
        self, *, ended_before: datetime, ended_after: datetime, now: datetime, limit: int
    ) -> Sequence[tuple[str, str]]:
        """``(call_id, conversation_id)`` of calls that ended in the window, oldest first,
        whose conversation has no processed post-call record and is not settled or
        waiting for a later attempt.

        Raises:
            StoreError: the database failed.
        """
        conversation = CallRow.agent_conversation_id
        stmt = (
            select(CallRow.id, conversation)
            .outerjoin(PostCallRow, PostCallRow.conversation_id == conversation)
            .outerjoin(PostCallFetchRow, PostCallFetchRow.conversation_id == conversation)
            .where(
                conversation.is_not(None),
                CallRow.ended_at.is_not(None),
                CallRow.ended_at < ended_before,
                CallRow.ended_at >= ended_after,
                PostCallRow.processed_at.is_(None),
                or_(
                    PostCallFetchRow.conversation_id.is_(None),
                    and_(
                        PostCallFetchRow.settled_at.is_(None),
                        PostCallFetchRow.next_attempt_at <= now,
                    ),
                ),
            )
            .order_by(CallRow.ended_at)
            .limit(limit)
        )
        async with self._tx() as session:
            return [(str(a), str(b)) for a, b in (await session.execute(stmt)).all()]

    async def take(
        self, conversation_id: str, call_id: str, *, now: datetime, lease_until: datetime
    ) -> int | None:
        """Take a due conversation until ``lease_until``; the attempts made so far, or None
        when it is not due (another process took it, or it is settled).

        Raises:
            StoreError: the database failed.
        """
        try:
            async with self._tx() as session:
                session.add(
                    PostCallFetchRow(
                        conversation_id=conversation_id,
                        call_id=call_id,
                        attempts=0,
                        next_attempt_at=lease_until,
                    )
                )
            return 0
        except IntegrityError:
            pass
        async with self._tx() as session:
            taken = await session.execute(
                update(PostCallFetchRow)
                .where(
                    PostCallFetchRow.conversation_id == conversation_id,
                    PostCallFetchRow.settled_at.is_(None),
                    PostCallFetchRow.next_attempt_at <= now,
                )
                .values(next_attempt_at=lease_until)
                .returning(PostCallFetchRow.attempts)
            )
            attempts = taken.scalar_one_or_none()
        return None if attempts is None else int(attempts)

    async def record(
        self, conversation_id: str, *, outcome: str, now: datetime, retry_at: datetime | None
    ) -> None:
        """Count one attempt and its outcome; try again at ``retry_at``, or never (None).

        Raises:
            StoreError: the database failed.
        """
        async with self._tx() as session:
            await session.execute(
                update(PostCallFetchRow)
                .where(PostCallFetchRow.conversation_id == conversation_id)
                .values(
                    attempts=PostCallFetchRow.attempts + 1,
                    outcome=outcome[:20],
                    next_attempt_at=retry_at or now,
                    settled_at=None if retry_at is not None else now,
                )
            )
