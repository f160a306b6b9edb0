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
        self._live: dict[str, float] = {}
        self._spend: defaultdict[int, int] = defaultdict(int)
        self._open: dict[str, tuple[int, int]] = {}  # id -> (cents, day)
        self._calls = 0

    async def reserve(self, request: QuotaRequest, limits: QuotaLimits, now: float) -> Reservation:
        """Check every quota and record the attempt if all pass (see the port)."""
        async with self._lock:
            self._calls += 1
            if self._calls % _SWEEP_EVERY == 0:
                self._sweep(now)
            number, ip, block = request.number_key, request.ip, request.ip_block
            country, prefix = request.country_code, request.prefix_key
            day = int(now // DAY)
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
                spent_today_cents=self._spend.get(day, 0),
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
            self._spend[day] += reservation.reserved_cents
            self._open[reservation.id] = (reservation.reserved_cents, day)
            return reservation

    async def release(
        self, reservation: Reservation, *, actual_cost_cents: int | None, now: float
    ) -> None:
        """Free the in-flight slots and settle the spend; idempotent (see the port)."""
        async with self._lock:
            self._live.pop(reservation.id, None)
            live = self._number_live.get(reservation.number_key)
            if live is not None:
                live.pop(reservation.id, None)
                if not live:
                    del self._number_live[reservation.number_key]
            booked = self._open.pop(reservation.id, None)
            if booked is not None and actual_cost_cents is not None:
                self._spend[reservation.spend_day] += actual_cost_cents - booked[0]

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
        for rid in [rid for rid, (_, day) in self._open.items() if day < today - 1]:
            del self._open[rid]


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
