"""The reconciler is the safety net: it outlives outages, one process works each pass,
a call whose bridging process died is settled soon after its end, and every settled
call carries Twilio's end time."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from callbridge.adapters.db.leases import SqlHeartbeats, SqlLease
from callbridge.adapters.db.store import ReconcileQueries, SqlCallStore, make_engine
from callbridge.adapters.redis_shared import RedisHeartbeats
from callbridge.domain.call import CallStatus
from callbridge.ports import Heartbeats
from callbridge.services.job_lease import JobLease
from callbridge.services.reconcile import Reconciler
from tests.reconcile.outage import Relay
from tests.support.app import SHARED_TEST_KEY, Sandbox, running_sandbox
from tests.support.calls import new_call
from tests.support.redis import RedisServer
from tests.support.server import free_port
from tests.support.wait import wait_until

FAST = {
    "CALLBRIDGE_RECONCILE_INTERVAL_SECONDS": "0.2",
    "CALLBRIDGE_STREAM_HEARTBEAT_SECONDS": "0.3",
    "CALLBRIDGE_STRANDED_CALL_GRACE_SECONDS": "1",
}


def _job_errors(sb: Sandbox, job: str = "reconciler") -> float:
    registry = sb.container.metrics.registry
    return registry.get_sample_value("callbridge_job_errors_total", {"job": job}) or 0.0


async def _add_orphan(url: str, call_id: str) -> None:
    """A call a process recorded two hours ago and died before asking Twilio."""
    store = SqlCallStore(make_engine(url))
    try:
        two_hours_ago = datetime.now(UTC) - timedelta(hours=2)
        await store.add_call(new_call(call_id, "+12025550170", created_at=two_hours_ago))
    finally:
        await store.aclose()


async def _status(sb: Sandbox, call_id: str) -> CallStatus | None:
    call = await sb.container.store.get_call(call_id)
    return call.status if call else None


def _twilio_end(sim: object) -> datetime:
    """The emulator's end time as Twilio's API gives it (RFC 2822: whole seconds)."""
    end = getattr(sim, "end_time", None)
    assert isinstance(end, datetime)
    return end.astimezone(UTC).replace(microsecond=0)


async def _forget_the_end(sb: Sandbox, call_id: str) -> None:
    """Leave a finished call's row as a process that died mid-call leaves it."""
    async with sb.container.store.engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE calls SET status='in-progress', ended_at=NULL, duration_s=NULL,"
                " price=NULL WHERE id=:id"
            ),
            {"id": call_id},
        )


@pytest.mark.postgres
async def test_the_reconciler_outlives_a_database_outage_and_recovers_without_restart(
    postgres_url: str,
) -> None:
    """PostgreSQL vanishes (port refused, connections dropped): the reconciler's passes
    fail and are counted, its loop stays up, and once the database is back it settles
    a stuck call without any restart."""
    relay, through = Relay.for_database(postgres_url)
    await relay.restore()
    try:
        async with running_sandbox(FAST, database_url=through) as sb:
            reconciler = sb.container.jobs.reconciler
            await relay.cut()
            await wait_until(lambda: _job_errors(sb) >= 2, timeout=30)
            assert reconciler.running
            await relay.restore()
            await _add_orphan(postgres_url, "call_after_outage")
            await wait_until(
                lambda: _terminal_call(sb, "call_after_outage"), timeout=60, interval=0.2
            )
            assert await _status(sb, "call_after_outage") is CallStatus.FAILED
            assert reconciler.running
    finally:
        await relay.cut()


@pytest.mark.redis
async def test_the_reconciler_outlives_a_redis_outage_and_recovers_without_restart(
    tmp_path: Path,
) -> None:
    """Redis (where the reconciler's lease lives) is killed: passes fail and are counted,
    the loop stays up, and when Redis is back the reconciler settles a stuck call."""
    redis = RedisServer(tmp_path)
    redis.start()
    try:
        async with running_sandbox({**FAST, "REDIS_URL": redis.url}, tmp_path=tmp_path) as sb:
            reconciler = sb.container.jobs.reconciler
            redis.stop()
            await wait_until(lambda: _job_errors(sb) >= 2, timeout=30)
            assert reconciler.running
            redis.start()
            await _add_orphan(str(sb.container.settings.database_url), "call_after_redis")
            await wait_until(
                lambda: _terminal_call(sb, "call_after_redis"), timeout=60, interval=0.2
            )
            assert await _status(sb, "call_after_redis") is CallStatus.FAILED
    finally:
        redis.stop()


