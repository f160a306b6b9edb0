"""Quota store in Redis, shared by every process: one Lua script per operation.

The check-and-record of :meth:`RedisQuotaStore.reserve` is a single Lua script
(``EVALSHA`` through :meth:`redis.asyncio.Redis.register_script`), so it is atomic
across processes: Redis runs a script to its end before any other command
(https://redis.io/docs/latest/develop/interact/programmability/eval-intro/).
The script is :func:`~callbridge.domain.policy.evaluate_quotas` written in Lua;
the shared contract tests keep the two equal.

Keys (prefix ``callbridge:q:``), all with TTLs; numbers appear only as
:func:`~callbridge.domain.policy.hashed` keys (security.md 45):

==============================  ====================================================
``n:{hash}:att``                sorted set: attempt id -> time (last day)
``n:{hash}:live``               sorted set: in-flight reservation id -> expiry
``ip:{ip}:att``                 sorted set: attempt id -> time (last hour)
``ip:{ip}:nums``                sorted set: number hash -> last request (last day)
``ip:{ip}:flag``                escalation block: until (epoch seconds)
``blk:{net}:att``               sorted set: attempt id -> time, per /24 or /64
``cc:{code}:att``               sorted set: call id -> time, per country code (last day)
``pfx:{hash}:att``              sorted set: call id -> time, per number range (last day)
``live``                        sorted set: in-flight reservation or call id -> expiry
``slot:{call id}``              hash: the call's slot (``number``, ``held_at``, ``until``)
``spend_micros:{day}``          integer: µUSD booked on that UTC day (absent: unknown;
                                a new name, so a counter in cents from an older
                                version is never read as µUSD)
==============================  ====================================================

A reservation's slots are first under its random id (in ``live`` and
``n:{hash}:live``); :meth:`RedisQuotaStore.hold` moves them under the call's id and
writes ``slot:{call id}``, so that any process can release them by the call id alone.

Times are the ``now`` the caller passes, not the Redis clock, so tests can move
time; TTLs (real seconds) only collect garbage. Not for Redis Cluster: the keys of
one call do not share a hash slot.
"""

from __future__ import annotations

import math
import secrets
from contextlib import AbstractContextManager
from typing import Final

import redis.asyncio as aioredis

from callbridge.adapters.redis_errors import redis_errors
from callbridge.domain.quotas import (
    CAPACITY_RETRY_AFTER_S,
    DAY,
    QUOTA_RULES,
    QuotaLimits,
    QuotaRefusal,
    QuotaRequest,
    Reservation,
    normalise_ip,
    quota_error,
)
from callbridge.domain.spend import cents_to_micros
from callbridge.errors import SpendUnknown, StoreError

DEFAULT_PREFIX: Final = "callbridge:q:"

