"""What the soak reads at the end: our database, Redis, the emulator's records, nginx's log.

:class:`CallWatcher` polls the database once a second during the run and keeps when
each call was first seen terminal (our own "ended" time, whatever ``ended_at`` says).
:func:`collect` gathers the rest once the traffic has settled into an
:class:`Evidence`, which :mod:`callbridge.soak.invariants` judges. Twilio's record of
each call (status, start and end time, duration, price) is fetched through the
emulator's Calls REST API, exactly as from Twilio.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from callbridge.domain.call import TERMINAL

_TERMINAL = {s.value for s in TERMINAL}


@dataclass(frozen=True, slots=True)
class TwilioCall:
    """Twilio's (the emulator's) record of one call."""

    sid: str
    to: str
    status: str
    start_time: datetime | None
    end_time: datetime | None
    duration: int | None
    price_cents: float | None


@dataclass(frozen=True, slots=True)
class OurCall:
    """Our record of one call (a row of ``calls``)."""

    id: str
    call_sid: str | None
    to_number: str
    status: str
    failure_code: str | None
    created_at: datetime
    ended_at: datetime | None
    stream_sid: str | None
    stream_token_used: bool
    turns: int
    agent_conversation_id: str | None = None


@dataclass(frozen=True, slots=True)
class Refusal:
    """A row of ``policy_refusals``."""

    reason: str
    at: datetime
    number_hash: str | None


@dataclass(frozen=True, slots=True)
class LogLine:
    """One line of nginx's JSON access log."""

    t: float
    status: int
    method: str
    uri: str
    upstream: str
    upstream_status: str
    body: str

    def form(self) -> dict[str, str]:
        """The request body as a form (status callbacks)."""
        return dict(parse_qsl(self.body, keep_blank_values=True))


@dataclass(slots=True)
class Evidence:
    """Everything the invariants are judged on."""

    calls: list[OurCall] = field(default_factory=list)
    events: dict[str, list[tuple[str, str, int | None]]] = field(default_factory=dict)
    refusals: list[Refusal] = field(default_factory=list)
    twilio: dict[str, TwilioCall] = field(default_factory=dict)
    first_terminal: dict[str, float] = field(default_factory=dict)
    nginx: list[LogLine] = field(default_factory=list)
    ledger: list[dict[str, Any]] | None = None
    redis_held: dict[str, int] = field(default_factory=dict)
    redis_spend_cents: float | None = None
    redis_spend_exact: bool = False
    errors: list[str] = field(default_factory=list)


class CallWatcher:
    """Polls ``calls`` every ``interval`` seconds; keeps when each was first seen terminal."""

    def __init__(self, engine: AsyncEngine, interval: float = 1.0) -> None:
        self._engine = engine
        self._interval = interval
        self.first_terminal: dict[str, float] = {}
        self.statuses: dict[str, str] = {}
        self.failed_polls = 0

    async def poll(self) -> None:
        """Read every call's status once (a database error is counted, not raised)."""
        try:
            async with self._engine.connect() as conn:
                rows = (await conn.execute(text("SELECT id, status FROM calls"))).all()
        except (SQLAlchemyError, OSError):
            self.failed_polls += 1
            return
        now = time.time()
        for call_id, status in rows:
            self.statuses[call_id] = status
            if status in _TERMINAL:
                self.first_terminal.setdefault(call_id, now)

    async def run(self) -> None:
        """Poll until cancelled."""
        while True:
            await self.poll()
            await asyncio.sleep(self._interval)


def make_engine(url: str) -> AsyncEngine:
    """A small engine for the harness's own reads."""
    return create_async_engine(url, pool_size=2, max_overflow=2, pool_pre_ping=True)


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _rfc2822(value: str | None) -> datetime | None:
    return parsedate_to_datetime(value) if value else None


