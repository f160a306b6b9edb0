"""The CallStore's answering machine fields, on SQLite and on PostgreSQL."""

from __future__ import annotations

from callbridge.adapters.db.store import SqlCallStore
from callbridge.domain.call import CallStatus
from callbridge.ports import StatusUpdate
from tests.store.test_store import _new


async def test_a_verdict_and_a_voicemail_round_trip(store: SqlCallStore) -> None:
    """answered_by, the detection time and message_left are kept; voicemail is terminal."""
    await store.add_call(_new())
    await store.update_call(
        "call_1",
        StatusUpdate(answered_by="machine_end_beep", amd_duration_ms=4100, message_left=False),
    )
    done = await store.update_call(
        "call_1", StatusUpdate(status=CallStatus.VOICEMAIL, message_left=True)
    )
    loaded = await store.get_call("call_1")
    assert loaded == done
    assert (loaded.answered_by, loaded.amd_duration_ms, loaded.message_left) == (
        "machine_end_beep",
        4100,
        True,
    )
    assert loaded.status.is_terminal
    assert [c.id for c in await store.recent_calls(status="voicemail")] == ["call_1"]


async def test_a_renewed_stream_token_replaces_the_spent_one(store: SqlCallStore) -> None:
    """The agent's voicemail stream gets a fresh token once; the first one stops working."""
    sid, stream = "CA" + "a" * 32, "MZ" + "1" * 32
    await store.add_call(_new())
    await store.update_call("call_1", StatusUpdate(call_sid=sid))
    assert await store.claim_stream("call_1", sid, "h" * 64, stream) is not None
    await store.renew_stream_token("call_1", "v" * 64)
    assert await store.claim_stream("call_1", sid, "h" * 64, stream) is None
    assert await store.claim_stream("call_1", sid, "v" * 64, stream) is not None
    assert await store.claim_stream("call_1", sid, "v" * 64, stream) is None
