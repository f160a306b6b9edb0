"""The scheduler's cheap question before a pass: is anything due, or does a call want a
retry? It must say yes whenever the pass would find work (else a due call waits
forever), and no when there is none (the pass stops there)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from callbridge.adapters.db.schedule import SqlSchedule
from callbridge.adapters.db.store import SqlCallStore
from callbridge.domain.call import CallStatus
from callbridge.ports import NewCall, StatusUpdate
from tests.support.calls import new_call

NOW = datetime(2026, 12, 8, 17, 0, tzinfo=UTC)
DAY_AGO = NOW - timedelta(days=1)


def _call(call_id: str, **fields: object) -> NewCall:
    return new_call(call_id, "+12025550160", **{"created_at": NOW - timedelta(hours=1), **fields})


async def _work(book: SqlSchedule, max_attempt: int = 1) -> bool:
    return await book.has_work(NOW, retry_since=DAY_AGO, max_attempt=max_attempt)


async def test_nothing_scheduled_and_nothing_to_retry_is_no_work(store: SqlCallStore) -> None:
    book = SqlSchedule(store)
    assert await _work(book) is False
    await store.add_call(_call("c_live"))  # a call of now, not scheduled
    await store.add_call(_call("c_later", scheduled_for=NOW + timedelta(minutes=1)))
    assert await _work(book) is False


async def test_a_call_due_now_is_work(store: SqlCallStore) -> None:
    book = SqlSchedule(store)
    await store.add_call(_call("c_due", scheduled_for=NOW))
    assert await _work(book) is True
    assert await _work(book, max_attempt=0) is True  # retries off: due calls still count
    claimed = await book.claim_due(NOW, grace=timedelta(minutes=15))
    assert [c.id for c in claimed.to_place] == ["c_due"]
    assert await _work(book) is False  # claimed: no longer scheduled


async def test_a_busy_call_that_asked_for_a_retry_is_work_until_it_has_one(
    store: SqlCallStore,
) -> None:
    book = SqlSchedule(store)
    await store.add_call(_call("c_busy", retry_on_no_answer=True))
    await store.update_call("c_busy", StatusUpdate(status=CallStatus.BUSY, ended_at=NOW))
    assert await _work(book) is True
    assert [c.id for c in await book.retry_candidates(DAY_AGO, max_attempt=1)] == ["c_busy"]
    assert await _work(book, max_attempt=0) is False  # retries off
    # Its retry, as the scheduler links it: the first call wants nothing more.
    await store.add_call(
        _call(
            "c_retry",
            idempotency_key="retry:c_busy",
            retry_of="c_busy",
            attempt=2,
            scheduled_for=NOW + timedelta(minutes=10),
        )
    )
    assert await book.retry_candidates(DAY_AGO, max_attempt=1) == []
    assert await _work(book) is False


async def test_calls_the_retry_rule_leaves_alone_are_no_work(store: SqlCallStore) -> None:
    book = SqlSchedule(store)
    await store.add_call(_call("c_no_wish"))
    await store.update_call("c_no_wish", StatusUpdate(status=CallStatus.BUSY, ended_at=NOW))
    await store.add_call(_call("c_deep", retry_on_no_answer=True, attempt=2))
    await store.update_call("c_deep", StatusUpdate(status=CallStatus.NO_ANSWER, ended_at=NOW))
    await store.add_call(
        _call("c_old", retry_on_no_answer=True, created_at=NOW - timedelta(days=3))
    )
    await store.update_call(
        "c_old", StatusUpdate(status=CallStatus.BUSY, ended_at=NOW - timedelta(days=2))
    )
    assert await book.retry_candidates(DAY_AGO, max_attempt=1) == []
    assert await _work(book) is False
    assert await _work(book, max_attempt=2) is True  # c_deep is within two attempts
