"""What a reconciler pass looks at: streamed calls whose heartbeat lapsed (not those a live
process vouches for), and the slot audit, only while it holds the lease."""

from __future__ import annotations

from collections.abc import Collection

from callbridge.adapters.db.leases import SqlHeartbeats, SqlLease
from callbridge.adapters.db.store import ReconcileQueries
from callbridge.domain.call import CallStatus
from callbridge.ports import CreateCallRequest, ProviderCall, TelephonyProvider
from callbridge.services.job_lease import JobLease
from callbridge.services.reconcile import Reconciler
from tests.support.app import Sandbox, running_sandbox
from tests.support.wait import wait_until

LIVE_CALL = {
    "CALLBRIDGE_SANDBOX_CALLEE": "answer=0.1,digits=1,speak,hangup=30",
    "CALLBRIDGE_STREAM_HEARTBEAT_SECONDS": "0.2",
    "CALLBRIDGE_RECONCILE_INTERVAL_SECONDS": "3600",
}


class FetchLog:
    """The real Twilio client (the emulator behind it), noting which calls were fetched."""

    def __init__(self, inner: TelephonyProvider) -> None:
        self._inner = inner
        self.fetched: list[str] = []

    async def create_call(self, request: CreateCallRequest) -> ProviderCall:
        return await self._inner.create_call(request)

    async def fetch_call(self, sid: str) -> ProviderCall:
        self.fetched.append(sid)
        return await self._inner.fetch_call(sid)

    async def find_call(self, idempotency_token: str, to: str) -> ProviderCall | None:
        return await self._inner.find_call(idempotency_token, to)

    async def hang_up(self, sid: str) -> None:
        await self._inner.hang_up(sid)

    async def redirect(self, sid: str, *, twiml: str | None = None, url: str | None = None) -> None:
        await self._inner.redirect(sid, twiml=twiml, url=url)

    async def aclose(self) -> None:
        """The inner client belongs to the container."""


class SlotLog:
    """A :class:`~callbridge.ports.SlotAudit` that notes what it was shown."""

    def __init__(self) -> None:
        self.audits: list[set[str]] = []

    async def audit_slots(self, live_call_ids: Collection[str]) -> int:
        self.audits.append(set(live_call_ids))
        return 0


async def _streaming_call(sb: Sandbox, number: str) -> tuple[str, str]:
    answer = (await sb.request_call(number)).json()
    assert answer["success"], answer

    async def streaming() -> bool:
        call = await sb.container.store.get_call(answer["call_id"])
        return bool(call and call.status is CallStatus.IN_PROGRESS and call.stream_sid)

    await wait_until(streaming, timeout=20)
    return answer["call_id"], answer["call_sid"]


def _reconciler(sb: Sandbox, telephony: TelephonyProvider, **kwargs: object) -> Reconciler:
    c = sb.container
    return Reconciler(
        reads=ReconcileQueries(c.store),
        store=c.store,
        telephony=telephony,
        lifecycle=c.lifecycle,
        prices=c.jobs.prices,
        clock=c.clock,
        time_limit_s=600,
        stranded_grace_s=0,
        **kwargs,  # type: ignore[arg-type]
    )


async def test_a_call_its_process_vouches_for_is_not_fetched_until_the_beat_stops() -> None:
    """While the bridging process renews the call's heartbeat, a pass leaves the call
    alone (no Twilio request); once the beat has lapsed, the next pass fetches it."""
    async with running_sandbox(LIVE_CALL) as sb:
        call_id, call_sid = await _streaming_call(sb, "+1 202 555 0180")
        c = sb.container
        beats = SqlHeartbeats(c.store.engine, c.clock, owner="test")
        await wait_until(lambda: beats.alive([call_id]), timeout=10)
        log = FetchLog(c.telephony)
        reconciler = _reconciler(sb, log, heartbeats=beats)
        await reconciler.run_once()
        assert call_sid not in log.fetched
        await c.bridge.aclose()  # the process stops beating (as if it died)
        await wait_until(lambda: not_alive(beats, call_id), timeout=10)
        await reconciler.run_once()
        assert call_sid in log.fetched
        call = await c.store.get_call(call_id)
        assert call is not None and call.status is CallStatus.IN_PROGRESS  # Twilio: still live


async def not_alive(beats: SqlHeartbeats, call_id: str) -> bool:
    return not await beats.alive([call_id])


async def test_the_slot_audit_sees_the_live_calls_only_under_the_lease() -> None:
    """A pass shows the slot audit the ids of the calls live in the database (not the
    ended ones); a process that does not hold the lease audits nothing."""
    async with running_sandbox(LIVE_CALL) as sb:
        c = sb.container
        live_id, _ = await _streaming_call(sb, "+1 202 555 0181")
        ended_id, ended_sid = await _streaming_call(sb, "+1 202 555 0182")
        await c.telephony.hang_up(ended_sid)

        async def ended() -> bool:
            call = await c.store.get_call(ended_id)
            return bool(call and call.status.is_terminal)

        await wait_until(ended, timeout=20)
        slots = SlotLog()
        lease = SqlLease(c.store.engine, c.clock)
        mine = _reconciler(
            sb,
            c.telephony,
            slots=slots,
            lease=JobLease(lease, name="audit-test", owner="me", ttl_s=30),
        )
        other = _reconciler(
            sb,
            c.telephony,
            slots=slots,
            lease=JobLease(lease, name="audit-test", owner="other", ttl_s=30),
        )
        assert await lease.acquire("audit-test", "other", 30)
        await mine.run_once()
        assert slots.audits == []
        await other.run_once()  # runs, then lets go of the lease
        await mine.run_once()
        assert len(slots.audits) == 2
        assert all(live_id in seen and ended_id not in seen for seen in slots.audits)
