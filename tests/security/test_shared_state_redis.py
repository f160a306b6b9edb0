"""Shared state across processes (Redis): single-use tokens, live events, the kill switch.

Each test uses two independent clients, as two server processes would.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from callbridge.adapters.live_events_redis import RedisEventBus
from callbridge.adapters.redis_shared import RedisFlag, RedisNonceLedger
from callbridge.errors import AuthRejected
from callbridge.services.killswitch import KillSwitch
from callbridge.services.tokens import SessionTokens

pytestmark = pytest.mark.redis


@pytest.fixture
async def two_clients(redis_url: str) -> AsyncIterator[tuple[aioredis.Redis, aioredis.Redis]]:
    one, two = aioredis.Redis.from_url(redis_url), aioredis.Redis.from_url(redis_url)
    try:
        yield one, two
    finally:
        await one.aclose()
        await two.aclose()


async def test_a01_a_token_is_single_use_across_processes(
    two_clients: tuple[aioredis.Redis, aioredis.Redis],
) -> None:
    """A token redeemed by one process is refused by another sharing Redis; racing
    redemptions accept exactly one. (A per-process ledger accepts it once per process.)"""
    prefix = f"callbridge:nonce:test-{uuid.uuid4().hex[:8]}:"
    key = b"k" * 32
    first = SessionTokens(key, RedisNonceLedger(two_clients[0], prefix=prefix))
    second = SessionTokens(key, RedisNonceLedger(two_clients[1], prefix=prefix))
    token = first.issue("https://shop.example.com")
    await first.redeem(token, "https://shop.example.com")
    with pytest.raises(AuthRejected):
        await second.redeem(token, "https://shop.example.com")
    raced = first.issue("https://shop.example.com")
    results = await asyncio.gather(
        *(tokens.redeem(raced, "https://shop.example.com") for tokens in [first, second] * 10),
        return_exceptions=True,
    )
    assert sum(r is None for r in results) == 1


async def test_live_events_reach_followers_in_another_process(
    two_clients: tuple[aioredis.Redis, aioredis.Redis],
) -> None:
    """A status change published by one process reaches a follower attached to another."""
    prefix = f"callbridge:ev:test-{uuid.uuid4().hex[:8]}:"
    publisher, follower = (RedisEventBus(c, prefix=prefix) for c in two_clients)
    changes = await follower.subscribe("call_1")  # subscribed in Redis once this returns
    first = asyncio.ensure_future(anext(changes))
    await publisher.publish("call_1", {"call_id": "call_1", "status": "ringing"})
    await publisher.publish("call_2", {"call_id": "call_2", "status": "ringing"})
    await publisher.publish("call_1", {"call_id": "call_1", "status": "completed"})
    assert await asyncio.wait_for(first, 5) == {"call_id": "call_1", "status": "ringing"}
    assert await asyncio.wait_for(anext(changes), 5) == {"call_id": "call_1", "status": "completed"}
    await changes.aclose()
    assert follower.follower_count == 0


async def test_a13_a_trip_reaches_every_process_within_the_refresh(
    two_clients: tuple[aioredis.Redis, aioredis.Redis],
) -> None:
    """A kill switch tripped in one process stops calls in another at its next look
    (refresh 1 s, well within 5 s); the reason is shared."""
    key = f"callbridge:killswitch:test-{uuid.uuid4().hex[:8]}"
    here = KillSwitch(shared=RedisFlag(two_clients[0], key=key))
    there = KillSwitch(shared=RedisFlag(two_clients[1], key=key), refresh_s=0.2)
    assert await there.calls_enabled()
    await here.trip("twilio usage trigger: totalprice")
    assert not await here.calls_enabled()
    await asyncio.sleep(0.25)
    assert not await there.calls_enabled()
    assert there.reason == "twilio usage trigger: totalprice"
    await here.reset()
    assert await here.calls_enabled()