# KEYS: 1 n:att  2 n:live  3 ip:att  4 ip:nums  5 ip:flag  6 blk:att  7 live
#       8 spend:day  9 cc:att  10 pfx:att
# ARGV: 1 now  2 id  3 number hash  4 reservation µUSD  5 in-flight ttl
#       6 per_number_in_flight  7 per_number_hourly  8 per_number_daily  9 cool-down
#       10 per_ip_hourly  11 per_ip_block_hourly  12 distinct/ip/day  13 max concurrent
#       14 spend cap (-1: none)  15 escalation seconds  16 capacity retry  17 day length
#       18 do-not-call ('1' or '0')  19 per-number Retry-After  20 per_country_daily
#       21 per_prefix_daily  22 require a spend counter ('1' or '0')
# Returns {0} when recorded, {1, rule, retry_after}, or {2} when the spend is unknown.
_RESERVE: Final = """
local now = tonumber(ARGV[1])
local id, number, cents, ttl = ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local HOUR, DAY = 3600, tonumber(ARGV[17])
if ARGV[22] == '1' and redis.call('EXISTS', KEYS[8]) == 0 then return {2} end

local function refuse(rule, seconds)
  return {1, rule, math.max(1, math.ceil(seconds))}
end
-- seconds until a window (entries scored after now - width) has room, or nil
local function wait(key, limit, width)
  local after = string.format('(%.17g', now - width)
  local n = redis.call('ZCOUNT', key, after, '+inf')
  if n < limit then return nil end
  if limit == 0 then return width end
  local hit = redis.call('ZRANGEBYSCORE', key, after, '+inf',
                         'WITHSCORES', 'LIMIT', n - limit, 1)
  return tonumber(hit[2]) + width - now
end

redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - DAY)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - HOUR)
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - DAY)
redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', now - HOUR)
redis.call('ZREMRANGEBYSCORE', KEYS[7], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[9], '-inf', now - DAY)
redis.call('ZREMRANGEBYSCORE', KEYS[10], '-inf', now - DAY)

-- past the requester's rules, the request counts among its distinct numbers
local function refuse_counted(rule, seconds)
  redis.call('ZADD', KEYS[4], now, number)
  redis.call('EXPIRE', KEYS[4], DAY)
  return refuse(rule, seconds)
end

local flagged = tonumber(redis.call('GET', KEYS[5]) or '0')
if flagged > now then return refuse('ip_flagged', flagged - now) end
local w = wait(KEYS[3], tonumber(ARGV[10]), HOUR)
if w then return refuse('ip_hourly', w) end
w = wait(KEYS[6], tonumber(ARGV[11]), HOUR)
if w then return refuse('ip_block_hourly', w) end
if not redis.call('ZSCORE', KEYS[4], number)
   and redis.call('ZCARD', KEYS[4]) >= tonumber(ARGV[12]) then
  local escalation = tonumber(ARGV[15])
  redis.call('SET', KEYS[5], string.format('%.17g', now + escalation), 'EX', escalation)
  return refuse('distinct_numbers', escalation)
end
w = wait(KEYS[9], tonumber(ARGV[20]), DAY)
if w then return refuse_counted('country_daily', w) end
w = wait(KEYS[10], tonumber(ARGV[21]), DAY)
if w then return refuse_counted('prefix_daily', w) end
if ARGV[18] == '1' then
  return refuse_counted('do_not_call', tonumber(ARGV[19]))
end
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[6]) then
  return refuse_counted('number_in_flight', 1)
end
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
local cooldown = tonumber(ARGV[9])
if #last > 0 and tonumber(last[2]) > now - cooldown then
  return refuse_counted('number_cooldown', tonumber(last[2]) + cooldown - now)
end
w = wait(KEYS[1], tonumber(ARGV[7]), HOUR)
if w then return refuse_counted('number_hourly', w) end
w = wait(KEYS[1], tonumber(ARGV[8]), DAY)
if w then return refuse_counted('number_daily', w) end
if redis.call('ZCARD', KEYS[7]) >= tonumber(ARGV[13]) then
  return refuse_counted('capacity', tonumber(ARGV[16]))
end
local cap = tonumber(ARGV[14])
if cap >= 0 and tonumber(redis.call('GET', KEYS[8]) or '0') + cents > cap then
  return refuse_counted('spend_cap', DAY - now % DAY)
end

-- the in-flight sets' TTLs only grow: a call's slot in them may outlive this reservation
redis.call('ZADD', KEYS[1], now, id)
redis.call('EXPIRE', KEYS[1], DAY)
redis.call('ZADD', KEYS[2], now + ttl, id)
if redis.call('TTL', KEYS[2]) < ttl then redis.call('EXPIRE', KEYS[2], ttl) end
redis.call('ZADD', KEYS[3], now, id)
redis.call('EXPIRE', KEYS[3], HOUR)
redis.call('ZADD', KEYS[4], now, number)
redis.call('EXPIRE', KEYS[4], DAY)
redis.call('ZADD', KEYS[6], now, id)
redis.call('EXPIRE', KEYS[6], HOUR)
redis.call('ZADD', KEYS[7], now + ttl, id)
if redis.call('TTL', KEYS[7]) < ttl then redis.call('EXPIRE', KEYS[7], ttl) end
redis.call('ZADD', KEYS[9], now, id)
redis.call('EXPIRE', KEYS[9], DAY)
redis.call('ZADD', KEYS[10], now, id)
redis.call('EXPIRE', KEYS[10], DAY)
redis.call('INCRBY', KEYS[8], cents)
redis.call('EXPIRE', KEYS[8], 2 * DAY)
return {0}
"""

