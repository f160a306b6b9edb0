"""Seed a real (SQLite) database with calls of two numbers, old and new, for the operator tests."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import async_sessionmaker

from callbridge.adapters.db.do_not_call import SqlDoNotCallList
from callbridge.adapters.db.migrate import upgrade
from callbridge.adapters.db.models import CallRow, DoNotCallRow, EventRow, TurnRow
from callbridge.adapters.db.postcall import PostCallRow
from callbridge.adapters.db.refusals import RefusalLog, RefusalRow
from callbridge.adapters.db.store import SqlCallStore, make_engine
from callbridge.domain.call import CallStatus
from callbridge.domain.quotas import hashed
from callbridge.ports import CallEvent, StatusUpdate, TranscriptTurn
from tests.support.calls import new_call

KEY = b"k" * 32
ALICE = "+12025550143"
BOB = "+12025550177"
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


@dataclass
class Seeded:
    """The store and the ids of the seeded calls."""

    store: SqlCallStore
    url: str
    alice_old: str = "call_alice_old"
    alice_new: str = "call_alice_new"
    bob_old: str = "call_bob_old"
    bob_new: str = "call_bob_new"


async def _call(store: SqlCallStore, call_id: str, number: str, created: datetime) -> None:
    await store.add_call(
        new_call(
            call_id,
            number,
            context_name="Visitor " + call_id,
            context_reason="a reason",
            context_summary="the chat so far",
            context_conversation_id="conv_" + call_id,
            stream_token_hash="h" * 64,
            created_at=created,
        )
    )
    await store.update_call(
        call_id,
        StatusUpdate(
            status=CallStatus.COMPLETED,
            call_sid="CA" + call_id,
            answered_at=created + timedelta(seconds=6),
            ended_at=created + timedelta(seconds=66),
            duration_s=60,
            price="-0.0130",
            price_unit="USD",
            answered_by="human",
            analysis='{"call_successful": "success", "transcript_summary": "They talked."}',
        ),
    )
    for i, status in enumerate(("requested", "ringing", "in-progress", "completed")):
        await store.add_event(
            CallEvent(
                call_id=call_id,
                source="twilio",
                status=status,
                at=created + timedelta(seconds=i),
                sequence_number=i,
            )
        )
    await store.add_turn(
        TranscriptTurn(
            call_id=call_id,
            role="agent",
            text="Hello there, how can I help?",
            heard_text="Hello there",
            interrupted=True,
            at=created + timedelta(seconds=7),
        )
    )
    await store.add_turn(
        TranscriptTurn(
            call_id=call_id, role="user", text="About my order.", at=created + timedelta(seconds=9)
        )
    )
    sessions = async_sessionmaker(store.engine)
    async with sessions() as session, session.begin():
        session.add(
            PostCallRow(
                conversation_id="conv_el_" + call_id,
                event_type="post_call_transcription",
                call_id=call_id,
                received_at=created + timedelta(minutes=2),
                processed_at=created + timedelta(minutes=2),
                transcript="[agent] Hello there",
            )
        )


async def seed(folder: Path) -> Seeded:
    """Two calls per number: one 40 days old, one from today (relative to :data:`NOW`)."""
    url = f"sqlite+aiosqlite:///{folder}/seed.db"
    await upgrade(url)
    store = SqlCallStore(make_engine(url))
    s = Seeded(store=store, url=url)
    await _call(store, s.alice_old, ALICE, NOW - timedelta(days=40))
    await _call(store, s.alice_new, ALICE, NOW - timedelta(hours=1))
    await _call(store, s.bob_old, BOB, NOW - timedelta(days=40))
    await _call(store, s.bob_new, BOB, NOW - timedelta(hours=2))
    for number in (ALICE, BOB):
        await SqlDoNotCallList(store.engine).add_do_not_call(
            hashed(number, KEY), number[:2] + "••••" + number[-4:], "callee"
        )
    refusals = RefusalLog(store.engine)
    await refusals.record_refusal("per_number_hourly", number_hash=hashed(ALICE, KEY), at=NOW)
    await refusals.record_refusal("per_number_hourly", number_hash=hashed(BOB, KEY), at=NOW)
    await refusals.record_refusal("country", at=NOW)
    return s


async def counts(store: SqlCallStore) -> dict[str, int]:
    """Rows per table."""
    out = {}
    sessions = async_sessionmaker(store.engine)
    async with sessions() as session:
        for name, row in (
            ("calls", CallRow),
            ("call_events", EventRow),
            ("transcript_turns", TurnRow),
            ("do_not_call", DoNotCallRow),
            ("policy_refusals", RefusalRow),
            ("postcall_webhooks", PostCallRow),
        ):
            out[name] = int(
                (await session.execute(select(func.count()).select_from(row))).scalar_one()
            )
    return out
