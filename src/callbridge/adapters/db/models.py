"""SQLAlchemy 2 table definitions (the schema Alembic migrates to)."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    """Declarative base of callbridge's tables."""


class CallRow(Base):
    """One call: who, why, what happened."""

    __tablename__ = "calls"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    call_sid: Mapped[str | None] = mapped_column(String(64), unique=True)
    to_number: Mapped[str] = mapped_column(String(20), index=True)
    dialled_number: Mapped[str] = mapped_column(String(20))
    mode: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(20), index=True)
    failure_code: Mapped[str | None] = mapped_column(String(40))
    failure_reason: Mapped[str | None] = mapped_column(Text)
    provider_error_code: Mapped[int | None] = mapped_column(Integer)
    context_name: Mapped[str | None] = mapped_column(String(200))
    context_reason: Mapped[str | None] = mapped_column(Text)
    context_summary: Mapped[str | None] = mapped_column(Text)
    context_conversation_id: Mapped[str | None] = mapped_column(String(200))
    agent_conversation_id: Mapped[str | None] = mapped_column(String(200), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    answered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    duration_s: Mapped[int | None] = mapped_column(Integer)
    price: Mapped[str | None] = mapped_column(String(20))
    price_unit: Mapped[str | None] = mapped_column(String(8))
    answered_by: Mapped[str | None] = mapped_column(String(40))
    amd_duration_ms: Mapped[int | None] = mapped_column(Integer)
    message_left: Mapped[bool | None] = mapped_column(Boolean)
    stream_sid: Mapped[str | None] = mapped_column(String(64))
    stream_token_hash: Mapped[str] = mapped_column(String(64))
    stream_token_used: Mapped[bool] = mapped_column(Boolean, default=False)
    consent: Mapped[str | None] = mapped_column(String(20))
    analysis: Mapped[str | None] = mapped_column(Text)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    response_json: Mapped[str | None] = mapped_column(Text)
    client_ip_hash: Mapped[str | None] = mapped_column(String(64))
    is_test: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    scheduled_for: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    retry_on_no_answer: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    retry_of: Mapped[str | None] = mapped_column(String(40), index=True)
    attempt: Mapped[int] = mapped_column(Integer, default=1, server_default="1")


class EventRow(Base):
    """One entry of a call's timeline: a status callback, a stream event, a decision."""

    __tablename__ = "call_events"
    __table_args__ = (UniqueConstraint("call_id", "dedupe_key", name="uq_event_once"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    call_id: Mapped[str] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"), index=True)
    source: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(40))
    sequence_number: Mapped[int | None] = mapped_column(Integer)
    dedupe_key: Mapped[str | None] = mapped_column(String(80))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    detail: Mapped[str | None] = mapped_column(Text)


class TurnRow(Base):
    """One transcript turn of the phone conversation."""

    __tablename__ = "transcript_turns"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    call_id: Mapped[str] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(16))
    text: Mapped[str] = mapped_column(Text)
    heard_text: Mapped[str | None] = mapped_column(Text)
    interrupted: Mapped[bool] = mapped_column(Boolean, default=False)
    event_id: Mapped[int | None] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class DoNotCallRow(Base):
    """A number (as a keyed hash) that asked never to be called again."""

    __tablename__ = "do_not_call"

    number_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    masked: Mapped[str] = mapped_column(String(24))
    source: Mapped[str] = mapped_column(String(20))
    added_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class SpendLedgerRow(Base):
    """One call's spend, in µUSD: reserved when recorded, then estimated, then Twilio's price.

    Written with the call's row (one transaction), so a call is never without its line;
    the day's spend counter in the quota store is the sum of these lines' booked amounts
    (:class:`callbridge.domain.spend.LedgerAmounts`) and is rebuilt from them.
    """

    __tablename__ = "spend_ledger"

    call_id: Mapped[str] = mapped_column(
        ForeignKey("calls.id", ondelete="CASCADE"), primary_key=True
    )
    day: Mapped[date] = mapped_column(Date, index=True)
    country_code: Mapped[str] = mapped_column(String(4))
    reserved_micros: Mapped[int] = mapped_column(BigInteger)
    estimated_micros: Mapped[int | None] = mapped_column(BigInteger)
    actual_micros: Mapped[int | None] = mapped_column(BigInteger)
    settled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class DoNotCallAuditRow(Base):
    """One change to the do-not-call list made by a person (who, what, when; the number
    masked, and keyed-hashed so ``forget`` can remove it)."""

    __tablename__ = "do_not_call_audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    action: Mapped[str] = mapped_column(String(10))
    masked: Mapped[str] = mapped_column(String(24))
    number_hash: Mapped[str] = mapped_column(String(64), index=True)
    by: Mapped[str] = mapped_column(String(40))


Index("ix_calls_status_created", CallRow.status, CallRow.created_at)
Index("ix_calls_status_scheduled", CallRow.status, CallRow.scheduled_for)
