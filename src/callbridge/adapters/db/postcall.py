"""Post-call webhook records: one row per ElevenLabs ``conversation_id`` (migration 0003).

The primary key is the conversation id, so a delivery is *claimed* by inserting its
row: a second delivery of the same conversation (a retry, a replay) fails the insert
and is not processed again, in every process sharing the database.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta

from sqlalchemy import DateTime, ForeignKey, String, Text, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from callbridge.adapters.db.models import Base, CallRow
from callbridge.adapters.db.transaction import transaction


class PostCallRow(Base):
    """One post-call webhook delivery, claimed by its conversation id."""

    __tablename__ = "postcall_webhooks"

    conversation_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    event_type: Mapped[str] = mapped_column(String(40))
    call_id: Mapped[str | None] = mapped_column(
        ForeignKey("calls.id", ondelete="CASCADE"), index=True
    )
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    processed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    transcript: Mapped[str | None] = mapped_column(Text)


class SqlPostCallRecords:
    """Implements :class:`callbridge.services.postcall.PostCallRecords` with SQLAlchemy.

    Args:
        engine: the engine of the :class:`~callbridge.adapters.db.store.SqlCallStore`.
        stale_after: how long an unprocessed claim blocks a redelivery (a claim whose
            processing died with its process may be taken over after that).
    """

    def __init__(self, engine: AsyncEngine, *, stale_after: timedelta = timedelta(minutes=5)):
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._stale_after = stale_after

    def _tx(self) -> AbstractAsyncContextManager[AsyncSession]:
        return transaction(self._sessions)

    async def claim(self, conversation_id: str, event_type: str, now: datetime) -> bool:
        """Insert the conversation's row; True only for the first delivery.

        An unprocessed claim older than ``stale_after`` is taken over (True).

        Raises:
            StoreError: the database failed.
        """
        try:
            async with self._tx() as session:
                session.add(
                    PostCallRow(
                        conversation_id=conversation_id, event_type=event_type, received_at=now
                    )
                )
            return True
        except IntegrityError:
            pass
        async with self._tx() as session:
            result = await session.execute(
                update(PostCallRow)
                .where(
                    PostCallRow.conversation_id == conversation_id,
                    PostCallRow.processed_at.is_(None),
                    PostCallRow.received_at < now - self._stale_after,
                )
                .values(received_at=now)
            )
            return bool(getattr(result, "rowcount", 0) == 1)

    async def release(self, conversation_id: str) -> None:
        """Forget an unprocessed claim, so a redelivery is processed (after a failure)."""
        async with self._tx() as session:
            await session.execute(
                delete(PostCallRow).where(
                    PostCallRow.conversation_id == conversation_id,
                    PostCallRow.processed_at.is_(None),
                )
            )

    async def finish(
        self, conversation_id: str, *, call_id: str | None, transcript: str | None, now: datetime
    ) -> None:
        """Mark the delivery processed, linked to its call (and holding its transcript)."""
        async with self._tx() as session:
            await session.execute(
                update(PostCallRow)
                .where(PostCallRow.conversation_id == conversation_id)
                .values(call_id=call_id, transcript=transcript, processed_at=now)
            )

    async def find_call(self, conversation_id: str, call_id_hint: str | None) -> str | None:
        """The id of the call this conversation belongs to, or None.

        The call whose ``agent_conversation_id`` is ``conversation_id`` wins. Failing
        that, the ``call_id`` the bridge passed as a dynamic variable is used only if
        that call has no agent conversation recorded yet; it is then bound to this
        conversation, so no second conversation can claim the same call.
        """
        async with self._tx() as session:
            found = (
                await session.execute(
                    select(CallRow.id).where(CallRow.agent_conversation_id == conversation_id)
                )
            ).scalar_one_or_none()
            if found is not None:
                return found
            if not call_id_hint:
                return None
            result = await session.execute(
                update(CallRow)
                .where(CallRow.id == call_id_hint, CallRow.agent_conversation_id.is_(None))
                .values(agent_conversation_id=conversation_id)
            )
            return call_id_hint if getattr(result, "rowcount", 0) == 1 else None