async def test_a_call_ends_at_twilios_end_time_not_when_we_heard_of_it() -> None:
    """The final status callback's ``Timestamp`` is the call's ``ended_at``: the emulator's
    end time, as Twilio's record has it, and its duration."""
    async with running_sandbox({"CALLBRIDGE_SANDBOX_CALLEE": "answer=0.1,digits=1,hangup=1"}) as sb:
        answer = (await sb.request_call("+1 202 555 0171")).json()
        sim = await sb.twilio.wait_for_end(answer["call_sid"], timeout=20)
        call = await wait_until(lambda: _terminal_call(sb, answer["call_id"]), timeout=10)
        assert call.ended_at == _twilio_end(sim)
        assert call.duration_s == sim.duration


async def _priced_call(sb: Sandbox, call_id: str) -> object:
    call = await sb.container.store.get_call(call_id)
    return call if call is not None and call.price is not None else None


async def _terminal_call(sb: Sandbox, call_id: str) -> object:
    call = await sb.container.store.get_call(call_id)
    return call if call is not None and call.status.is_terminal else None


async def test_a_streamed_call_without_a_heartbeat_is_settled_at_once_with_twilios_end() -> None:
    """A call left in progress by a process that died mid-stream (no heartbeat, quiet for
    the grace) is fetched from Twilio on the next pass, long before TimeLimit + 5 min,
    and gets Twilio's end time, duration and price."""
    env = {**FAST, "CALLBRIDGE_SANDBOX_CALLEE": "answer=0.1,digits=1,speak,hangup=1.5"}
    async with running_sandbox(env) as sb:
        answer = (await sb.request_call("+1 202 555 0172")).json()
        sim = await sb.twilio.wait_for_end(answer["call_sid"], timeout=20)
        call = await wait_until(lambda: _terminal_call(sb, answer["call_id"]), timeout=10)
        assert call.stream_sid is not None  # it streamed
        await _forget_the_end(sb, answer["call_id"])
        settled = await wait_until(
            lambda: _terminal_call(sb, answer["call_id"]), timeout=30, interval=0.1
        )
        assert settled.status is CallStatus.COMPLETED
        assert settled.ended_at == _twilio_end(sim)
        assert settled.duration_s == sim.duration
        # Twilio (and the emulator) bills a moment after the end: on a loaded machine the
        # price can land after the settlement, and the price job then stores it.
        priced = await wait_until(lambda: _priced_call(sb, answer["call_id"]), timeout=30)
        assert priced.price is not None


@pytest.mark.postgres
async def test_two_reconcilers_on_one_database_never_both_settle_a_call(
    postgres_url: str,
) -> None:
    """Two processes' reconcilers run their passes at the same moment over the same stuck
    calls: each call is settled once (one settlement event), by whichever holds the lease."""
    env = {
        "CALLBRIDGE_SANDBOX_CALLEE": "answer=0.1,digits=1,hangup=0.5",
        "CALLBRIDGE_RECONCILE_INTERVAL_SECONDS": "3600",
    }
    async with running_sandbox(env, database_url=postgres_url) as sb:
        ids = []
        for last in range(73, 77):
            answer = (await sb.request_call(f"+1 202 555 01{last}")).json()
            await sb.twilio.wait_for_end(answer["call_sid"], timeout=20)
            ids.append(answer["call_id"])
        for call_id in ids:
            await wait_until(lambda c=call_id: _terminal_call(sb, c), timeout=10)
        c = sb.container
        engines = [make_engine(postgres_url) for _ in range(2)]
        try:
            reconcilers = [
                Reconciler(
                    reads=ReconcileQueries(SqlCallStore(engine)),
                    store=c.store,
                    telephony=c.telephony,
                    lifecycle=c.lifecycle,
                    prices=c.jobs.prices,
                    clock=c.clock,
                    time_limit_s=-300,  # every unfinished call counts as stale
                    lease=JobLease(
                        SqlLease(engine, c.clock), name="reconciler", owner=f"p{i}", ttl_s=30
                    ),
                )
                for i, engine in enumerate(engines)
            ]
            for _round in range(3):
                for call_id in ids:
                    await _forget_the_end(sb, call_id)
                changed = await asyncio.gather(*(r.run_once() for r in reconcilers))
                assert sorted(changed)[0] == 0, changed
            async with c.store.engine.connect() as conn:
                settlements = (
                    await conn.execute(
                        text(
                            "SELECT call_id, count(*) FROM call_events WHERE source='twilio'"
                            " AND status='completed' AND sequence_number IS NULL"
                            " GROUP BY call_id"
                        )
                    )
                ).all()
            assert sorted(n for _, n in settlements) == [3] * len(ids)
        finally:
            for engine in engines:
                await engine.dispose()


