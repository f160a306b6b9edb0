"""``forget`` and retention remove what they promise and nothing else (security.md F.46)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path

from callbridge.adapters.db.queries import CallFilter, OperatorQueries
from callbridge.services.operator import OperatorService
from tests.operator.seed import ALICE, BOB, KEY, NOW, counts, seed


class _Clock:
    def now(self):  # type: ignore[no-untyped-def]
        return NOW

    def monotonic(self) -> float:
        return 0.0


def _service(store, key: bytes | None = KEY) -> OperatorService:  # type: ignore[no-untyped-def]
    return OperatorService(queries=OperatorQueries(store), clock=_Clock(), key=key)


async def test_forget_removes_one_numbers_calls_events_turns_and_refusals(tmp_path: Path) -> None:
    """Forgetting Alice deletes her two calls with their events, turns, webhook rows and
    refusals; Bob's rows, the anonymous refusal and both do-not-call rows stay."""
    s = await seed(tmp_path)
    try:
        before = await counts(s.store)
        result = await _service(s.store).forget("+1 (202) 555-0143")
        assert (result.calls, result.events, result.turns, result.refusals, result.do_not_call) == (
            2,
            8,
            4,
            1,
            0,
        )
        after = await counts(s.store)
        assert after == {
            "calls": before["calls"] - 2,
            "call_events": before["call_events"] - 8,
            "transcript_turns": before["transcript_turns"] - 4,
            "do_not_call": before["do_not_call"],
            "policy_refusals": before["policy_refusals"] - 1,
            "postcall_webhooks": before["postcall_webhooks"] - 2,
        }
        queries = OperatorQueries(s.store)
        assert await queries.list_calls(CallFilter(number=ALICE)) == []
        bob = await queries.call_detail(s.bob_new)
        assert bob is not None and len(bob.events) == 4 and len(bob.turns) == 2
    finally:
        await s.store.aclose()


async def test_forget_takes_the_number_off_do_not_call_only_when_asked(tmp_path: Path) -> None:
    """``include_dnc`` removes the number's do-not-call row and no other."""
    s = await seed(tmp_path)
    try:
        result = await _service(s.store).forget(BOB, include_dnc=True)
        assert result.do_not_call == 1
        entries = await OperatorQueries(s.store).do_not_call()
        assert [e.masked[-4:] for e in entries] == ["0143"]
    finally:
        await s.store.aclose()


async def test_forget_without_a_key_leaves_hashed_rows_alone(tmp_path: Path) -> None:
    """Without the server's key the hashed rows cannot be matched and are kept."""
    s = await seed(tmp_path)
    try:
        result = await _service(s.store, key=None).forget(ALICE, include_dnc=True)
        assert result.calls == 2 and result.refusals == 0 and result.do_not_call == 0
    finally:
        await s.store.aclose()


async def test_retention_clears_old_text_and_keeps_the_facts(tmp_path: Path) -> None:
    """A 30-day purge clears the 40-day-old calls' transcripts, chat context, analysis and
    webhook transcript, keeps their status, duration, price and timeline, and leaves the
    recent calls untouched."""
    s = await seed(tmp_path)
    try:
        result = await _service(s.store).purge(30)
        assert result.calls == 2 and result.turns == 4
        assert result.cutoff == NOW - timedelta(days=30)
        queries = OperatorQueries(s.store)
        for old_id in (s.alice_old, s.bob_old):
            old = await queries.call_detail(old_id)
            assert old is not None
            call = old.call
            assert old.turns == []
            assert call.context.visitor_name is None and call.context.summary is None
            assert call.context.reason is None and call.context.conversation_id is None
            assert call.analysis is None
            assert call.status.value == "completed" and call.duration_s == 60
            assert call.price == "-0.0130" and call.answered_by == "human"
            assert len(old.events) == 4
        for new_id in (s.alice_new, s.bob_new):
            new = await queries.call_detail(new_id)
            assert new is not None and len(new.turns) == 2
            assert new.call.context.summary == "the chat so far" and new.call.analysis
        totals = await counts(s.store)
        assert totals["postcall_webhooks"] == 4 and totals["calls"] == 4
        again = await _service(s.store).purge(30)
        assert (again.calls, again.turns) == (0, 0)
    finally:
        await s.store.aclose()


async def test_overview_counts_rates_times_and_spend(tmp_path: Path) -> None:
    """The overview counts the two recent calls, both answered after 6 s, 60 s long, and
    sums their spend for the day and the month; refusals come from the table."""
    s = await seed(tmp_path)
    try:
        o = await OperatorQueries(s.store).overview(NOW, days=14)
        assert o.total == 2 and o.answered == 2 and o.answer_rate == 1.0
        assert o.median_time_to_answer_s == 6.0 and o.avg_duration_s == 60.0
        assert o.spend_today == Decimal("0.0260") and o.spend_month == Decimal("0.0260")
        assert o.refusals == {"per_number_hourly": 2, "country": 1}
        assert len(o.days) == 14 and o.days[-1].total == 2 and o.days[-1].answered == 2
        assert o.statuses == {"completed": 2}
    finally:
        await s.store.aclose()


async def test_list_filters_by_status_day_and_number(tmp_path: Path) -> None:
    """Filters combine: status, a time range, an exact number or its last digits."""
    s = await seed(tmp_path)
    try:
        q = OperatorQueries(s.store)
        everything = await q.list_calls(CallFilter())
        assert [c.id for c in everything][:2] == [s.alice_new, s.bob_new]
        assert {c.id for c in everything[2:]} == {s.alice_old, s.bob_old}
        assert len(await q.list_calls(CallFilter(status="busy"))) == 0
        recent = await q.list_calls(CallFilter(since=NOW - timedelta(days=1)))
        assert {c.id for c in recent} == {s.alice_new, s.bob_new}
        assert {c.id for c in await q.list_calls(CallFilter(number="0177"))} == {
            s.bob_new,
            s.bob_old,
        }
        assert {c.id for c in await q.list_calls(CallFilter(number="+1 202 555 0143"))} == {
            s.alice_new,
            s.alice_old,
        }
        assert await q.list_calls(CallFilter(number="+1 202 555 0100")) == []
    finally:
        await s.store.aclose()