# KEYS: 1 slot:{call}  2 live  3 n:live
# ARGV: 1 call id  2 number hash  3 until  4 now  5 reservation id or ''  6 ttl (s)
#       7 only if missing ('1' or '0')
# Returns 1 when the slot was written.
_HOLD: Final = """
local now, untl, ttl = tonumber(ARGV[4]), tonumber(ARGV[3]), tonumber(ARGV[6])
if ARGV[7] == '1' then
  local held = redis.call('HGET', KEYS[1], 'until')
  if held and tonumber(held) > now then return 0 end
end
if ARGV[5] ~= '' then
  redis.call('ZREM', KEYS[2], ARGV[5])
  redis.call('ZREM', KEYS[3], ARGV[5])
end
redis.call('HSET', KEYS[1], 'number', ARGV[2], 'held_at', ARGV[4], 'until', ARGV[3])
redis.call('EXPIRE', KEYS[1], ttl)
for i = 2, 3 do
  redis.call('ZADD', KEYS[i], untl, ARGV[1])
  if redis.call('TTL', KEYS[i]) < ttl then redis.call('EXPIRE', KEYS[i], ttl) end
end
return 1
"""

# KEYS: 1 slot:{call}  2 live  3 n:live   ARGV: 1 call id  2 now
# Returns 1 when a slot that had not expired was freed.
_RELEASE: Final = """
local untl = redis.call('HGET', KEYS[1], 'until')
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
if redis.call('DEL', KEYS[1]) == 0 then return 0 end
if untl and tonumber(untl) > tonumber(ARGV[2]) then return 1 end
return 0
"""

# KEYS: 1 spend:day   ARGV: 1 delta
_ADJUST: Final = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  local spend = redis.call('INCRBY', KEYS[1], ARGV[1])
  if spend < 0 then redis.call('INCRBY', KEYS[1], -spend) end
end
return 0
"""

# KEYS: 1 ip:flag   ARGV: 1 until  2 seconds
_FLAG: Final = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > current then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
end
return 0
"""


