"""Call status changes fanned out through Redis pub/sub, so ``/events`` works on any process.

Implements :class:`~callbridge.ports.EventBus` like
:class:`~callbridge.adapters.live_events.MemoryEventBus`, but a change published by
the process that received Twilio's status callback reaches followers connected to
any other process (https://redis.io/docs/latest/develop/interact/pubsub/). Each
follower holds one subscription (one pooled connection) on the channel
``callbridge:ev:{call_id}``; payloads are JSON. Pub/sub is fire-and-forget: a
follower that connects later re-reads the call's status from the store first.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from callbridge.adapters.redis_errors import redis_errors
from callbridge.errors import StoreError

CHANNEL_PREFIX: Final = "callbridge:ev:"


class RedisEventBus:
    """Publish/subscribe by call id across processes.

    Args:
        client: a ``redis.asyncio.Redis``; the caller owns and closes it.
        prefix: the channel prefix.
    """

    def __init__(self, client: aioredis.Redis, *, prefix: str = CHANNEL_PREFIX) -> None:
        self._client = client
        self._prefix = prefix
        self._followers = 0

    async def publish(self, call_id: str, payload: Mapping[str, Any]) -> None:
        """Send ``payload`` to every follower of ``call_id`` in every process.

        Raises:
            StoreError: Redis failed.
        """
        with redis_errors("event bus"):
            await self._client.publish(self._prefix + call_id, orjson.dumps(dict(payload)))

    async def subscribe(self, call_id: str) -> RedisSubscription:
        """Follow ``call_id``: subscribed in Redis before this returns, so nothing is missed.

        Raises:
            StoreError: Redis failed.
        """
        pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        try:
            with redis_errors("event bus"):
                await pubsub.subscribe(self._prefix + call_id)
        except StoreError:
            await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
            raise
        self._followers += 1
        return RedisSubscription(self, pubsub)

    def _detached(self) -> None:
        self._followers -= 1

    @property
    def follower_count(self) -> int:
        """How many followers this process has attached."""
        return self._followers


class RedisSubscription:
    """One follower's changes from a Redis channel; close it with :meth:`aclose`."""

    def __init__(self, bus: RedisEventBus, pubsub: Any) -> None:
        self._bus = bus
        self._pubsub = pubsub
        self._closed = False

    def __aiter__(self) -> RedisSubscription:
        return self

    async def __anext__(self) -> Mapping[str, Any]:
        while True:
            with redis_errors("event bus"):
                message = await self._pubsub.get_message(timeout=None)
            if message is None or message.get("type") != "message":
                continue
            try:
                payload = orjson.loads(message["data"])
            except orjson.JSONDecodeError:
                continue
            if isinstance(payload, dict):
                return payload

    async def aclose(self) -> None:
        """Unsubscribe (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._bus._detached()
        try:
            await self._pubsub.unsubscribe()
        except (RedisError, OSError):
            pass  # Redis is away: the subscription went with the connection
        await self._pubsub.aclose()
