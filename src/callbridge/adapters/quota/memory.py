"""Quota store in process memory: one :class:`asyncio.Lock` around plain state.

Right for a single server process; several processes need
:class:`~callbridge.adapters.quota.redis.RedisQuotaStore`. The decision is the pure
:func:`~callbridge.domain.policy.evaluate_quotas`; this module only keeps counters.
"""

from __future__ import annotations

import asyncio
import bisect
import secrets
from collections import defaultdict
from dataclasses import dataclass

from callbridge.domain.quotas import (
    DAY,
    HOUR,
    REQUESTER_RULES,
    QuotaCounters,
    QuotaLimits,
    QuotaRequest,
    Reservation,
    evaluate_quotas,
    normalise_ip,
    quota_error,
)
from callbridge.domain.spend import cents_to_micros
from callbridge.errors import SpendUnknown

_SWEEP_EVERY = 256


class MemoryQuotaStore:
    """A :class:`~callbridge.ports.QuotaStore` for one process."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._number_attempts: defaultdict[str, list[float]] = defaultdict(list)
        self._number_live: defaultdict[str, dict[str, float]] = defaultdict(dict)
        self._ip_attempts: defaultdict[str, list[float]] = defaultdict(list)
        self._block_attempts: defaultdict[str, list[float]] = defaultdict(list)
        self._country_calls: defaultdict[str, list[float]] = defaultdict(list)
        self._prefix_calls: defaultdict[str, list[float]] = defaultdict(list)
        self._ip_numbers: defaultdict[str, dict[str, float]] = defaultdict(dict)
        self._ip_flags: dict[str, float] = {}
        self._live: dict[str, float] = {}  # reservation or call id -> expiry
        self._slots: dict[str, _Slot] = {}  # call id -> its slot
        self._spend: dict[int, int] = {}  # day -> µUSD; absent: unknown
        self._calls = 0

    async def reserve(
        self,
        request: QuotaRequest,
        limits: QuotaLimits,
        now: float,
        *,
        require_spend: bool = False,
    ) -> Reservation:
        """Check every quota and record the attempt if all pass (see the port)."""
        async with self._lock:
            self._calls += 1
            if self._calls % _SWEEP_EVERY == 0:
                self._sweep(now)
            number, ip, block = request.number_key, request.ip, request.ip_block
            country, prefix = request.country_code, request.prefix_key
            day = int(now // DAY)
            if require_spend and day not in self._spend:
                raise SpendUnknown("no spend counter for today")
            counters = QuotaCounters(
                ip_flagged_until=self._ip_flags.get(ip, 0.0),
                ip_hour=tuple(_window(self._ip_attempts, ip, now - HOUR)),
                block_hour=tuple(_window(self._block_attempts, block, now - HOUR)),
                ip_numbers_day=len(_recent(self._ip_numbers, ip, now - DAY)),
                number_seen_from_ip=number in _recent(self._ip_numbers, ip, now - DAY),
                country_day=tuple(_window(self._country_calls, country, now - DAY)),
                prefix_day=tuple(_window(self._prefix_calls, prefix, now - DAY)),
                number_do_not_call=request.do_not_call,
                number_in_flight=len(_recent(self._number_live, number, now)),
                number_day=tuple(_window(self._number_attempts, number, now - DAY)),
                concurrent_calls=len(_prune(self._live, now)),
                spent_today_micros=self._spend.get(day, 0),
            )
            refusal = evaluate_quotas(counters, limits, now)
            if refusal is not None:
                if refusal.rule == "distinct_numbers":
                    self._flag(ip, limits.ip_block_escalation_s, now)
                elif refusal.rule not in REQUESTER_RULES:
                    self._ip_numbers[ip][number] = now  # a request for it, even if refused
                raise quota_error(refusal, limits)
            reservation = Reservation(
                id=secrets.token_hex(8),
                number_key=number,
                ip=ip,
                reserved_cents=limits.reservation_cents,
                spend_day=day,
                created_at=now,
            )
            expires = now + limits.in_flight_ttl_s
            bisect.insort(self._number_attempts[number], now)
            bisect.insort(self._ip_attempts[ip], now)
            bisect.insort(self._block_attempts[block], now)
            bisect.insort(self._country_calls[country], now)
            bisect.insort(self._prefix_calls[prefix], now)
            self._ip_numbers[ip][number] = now
            self._number_live[number][reservation.id] = expires
            self._live[reservation.id] = expires
            self._spend[day] = self._spend.get(day, 0) + cents_to_micros(reservation.reserved_cents)
            return reservation

    async def hold(
        self,
        call_id: str,
        number_key: str,
        *,
        until: float,
        now: float,
        reservation_id: str | None = None,
        only_if_missing: bool = False,
    ) -> bool:
        """Hold the call's in-flight slots until ``until`` (see the port)."""
        async with self._lock:
            current = self._slots.get(call_id)
            if only_if_missing and current is not None and current.until > now:
                return False
            if reservation_id is not None:
                self._drop_live(reservation_id, number_key)
            self._slots[call_id] = _Slot(number_key=number_key, held_at=now, until=until)
            self._live[call_id] = until
            self._number_live[number_key][call_id] = until
            return True

    async def release(self, call_id: str, *, now: float) -> bool:
        """Free the call's slots; idempotent (see the port)."""
        async with self._lock:
            slot = self._slots.pop(call_id, None)
            if slot is None:
                self._live.pop(call_id, None)
                return False
            self._drop_live(call_id, slot.number_key)
            return slot.until > now

    async def held(self, now: float) -> dict[str, float]:
        """Calls holding a slot that has not expired (see the port)."""
        async with self._lock:
            return {cid: slot.held_at for cid, slot in self._slots.items() if slot.until > now}

    async def spend(self, day: int) -> int | None:
        """The day's spend in µUSD, or ``None`` if unknown (see the port)."""
        async with self._lock:
            return self._spend.get(day)

    async def adjust_spend(self, day: int, delta: int) -> None:
        """Add ``delta`` to a known day's spend (see the port)."""
        async with self._lock:
            if day in self._spend:
                self._spend[day] = max(0, self._spend[day] + delta)

    async def restore_spend(self, day: int, amount: int) -> bool:
        """Set an unknown day's spend (see the port)."""
        async with self._lock:
            if day in self._spend:
                return False
            self._spend[day] = amount
            return True

    def _drop_live(self, member: str, number_key: str) -> None:
        self._live.pop(member, None)
        live = self._number_live.get(number_key)
        if live is not None:
            live.pop(member, None)
            if not live:
                del self._number_live[number_key]

    async def flag_ip(self, ip: str, seconds: int, *, now: float) -> None:
        """Block ``ip`` for ``seconds`` from ``now``, never shortening a block."""
        async with self._lock:
            self._flag(normalise_ip(ip), seconds, now)

    def _flag(self, ip: str, seconds: int, now: float) -> None:
        self._ip_flags[ip] = max(self._ip_flags.get(ip, 0.0), now + seconds)

    def _sweep(self, now: float) -> None:
        """Drop everything that has left its window, so memory stays bounded."""
        for attempts, horizon in (
            (self._number_attempts, now - DAY),
            (self._ip_attempts, now - HOUR),
            (self._block_attempts, now - HOUR),
            (self._country_calls, now - DAY),
            (self._prefix_calls, now - DAY),
        ):
            for key in list(attempts):
                _window(attempts, key, horizon)
        for key in list(self._ip_numbers):
            _recent(self._ip_numbers, key, now - DAY)
        for key in list(self._number_live):
            _recent(self._number_live, key, now)
        for ip in [ip for ip, until in self._ip_flags.items() if until <= now]:
            del self._ip_flags[ip]
        today = int(now // DAY)
        for day in [day for day in self._spend if day < today - 1]:
            del self._spend[day]
        for cid in [cid for cid, slot in self._slots.items() if slot.until <= now]:
            del self._slots[cid]


@dataclass(frozen=True, slots=True)
class _Slot:
    number_key: str
    held_at: float
    until: float


def _window(store: defaultdict[str, list[float]], key: str, horizon: float) -> list[float]:
    """The times under ``key`` after ``horizon``, dropping older ones (and empty keys)."""
    times = store.get(key)
    if not times:
        store.pop(key, None)
        return []
    del times[: bisect.bisect_right(times, horizon)]
    if not times:
        del store[key]
    return times


def _recent(
    store: defaultdict[str, dict[str, float]], key: str, horizon: float
) -> dict[str, float]:
    """The entries under ``key`` scored after ``horizon``, dropping older ones."""
    entries = store.get(key)
    if entries is None:
        return {}
    _prune(entries, horizon)
    if not entries:
        del store[key]
    return entries


def _prune(entries: dict[str, float], horizon: float) -> dict[str, float]:
    for name in [name for name, score in entries.items() if score <= horizon]:
        del entries[name]
    return entries
