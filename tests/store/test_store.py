"""The CallStore contract, on SQLite and on PostgreSQL (the same suite for both)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from callbridge.adapters.db.migrate import upgrade
from callbridge.adapters.db.store import SqlCallStore
from callbridge.domain.call import CallStatus
from callbridge.errors import Conflict, NotFound
from callbridge.ports import CallEvent, NewCall, StatusUpdate, TranscriptTurn
from tests.support.calls import new_call

T0 = datetime(2026, 3, 2, 15, 4, 5, 123000, tzinfo=UTC)


def _new(call_id: str = "call_1", *, key: str | None = None, at: datetime = T0) -> NewCall:
    return new_call(
        call_id,
        context_name="Ada",
        context_reason="pricing",
        context_summary="Chat about plans.",
        context_conversation_id="conv_web_1",
        stream_token_hash="h" * 64,
        idempotency_key=key,
        client_ip_hash="ip" * 16,
        created_at=at,
    )


async def test_a_call_round_trips(store: SqlCallStore) -> None:
    """A new call is stored as requested, with its context and an aware UTC time."""
    added = await store.add_call(_new())
    loaded = await store.get_call("call_1")
    assert loaded == added
    assert loaded is not None
    assert loaded.status is CallStatus.REQUESTED
    assert loaded.context.visitor_name == "Ada"
    assert loaded.context.conversation_id == "conv_web_1"
    assert loaded.created_at == T0 and loaded.created_at.tzinfo is not None
    assert await store.get_call("call_nope") is None


async def test_updates_change_only_what_they_name(store: SqlCallStore) -> None:
    """An update sets the given fields; the call is then found by its CallSid."""
    await store.add_call(_new())
    sid = "CA" + "a" * 32
    await store.update_call("call_1", StatusUpdate(status=CallStatus.QUEUED, call_sid=sid))
    ended = T0 + timedelta(seconds=42)
    done = await store.update_call(
        "call_1",
        StatusUpdate(
            status=CallStatus.COMPLETED,
            ended_at=ended,
            duration_s=40,
            failure_code=None,
            answered_by="human",
        ),
        expect=CallStatus.QUEUED,
    )
    assert (done.status, done.call_sid, done.duration_s) == (CallStatus.COMPLETED, sid, 40)
    assert done.ended_at == ended and done.answered_by == "human"
    assert done.context.visitor_name == "Ada"
    assert await store.get_call_by_sid(sid) == done
    assert await store.get_call_by_sid("CA" + "b" * 32) is None


async def test_an_update_that_expects_another_status_conflicts(store: SqlCallStore) -> None:
    """``expect`` makes an update conditional; an unknown call is NotFound."""
    await store.add_call(_new())
    with pytest.raises(Conflict):
        await store.update_call(
            "call_1", StatusUpdate(status=CallStatus.RINGING), expect=CallStatus.QUEUED
        )
    assert (await store.get_call("call_1")).status is CallStatus.REQUESTED  # type: ignore[union-attr]
    with pytest.raises(NotFound):
        await store.update_call("call_nope", StatusUpdate(status=CallStatus.QUEUED))


async def test_idempotency_keys_are_unique_and_keep_the_first_answer(store: SqlCallStore) -> None:
    """A second call with the same key conflicts; the first saved answer is kept."""
    await store.add_call(_new("call_1", key="k-1"))
    with pytest.raises(Conflict):
        await store.add_call(_new("call_2", key="k-1"))
    call, answer = await store.get_by_idempotency_key("k-1")  # type: ignore[misc]
    assert (call.id, answer) == ("call_1", None)
    await store.save_response("call_1", '{"first": true}')
    await store.save_response("call_1", '{"second": true}')
    assert (await store.get_by_idempotency_key("k-1"))[1] == '{"first": true}'  # type: ignore[index]
    assert await store.get_by_idempotency_key("k-2") is None
    await store.add_call(_new("call_3"))  # many calls without a key are fine
    await store.add_call(_new("call_4"))


async def test_status_events_are_kept_once_in_order(store: SqlCallStore) -> None:
    """Each (source, status, sequence) is stored once; events come back in arrival order."""
    await store.add_call(_new())

    def event(status: str, seq: int | None, **detail: str) -> CallEvent:
        return CallEvent(
            call_id="call_1",
            source="twilio" if seq is not None else "service",
            status=status,
            at=T0,
            sequence_number=seq,
            detail=detail,
        )

    assert await store.add_event(event("initiated", 0))
    assert await store.add_event(event("ringing", 1))
    assert not await store.add_event(event("ringing", 1))
    assert await store.add_event(event("completed", 3, CallDuration="7"))
    assert await store.add_event(event("consent_given", None))
    assert await store.add_event(event("consent_given", None))
    events = await store.events("call_1")
    assert [(e.status, e.sequence_number) for e in events] == [
        ("initiated", 0),
        ("ringing", 1),
        ("completed", 3),
        ("consent_given", None),
        ("consent_given", None),
    ]
    assert events[2].detail == {"CallDuration": "7"}
    assert events[0].at == T0 and events[0].id is not None
    assert await store.events("call_nope") == []


async def test_a_stream_claims_its_call_once(store: SqlCallStore) -> None:
    """A stream's start uses the token once, for its own live call and CallSid, and
    records the stream; a wrong hash, CallSid or call, or an ended call, writes nothing."""
    sid, other_sid, stream = "CA" + "a" * 32, "CA" + "b" * 32, "MZ" + "1" * 32
    await store.add_call(_new("call_1"))
    await store.add_call(_new("call_2"))
    await store.add_call(_new("call_3"))
    for call_id, call_sid in (("call_1", sid), ("call_2", other_sid), ("call_3", "CA" + "c" * 32)):
        await store.update_call(call_id, StatusUpdate(call_sid=call_sid))
    await store.update_call("call_3", StatusUpdate(status=CallStatus.COMPLETED))

    assert await store.claim_stream("call_1", sid, "x" * 64, stream) is None
    assert await store.claim_stream("call_1", other_sid, "h" * 64, stream) is None
    assert await store.claim_stream("call_nope", sid, "h" * 64, stream) is None
    assert await store.claim_stream("call_3", "CA" + "c" * 32, "h" * 64, stream) is None
    unclaimed = await store.get_call("call_1")
    assert unclaimed is not None and unclaimed.stream_sid is None

    results = await asyncio.gather(
        *[store.claim_stream("call_1", sid, "h" * 64, stream) for _ in range(5)]
    )
    claimed = [call for call in results if call is not None]
    assert len(claimed) == 1
    assert claimed[0] == await store.get_call("call_1")
    assert (claimed[0].id, claimed[0].stream_sid) == ("call_1", stream)
    assert await store.claim_stream("call_2", other_sid, "h" * 64, stream) is not None


async def test_transcript_turns_come_back_in_time_order(store: SqlCallStore) -> None:
    """Turns are stored with what was heard, and read back ordered by time."""
    await store.add_call(_new())
    await store.add_turn(
        TranscriptTurn(
            call_id="call_1", role="user", text="Hello?", at=T0 + timedelta(seconds=2), event_id=2
        )
    )
    await store.add_turn(
        TranscriptTurn(
            call_id="call_1",
            role="agent",
            text="Hi Ada, welcome.",
            at=T0,
            heard_text="Hi Ada,",
            interrupted=True,
            event_id=1,
        )
    )
    turns = await store.turns("call_1")
    assert [(t.role, t.event_id) for t in turns] == [("agent", 1), ("user", 2)]
    assert turns[0].heard_text == "Hi Ada," and turns[0].interrupted is True
    assert turns[1].heard_text is None and turns[1].interrupted is False
    assert turns[0].at == T0


async def test_recent_calls_are_newest_first_and_filterable(store: SqlCallStore) -> None:
    """Recent calls list newest first, limited, by status and since a time."""
    for i in range(4):
        await store.add_call(_new(f"call_{i}", at=T0 + timedelta(minutes=i)))
    await store.update_call("call_2", StatusUpdate(status=CallStatus.FAILED))
    assert [c.id for c in await store.recent_calls(limit=3)] == ["call_3", "call_2", "call_1"]
    assert [c.id for c in await store.recent_calls(status="failed")] == ["call_2"]
    since = await store.recent_calls(since=T0 + timedelta(minutes=2))
    assert [c.id for c in since] == ["call_3", "call_2"]


async def test_the_do_not_call_list(store: SqlCallStore) -> None:
    """A number hash added to the do-not-call list is found; adding it twice is harmless;
    entries come newest first, masked; removing reports whether it was there."""
    from callbridge.adapters.db.do_not_call import SqlDoNotCallList

    dnc = SqlDoNotCallList(store.engine)
    assert not await dnc.is_do_not_call("n" * 64)
    await dnc.add_do_not_call("n" * 64, "+1••••••0142", "callee")
    await dnc.add_do_not_call("n" * 64, "+1••••••0142", "callee")
    await dnc.add_do_not_call("m" * 64, "+1••••••0143", "operator")
    assert await dnc.is_do_not_call("n" * 64)
    assert [(e.masked, e.source) for e in await dnc.entries()] == [
        ("+1••••••0143", "operator"),
        ("+1••••••0142", "callee"),
    ]
    assert await dnc.remove_do_not_call("m" * 64)
    assert not await dnc.remove_do_not_call("m" * 64)
    assert not await dnc.is_do_not_call("m" * 64)


async def test_migrations_can_run_again(store: SqlCallStore, database_url: str) -> None:
    """Upgrading an up-to-date database changes nothing and loses nothing."""
    await store.add_call(_new())
    await upgrade(database_url)
    await store.ping()
    assert await store.get_call("call_1") is not None