def _serve(port: int, env: dict[str, str], folder: Path) -> subprocess.Popen[bytes]:
    exe = Path(sys.executable).with_name("callbridge")
    return subprocess.Popen(
        [str(exe), "serve", "--host", "127.0.0.1", "--port", str(port)],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=open(folder / "serve.log", "wb"),  # noqa: SIM115 - closed with the process
        cwd=folder,
    )


@pytest.mark.postgres
@pytest.mark.parametrize(
    "heartbeats_in", ["database", pytest.param("redis", marks=pytest.mark.redis)]
)
async def test_a_call_whose_bridging_server_is_killed_is_settled_with_twilios_end(
    postgres_url: str, tmp_path: Path, heartbeats_in: str
) -> None:
    """Two servers on one database: ``callbridge serve`` (B) bridges a call and is killed
    with SIGKILL mid-call, so Twilio's final callback finds nobody. While B lived its
    heartbeat (in the database, or in Redis when REDIS_URL is set) vouched for the call;
    once it stops, the other server's reconciler fetches the call from Twilio and records
    it completed at Twilio's end time."""
    shared: dict[str, str] = {}
    redis: RedisServer | None = None
    if heartbeats_in == "redis":
        redis = RedisServer(tmp_path)
        redis.start()
        shared["REDIS_URL"] = redis.url
        shared["CALLBRIDGE_SECRET_KEY"] = SHARED_TEST_KEY  # B expects company: a shared key
    try:
        await _kill_the_bridging_server(postgres_url, tmp_path, shared)
    finally:
        if redis is not None:
            redis.stop()


async def _kill_the_bridging_server(
    postgres_url: str, tmp_path: Path, shared: dict[str, str]
) -> None:
    env_a = {
        **FAST,
        **shared,
        "CALLBRIDGE_SANDBOX_CALLEE": "answer=0.2,digits=1,speak,hangup=30",
    }
    async with running_sandbox(env_a, database_url=postgres_url) as a:
        port = free_port()
        b_url = f"http://127.0.0.1:{port}"
        proc = _serve(
            port,
            {
                **FAST,
                **shared,
                "CALLBRIDGE_SANDBOX": "true",
                "CALLBRIDGE_RECONCILE_INTERVAL_SECONDS": "3600",
                "CALLBRIDGE_DIALING_PERMISSIONS_CHECK": "off",
                "DATABASE_URL": postgres_url,
                "PUBLIC_BASE_URL": b_url,
                "TWILIO_API_BASE_URL": f"{a.base_url}/sandbox/twilio",
                "TWILIO_ACCOUNT_SID": a.container.account_sid,
                "TWILIO_AUTH_TOKEN": a.container.auth_token or "",
            },
            tmp_path,
        )
        try:
            async with httpx.AsyncClient(base_url=b_url, timeout=10) as b:

                async def ready() -> bool:
                    assert proc.poll() is None, (tmp_path / "serve.log").read_text()
                    try:
                        return (await b.get("/readyz")).status_code == 200
                    except httpx.TransportError:
                        return False

                await wait_until(ready, timeout=60, interval=0.2)
                token = (await b.get("/api/call/session")).json()["token"]
                placed = (
                    await b.post(
                        "/api/call/outbound",
                        json={"to_number": "+1 202 555 0177"},
                        headers={"X-Callbridge-Token": token},
                    )
                ).json()
                assert placed["success"], placed
            call_id = placed["call_id"]

            async def streaming() -> bool:
                call = await a.container.store.get_call(call_id)
                return bool(call and call.status is CallStatus.IN_PROGRESS and call.stream_sid)

            await wait_until(streaming, timeout=30, interval=0.1)
            beats: Heartbeats = (
                RedisHeartbeats(a.container.redis, owner="test")
                if a.container.redis is not None
                else SqlHeartbeats(a.container.store.engine, a.container.clock, owner="test")
            )
            await wait_until(lambda: beats.alive([call_id]), timeout=10)
            # B vouches for its call: past the grace, A's passes still leave it alone.
            await asyncio.sleep(2 * float(FAST["CALLBRIDGE_STRANDED_CALL_GRACE_SECONDS"]))
            assert await beats.alive([call_id]) == {call_id}
            assert await _status(a, call_id) is CallStatus.IN_PROGRESS
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        sim = await a.twilio.wait_for_end(placed["call_sid"], timeout=60)
        settled = await wait_until(lambda: _terminal_call(a, call_id), timeout=60, interval=0.2)
        assert settled.status is CallStatus.COMPLETED
        assert settled.ended_at == _twilio_end(sim)
        assert settled.duration_s == sim.duration
        events = await a.container.store.events(call_id)
        assert [e.sequence_number for e in events if e.status == "completed"] == [None]