async def twilio_calls(api_base: str, account_sid: str, auth_token: str) -> dict[str, TwilioCall]:
    """Every call of the account, through the Calls REST API (paged)."""
    out: dict[str, TwilioCall] = {}
    root = api_base.rstrip("/")
    url: str | None = f"{root}/2010-04-01/Accounts/{account_sid}/Calls.json?PageSize=1000"
    async with httpx.AsyncClient(timeout=30.0, auth=(account_sid, auth_token)) as http:
        while url is not None:
            response = await http.get(url)
            response.raise_for_status()
            page = response.json()
            for raw in page["calls"]:
                price = raw.get("price")
                out[raw["sid"]] = TwilioCall(
                    sid=raw["sid"],
                    to=raw["to"],
                    status=raw["status"],
                    start_time=_rfc2822(raw.get("start_time")),
                    end_time=_rfc2822(raw.get("end_time")),
                    duration=int(raw["duration"]) if raw.get("duration") else None,
                    price_cents=abs(float(price)) * 100 if price is not None else None,
                )
            following = page.get("next_page_uri")
            url = f"{root}{following}" if following else None
    return out


async def unsettled(engine: AsyncEngine) -> int:
    """What is still to settle: spend ledger lines of billable calls without Twilio's
    price yet, and bridged calls without turns (0 when nothing; a failed read counts 1)."""
    bridged_without_turns = text(
        "SELECT count(*) FROM calls c WHERE (c.stream_sid IS NOT NULL OR c.stream_token_used) "
        "AND NOT EXISTS (SELECT 1 FROM transcript_turns t WHERE t.call_id = c.id)"
    )
    unpriced = text(
        "SELECT count(*) FROM spend_ledger "
        "WHERE actual_micros IS NULL AND coalesce(estimated_micros, 0) > 0"
    )
    pending = 0
    try:
        async with engine.connect() as conn:
            pending = int((await conn.execute(bridged_without_turns)).scalar_one())
        async with engine.connect() as conn:
            pending += int((await conn.execute(unpriced)).scalar_one())
    except SQLAlchemyError as exc:
        if "spend_ledger" in str(exc) or "actual_micros" in str(exc):
            return pending  # no ledger (yet): nothing to wait for there
        return 1
    except OSError:
        return 1
    return pending


async def database(engine: AsyncEngine, evidence: Evidence) -> None:
    """Read calls, their turn counts, status-callback events, refusals and the spend ledger."""
    async with engine.connect() as conn:
        turns: dict[str, int] = dict(
            (
                await conn.execute(
                    text("SELECT call_id, count(*) FROM transcript_turns GROUP BY call_id")
                )
            ).all()
        )
        rows = (
            await conn.execute(
                text(
                    "SELECT id, call_sid, to_number, status, failure_code, created_at, ended_at, "
                    "stream_sid, stream_token_used, agent_conversation_id FROM calls"
                )
            )
        ).all()
        evidence.calls = [
            OurCall(
                r[0],
                r[1],
                r[2],
                r[3],
                r[4],
                _utc(r[5]) or datetime.now(UTC),
                _utc(r[6]),
                r[7],
                bool(r[8]),
                int(turns.get(r[0], 0)),
                r[9],
            )
            for r in rows
        ]
        for call_id, source, status, seq in (
            await conn.execute(
                text("SELECT call_id, source, status, sequence_number FROM call_events ORDER BY id")
            )
        ).all():
            evidence.events.setdefault(call_id, []).append((source, status, seq))
        evidence.refusals = [
            Refusal(r[0], _utc(r[1]) or datetime.now(UTC), r[2])
            for r in (
                await conn.execute(
                    text("SELECT reason, at, number_hash FROM policy_refusals ORDER BY at")
                )
            ).all()
        ]
        has_ledger = (
            await conn.execute(
                text(
                    "SELECT count(*) FROM information_schema.tables "
                    "WHERE table_name = 'spend_ledger'"
                )
            )
        ).scalar_one()
        if has_ledger:
            result = await conn.execute(text("SELECT * FROM spend_ledger"))
            evidence.ledger = [dict(row._mapping) for row in result]


