"""Call requests the abuse policy refused, kept so the operator's overview can count them.

The Prometheus counter ``callbridge_policy_refusals_total`` only knows the running
process since it started; this table keeps every refusal (its reason, when, and the
number as a keyed hash when there was a valid number), so the overview can count them
over days and :meth:`~callbridge.adapters.db.queries.OperatorQueries.forget` can remove
a number's traces. Migration ``0002_refusals`` creates it.
"""

from __future__ import annotations

from datetime import UTC, datetime

import structlog
from sqlalchemy import DateTime, Integer, String, func, select
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from callbridge.adapters.db.models import Base
from callbridge.adapters.db.transaction import database_errors, transaction
from callbridge.errors import StoreError

_log = structlog.get_logger(__name__)


class RefusalRow(Base):
    """One refused call request."""

    __tablename__ = "policy_refusals"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    reason: Mapped[str] = mapped_column(String(40))
    number_hash: Mapped[str | None] = mapped_column(String(64), index=True)


class RefusalLog:
    """Writes and counts :class:`RefusalRow` rows."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)

    async def record_refusal(
        self, reason: str, *, number_hash: str | None = None, at: datetime | None = None
    ) -> bool:
        """Keep one refusal; a database failure is logged and never refuses twice.

        Args:
            reason: the :class:`~callbridge.errors.PolicyRejected` reason
                (``country``, ``quiet_hours``, ``per_number_hourly``, …).
            number_hash: the number as a keyed hash (``domain.policy.hashed``), if any.
            at: when (now by default).

        Returns:
            Whether the row was written.
        """
        row = RefusalRow(at=at or datetime.now(UTC), reason=reason[:40], number_hash=number_hash)
        try:
            async with transaction(self._sessions) as session:
                session.add(row)
        except StoreError as exc:
            _log.warning("refusal_not_recorded", reason=reason, error=type(exc).__name__)
            return False
        return True

    async def counts_since(self, since: datetime) -> dict[str, int]:
        """Refusals by reason since ``since``, most frequent first.

        Raises:
            StoreError: the database failed (:class:`~callbridge.errors.Unavailable`
                when it could not be reached).
        """
        stmt = (
            select(RefusalRow.reason, func.count())
            .where(RefusalRow.at >= since)
            .group_by(RefusalRow.reason)
        )
        with database_errors():
            async with self._sessions() as session:
                rows = (await session.execute(stmt)).all()
        return dict(sorted(((r, int(n)) for r, n in rows), key=lambda p: (-p[1], p[0])))
