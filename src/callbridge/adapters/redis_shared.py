"""Small pieces of shared state in Redis: spent token nonces and the kill-switch flag.

Both let several processes behind a load balancer agree (security.md 13 and the
single-use token of 1); each is one atomic Redis command
(https://redis.io/docs/latest/commands/set/ — ``SET key value NX EX seconds``).
The caller owns the ``redis.asyncio.Redis`` client and closes it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from callbridge.errors import StoreError

NONCE_PREFIX: Final = "callbridge:nonce:"
KILL_SWITCH_KEY: Final = "callbridge:killswitch"


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


@contextmanager
def _store_errors(what: str) -> Iterator[None]:
    try:
        yield
    except RedisError as exc:
        raise StoreError(f"the {what} (Redis) failed: {type(exc).__name__}") from exc