async def spend_drift(engine: AsyncEngine, redis_url: str, prefix: str = "callbridge:q:") -> int:
    """How far today's spend counter in Redis is from the ledger's day total, in µUSD
    (0 when they agree or either is missing; the reconciler heals a drift within two
    quiet passes, so the soak waits for it like it waits for prices)."""
    from redis import asyncio as aioredis
    from redis.exceptions import RedisError

    day = int(time.time() // 86400)
    total = text(
        "SELECT coalesce(sum(coalesce(actual_micros, estimated_micros, reserved_micros)), 0) "
        "FROM spend_ledger WHERE day = :day"
    )
    client = aioredis.from_url(redis_url)
    try:
        counter = await client.get(f"{prefix}spend_micros:{day}")
        async with engine.connect() as conn:
            ledger = int((await conn.execute(total, {"day": _utc_date(day)})).scalar_one())
    except (SQLAlchemyError, RedisError, OSError, ValueError):
        return 0  # the wait is best effort: the checks read the same state afterwards
    finally:
        await client.aclose()
    return 0 if counter is None else int(counter) - ledger


def _utc_date(day: int) -> date:
    return date(1970, 1, 1) + timedelta(days=day)


async def redis_state(url: str, evidence: Evidence, prefix: str = "callbridge:q:") -> None:
    """Slots still held (live sorted sets with unexpired members, open reservations, call
    slot records) and today's spend counter (``spend_micros:{day}`` in µUSD, or the older
    ``spend:{day}`` in cents)."""
    from redis import asyncio as aioredis

    client = aioredis.from_url(url)
    try:
        now = time.time()
        async for raw in client.scan_iter(match=f"{prefix}*", count=500):
            key = raw.decode() if isinstance(raw, bytes) else str(raw)
            kind_raw = await client.type(key)
            kind = kind_raw.decode() if isinstance(kind_raw, bytes) else str(kind_raw)
            if kind == "zset" and key.endswith("live"):
                held = await client.zcount(key, f"({now}", "+inf")
                if held:
                    evidence.redis_held[key] = int(held)
            elif kind == "hash" and key.endswith(":open"):
                held = await client.hlen(key)
                if held:
                    evidence.redis_held[key] = int(held)
            elif kind == "hash" and key.startswith(f"{prefix}slot:"):
                evidence.redis_held[key] = 1  # a call's slot record, held until released
        day = int(now // 86400)
        micros = await client.get(f"{prefix}spend_micros:{day}")
        if micros is not None:  # µUSD: 10,000 to the cent
            evidence.redis_spend_cents = int(micros) / 10_000
            evidence.redis_spend_exact = True
        else:
            spend = await client.get(f"{prefix}spend:{day}")
            evidence.redis_spend_cents = int(spend) if spend is not None else 0
    finally:
        await client.aclose()


def dump(evidence: Evidence, path: Path) -> None:
    """Write what the invariants were judged on to ``path`` as JSON (for a post-mortem)."""
    from dataclasses import asdict

    def plain(value: object) -> object:
        if isinstance(value, datetime):
            return value.isoformat()
        return str(value)

    data = {
        "calls": [asdict(c) for c in evidence.calls],
        "events": evidence.events,
        "refusals": [asdict(r) for r in evidence.refusals],
        "twilio": [asdict(c) for c in evidence.twilio.values()],
        "first_terminal": evidence.first_terminal,
        "ledger": evidence.ledger,
        "redis_held": evidence.redis_held,
        "redis_spend_cents": evidence.redis_spend_cents,
    }
    path.write_text(json.dumps(data, indent=1, default=plain))


def nginx_log(path: Path) -> list[LogLine]:
    """The access log's lines (a line that does not parse is skipped)."""
    out = []
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    for line in lines:
        try:
            raw = json.loads(line)
            out.append(
                LogLine(
                    float(raw["t"]),
                    int(raw["status"]),
                    raw["method"],
                    raw["uri"],
                    raw.get("upstream", ""),
                    raw.get("upstream_status", ""),
                    raw.get("body", ""),
                )
            )
        except (ValueError, KeyError, TypeError):
            continue
    return out
