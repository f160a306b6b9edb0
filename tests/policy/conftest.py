"""Quota stores for the contract suite: in memory, and in the session's Redis
(``redis_url``, tests/conftest.py)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from callbridge.adapters.quota import MemoryQuotaStore, QuotaStore, RedisQuotaStore


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A client to the session's Redis; keys written under ``callbridge:q:test-*`` go after."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def quota_prefix() -> str:
    """A key prefix of this test's own, so tests can share one Redis."""
    return f"callbridge:q:test-{uuid.uuid4().hex[:12]}:"


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def store(request: pytest.FixtureRequest, quota_prefix: str) -> AsyncIterator[QuotaStore]:
    """Each quota store the contract suite must hold for."""
    if request.param == "memory":
        yield MemoryQuotaStore()
        return
    url: str = request.getfixturevalue("redis_url")  # sync: only here if asked for
    client = aioredis.Redis.from_url(url)
    try:
        yield RedisQuotaStore(client, prefix=quota_prefix)
    finally:
        keys = [key async for key in client.scan_iter(match=quota_prefix + "*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


@pytest.fixture
async def twin(request: pytest.FixtureRequest, store: QuotaStore) -> AsyncIterator[QuotaStore]:
    """Another process's handle on ``store``'s state: a second client for Redis (the same
    store in memory, which one process alone can see)."""
    if not isinstance(store, RedisQuotaStore):
        yield store
        return
    url: str = request.getfixturevalue("redis_url")
    client = aioredis.Redis.from_url(url)
    try:
        yield RedisQuotaStore(client, prefix=request.getfixturevalue("quota_prefix"))
    finally:
        await client.aclose()
