"""Small pieces of shared state in Redis: spent token nonces, the kill-switch flag,
the operator's sign-in state (failed logins, revoked sessions), job leases and stream
heartbeats.

Each lets several processes behind a load balancer agree (security.md 13, the
single-use token of 1, the admin login limit); the nonce and the flag are one atomic
Redis command each
(https://redis.io/docs/latest/commands/set/ — ``SET key value NX EX seconds``).
The caller owns the ``redis.asyncio.Redis`` client and closes it.
"""

from __future__ import annotations

import secrets
from collections.abc import Collection
from contextlib import AbstractContextManager
from typing import Final, cast

import redis.asyncio as aioredis

from callbridge.adapters.redis_errors import redis_errors

NONCE_PREFIX: Final = "callbridge:nonce:"
KILL_SWITCH_KEY: Final = "callbridge:killswitch"
SIGN_IN_PREFIX: Final = "callbridge:admin:"
LEASE_PREFIX: Final = "callbridge:lease:"
HEARTBEAT_PREFIX: Final = "callbridge:heartbeat:"

#: Take the lease if free, extend it if ours: one script, so no other owner can slip
#: in between the read and the write (https://redis.io/docs/latest/commands/set/ ,
#: "Patterns": a lock released only by the owner that set it).
_ACQUIRE = """
local holder = redis.call('GET', KEYS[1])
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
elseif holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class RedisNonceLedger:
    """A :class:`~callbridge.services.tokens.NonceLedger` shared by every process.

    A nonce is spent with ``SET NX EX``: only the first ``spend`` across all
    processes sees the key created.
    """

    def __init__(self, client: aioredis.Redis, *, prefix: str = NONCE_PREFIX) -> None:
        self._client = client
        self._prefix = prefix

    async def spend(self, nonce: str, ttl_s: int) -> bool:
        """Record ``nonce`` as used; True only the first time, in any process.

        Raises:
            StoreError: Redis failed (the token is then refused: fail closed).
        """
        with _store_errors("nonce ledger"):
            created = await self._client.set(self._prefix + nonce, b"1", nx=True, ex=max(1, ttl_s))
        return bool(created)


class RedisFlag:
    """A :class:`~callbridge.services.killswitch.SharedFlag` in one Redis key."""

    def __init__(self, client: aioredis.Redis, *, key: str = KILL_SWITCH_KEY) -> None:
        self._client = client
        self._key = key

    async def get(self) -> str | None:
        """The reason stored in the flag, or None when it is not set.

        Raises:
            StoreError: Redis failed.
        """
        with _store_errors("kill switch"):
            value = await self._client.get(self._key)
        if value is None:
            return None
        return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)

    async def set(self, reason: str) -> None:
        """Set the flag (keeping the first reason if it is already set).

        Raises:
            StoreError: Redis failed.
        """
        with _store_errors("kill switch"):
            await self._client.set(self._key, reason.encode(), nx=True)

    async def clear(self) -> None:
        """Remove the flag.

        Raises:
            StoreError: Redis failed.
        """
        with _store_errors("kill switch"):
            await self._client.delete(self._key)


class RedisSignInState:
    """A :class:`~callbridge.services.admin_auth.SignInState` every process shares.

    Keys: ``{prefix}fail:{ip}`` is a sorted set of failed-login times (expiring
    with the window); ``{prefix}revoked:{sid}`` exists until the session's expiry.
    """

    def __init__(self, client: aioredis.Redis, *, prefix: str = SIGN_IN_PREFIX) -> None:
        self._client = client
        self._prefix = prefix

    async def failures(self, ip: str, since: float) -> list[float]:
        """See the port.

        Raises:
            StoreError: Redis failed.
        """
        key = f"{self._prefix}fail:{ip}"
        with _store_errors("sign-in state"):
            await self._client.zremrangebyscore(key, "-inf", since)
            members = await self._client.zrange(key, 0, -1, withscores=True)
        pairs = cast("list[tuple[bytes, float]]", members)
        return [float(score) for _member, score in pairs]

    async def add_failure(self, ip: str, at: float, keep_s: float) -> None:
        """See the port.

        Raises:
            StoreError: Redis failed.
        """
        key = f"{self._prefix}fail:{ip}"
        with _store_errors("sign-in state"):
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.zadd(key, {secrets.token_hex(8): at})
                pipe.expire(key, max(1, int(keep_s)))
                await pipe.execute()

    async def clear_failures(self, ip: str) -> None:
        """See the port.

        Raises:
            StoreError: Redis failed.
        """
        with _store_errors("sign-in state"):
            await self._client.delete(f"{self._prefix}fail:{ip}")

    async def revoke(self, sid: str, until: int) -> None:
        """See the port.

        Raises:
            StoreError: Redis failed.
        """
        with _store_errors("sign-in state"):
            await self._client.set(f"{self._prefix}revoked:{sid}", b"1", exat=max(1, until))

    async def is_revoked(self, sid: str) -> bool:
        """See the port.

        Raises:
            StoreError: Redis failed.
        """
        with _store_errors("sign-in state"):
            return bool(await self._client.exists(f"{self._prefix}revoked:{sid}"))


class RedisLease:
    """A :class:`~callbridge.ports.Lease` in one Redis key per job, valued by its owner.

    Taking and renewing is one Lua script (``SET … PX`` when free, ``PEXPIRE`` when
    ours); releasing deletes the key only if it is still ours.
    """

    def __init__(self, client: aioredis.Redis, *, prefix: str = LEASE_PREFIX) -> None:
        self._client = client
        self._prefix = prefix

    async def acquire(self, name: str, owner: str, ttl_s: float) -> bool:
        """See the port.

        Raises:
            StoreError: Redis failed.
        """
        ttl_ms = max(1, int(ttl_s * 1000))
        with _store_errors("lease"):
            taken = await self._client.eval(_ACQUIRE, 1, self._prefix + name, owner, ttl_ms)
        return bool(taken)

    async def release(self, name: str, owner: str) -> None:
        """See the port.

        Raises:
            StoreError: Redis failed.
        """
        with _store_errors("lease"):
            await self._client.eval(_RELEASE, 1, self._prefix + name, owner)


class RedisHeartbeats:
    """:class:`~callbridge.ports.Heartbeats` as one expiring key per call.

    Args:
        client: the Redis client.
        owner: this process's id (the keys' value, for an operator's eyes).
        prefix: the keys' prefix.
    """

    def __init__(
        self, client: aioredis.Redis, *, owner: str, prefix: str = HEARTBEAT_PREFIX
    ) -> None:
        self._client = client
        self._owner = owner.encode()
        self._prefix = prefix

    async def beat(self, call_ids: Collection[str], ttl_s: float) -> None:
        """See the port.

        Raises:
            StoreError: Redis failed.
        """
        if not call_ids:
            return
        ttl_ms = max(1, int(ttl_s * 1000))
        with _store_errors("stream heartbeats"):
            async with self._client.pipeline(transaction=False) as pipe:
                for call_id in call_ids:
                    pipe.set(self._prefix + call_id, self._owner, px=ttl_ms)
                await pipe.execute()

    async def alive(self, call_ids: Collection[str]) -> set[str]:
        """See the port.

        Raises:
            StoreError: Redis failed.
        """
        ids = list(call_ids)
        if not ids:
            return set()
        with _store_errors("stream heartbeats"):
            values = await self._client.mget([self._prefix + call_id for call_id in ids])
        return {call_id for call_id, value in zip(ids, values, strict=True) if value is not None}


def _store_errors(what: str) -> AbstractContextManager[None]:
    return redis_errors(what)