class RedisQuotaStore:
    """A :class:`~callbridge.ports.QuotaStore` shared through Redis.

    Args:
        client: a connected ``redis.asyncio.Redis``; the caller owns and closes it.
        prefix: key prefix, ``callbridge:q:`` by default.
    """

    def __init__(self, client: aioredis.Redis, *, prefix: str = DEFAULT_PREFIX) -> None:
        self._prefix = prefix
        self._reserve = client.register_script(_RESERVE)
        self._client = client
        self._hold = client.register_script(_HOLD)
        self._release = client.register_script(_RELEASE)
        self._adjust = client.register_script(_ADJUST)
        self._flag = client.register_script(_FLAG)

    async def reserve(
        self,
        request: QuotaRequest,
        limits: QuotaLimits,
        now: float,
        *,
        require_spend: bool = False,
    ) -> Reservation:
        """Check every quota and record the attempt if all pass (see the port).

        Raises:
            PolicyRejected: a quota refused.
            SpendUnknown: ``require_spend`` and Redis has no spend counter for today.
            StoreError: Redis failed (the check fails closed).
        """
        p, number, ip = self._prefix, request.number_key, request.ip
        day = int(now // DAY)
        rid = secrets.token_hex(8)
        cap = limits.daily_spend_cap_cents
        keys = [
            f"{p}n:{number}:att",
            f"{p}n:{number}:live",
            f"{p}ip:{ip}:att",
            f"{p}ip:{ip}:nums",
            f"{p}ip:{ip}:flag",
            f"{p}blk:{request.ip_block}:att",
            f"{p}live",
            f"{p}spend_micros:{day}",
            f"{p}cc:{request.country_code}:att",
            f"{p}pfx:{request.prefix_key}:att",
        ]
        args: list[str | int | float] = [
            repr(now),
            rid,
            number,
            cents_to_micros(limits.reservation_cents),
            limits.in_flight_ttl_s,
            limits.per_number_in_flight,
            limits.per_number_hourly,
            limits.per_number_daily,
            limits.per_number_cooldown_s,
            limits.per_ip_hourly,
            limits.per_ip_block_hourly,
            limits.distinct_numbers_per_ip_daily,
            limits.max_concurrent_calls,
            -1 if cap is None else cents_to_micros(cap),
            limits.ip_block_escalation_s,
            CAPACITY_RETRY_AFTER_S,
            DAY,
            "1" if request.do_not_call else "0",
            limits.number_retry_after_s,
            limits.per_country_daily,
            limits.per_prefix_daily,
            "1" if require_spend else "0",
        ]
        with _store_errors():
            reply = await self._reserve(keys=keys, args=args)
        if int(reply[0]) == 2:
            raise SpendUnknown("no spend counter for today")
        if int(reply[0]) != 0:
            rule = _text(reply[1])
            if rule not in QUOTA_RULES:  # pragma: no cover - the script returns known rules
                raise StoreError(
                    f"quota script returned an unknown rule {rule!r}", dependency="redis"
                )
            refusal = QuotaRefusal(rule, int(reply[2]))
            raise quota_error(refusal, limits)
        return Reservation(
            id=rid,
            number_key=number,
            ip=ip,
            reserved_cents=limits.reservation_cents,
            spend_day=day,
            created_at=now,
        )

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
        """Hold the call's in-flight slots until ``until`` (see the port).

        Raises:
            StoreError: Redis failed.
        """
        p = self._prefix
        keys = [f"{p}slot:{call_id}", f"{p}live", f"{p}n:{number_key}:live"]
        # The slot's own TTL (real seconds) only collects garbage; ``until`` decides.
        ttl = max(1, math.ceil(until - now)) + 60
        args: list[str | int | float] = [
            call_id,
            number_key,
            repr(until),
            repr(now),
            reservation_id or "",
            ttl,
            "1" if only_if_missing else "0",
        ]
        with _store_errors():
            return bool(await self._hold(keys=keys, args=args))

    async def release(self, call_id: str, *, now: float) -> bool:
        """Free the call's slots; idempotent, from any process (see the port).

        The slot names the number's key; it is read first, and the script frees the
        slot only once (``DEL`` answers 1 to one caller).

        Raises:
            StoreError: Redis failed.
        """
        p = self._prefix
        slot = f"{p}slot:{call_id}"
        with _store_errors():
            number = await self._client.hget(slot, "number")
            number_live = f"{p}n:{_text(number)}:live" if number is not None else f"{p}live"
            freed = await self._release(
                keys=[slot, f"{p}live", number_live], args=[call_id, repr(now)]
            )
        return bool(freed)

    async def held(self, now: float) -> dict[str, float]:
        """Calls holding a slot that has not expired (see the port).

        Raises:
            StoreError: Redis failed.
        """
        p = self._prefix
        with _store_errors():
            members = await self._client.zrangebyscore(f"{p}live", f"({now!r}", "+inf")
            ids = [_text(m) for m in members]
            if not ids:
                return {}
            async with self._client.pipeline(transaction=False) as pipe:
                for cid in ids:
                    pipe.hmget(f"{p}slot:{cid}", "held_at", "until")
                rows = await pipe.execute()
        out: dict[str, float] = {}
        for cid, (held_at, until) in zip(ids, rows, strict=True):
            if held_at is not None and until is not None and float(until) > now:
                out[cid] = float(held_at)  # reservations not yet held by a call are skipped
        return out

    async def spend(self, day: int) -> int | None:
        """The day's spend in µUSD, or ``None`` if Redis has no counter (see the port).

        Raises:
            StoreError: Redis failed.
        """
        with _store_errors():
            value = await self._client.get(f"{self._prefix}spend_micros:{day}")
        return None if value is None else int(value)

    async def adjust_spend(self, day: int, delta: int) -> None:
        """Add ``delta`` to a known day's spend (see the port).

        Raises:
            StoreError: Redis failed.
        """
        if delta == 0:
            return
        with _store_errors():
            await self._adjust(keys=[f"{self._prefix}spend_micros:{day}"], args=[delta])

    async def restore_spend(self, day: int, amount: int) -> bool:
        """Set an unknown day's spend (``SET NX``; see the port).

        Raises:
            StoreError: Redis failed.
        """
        with _store_errors():
            done = await self._client.set(
                f"{self._prefix}spend_micros:{day}", amount, nx=True, ex=2 * DAY
            )
        return bool(done)

    async def flag_ip(self, ip: str, seconds: int, *, now: float) -> None:
        """Block ``ip`` for ``seconds`` from ``now``, never shortening a block.

        Raises:
            StoreError: Redis failed.
        """
        key = f"{self._prefix}ip:{normalise_ip(ip)}:flag"
        with _store_errors():
            await self._flag(keys=[key], args=[repr(now + seconds), max(1, seconds)])


def _store_errors() -> AbstractContextManager[None]:
    """Translate redis-py errors (:func:`~callbridge.adapters.redis_errors.redis_errors`)."""
    return redis_errors("quota store")


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
