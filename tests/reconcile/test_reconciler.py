"""The reconciler settles calls a crashed process left unfinished, from Twilio's own record."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from callbridge.domain.call import CallStatus
from callbridge.ports import StatusUpdate
from tests.support.app import running_sandbox
from tests.support.calls import new_call
from tests.support.wait import wait_until


async def _settled(store: Any, call_id: str) -> Any:
    call = await store.get_call(call_id)
    return call if call is not None and call.status.is_terminal else None


async def test_a_call_left_in_progress_is_settled_from_twilio() -> None:
    """A call Twilio finished but we still think is live is brought to its final status."""
    async with running_sandbox({"CALLBRIDGE_SANDBOX_CALLEE": "answer=0.1,digits=1,hangup=1"}) as sb:
        answer = (await sb.request_call("+1 202 555 0150")).json()
        assert answer["success"], answer
        await sb.twilio.wait_for_end(answer["call_sid"], timeout=20)
        store = sb.container.store
        call = await store.get_call(answer["call_id"])
        assert call is not None
        # Pretend this process died mid-call: our record says in-progress, a day old.
        await store.update_call(call.id, StatusUpdate(status=CallStatus.IN_PROGRESS))
        reconciler = sb.container.jobs.reconciler
        reconciler._grace = timedelta(seconds=-60)  # everything counts as stale
        changed = await reconciler.run_once()
        assert changed >= 1
        settled = await store.get_call(call.id)
        assert settled is not None
        assert settled.status is CallStatus.COMPLETED


async def test_a_call_that_never_reached_twilio_is_recorded_failed() -> None:
    """A call stuck in ``requested`` (the process died before asking Twilio) becomes failed."""
    async with running_sandbox() as sb:
        from datetime import UTC, datetime

        store = sb.container.store
        await store.add_call(
            new_call(
                "call_orphan",
                "+12025550151",
                stream_token_hash="x" * 64,
                created_at=datetime.now(UTC) - timedelta(hours=2),
            )
        )
        reconciler = sb.container.jobs.reconciler
        # This pass, or the start-up pass still running beside it, settles the orphan.
        await reconciler.run_once()
        orphan = await wait_until(lambda: _settled(store, "call_orphan"), timeout=10)
        assert orphan.status is CallStatus.FAILED
        assert orphan.failure_code == "interrupted"


async def test_a_completed_call_gets_twilios_price_soon_after_it_ends() -> None:
    """Twilio bills just after the end; the price is fetched and stored within seconds."""
    import asyncio

    async with running_sandbox({"CALLBRIDGE_SANDBOX_CALLEE": "answer=0.1,digits=1,hangup=1"}) as sb:
        answer = (await sb.request_call("+1 202 555 0152")).json()
        await sb.twilio.wait_for_end(answer["call_sid"], timeout=20)
        store = sb.container.store
        for _ in range(100):
            call = await store.get_call(answer["call_id"])
            assert call is not None
            if call.price is not None:
                break
            await asyncio.sleep(0.1)
        assert call.price is not None and call.price.startswith("-")
        assert call.price_unit == "USD"
