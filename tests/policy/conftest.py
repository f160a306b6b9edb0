"""Quota stores for the contract suite: in memory, and in a real Redis server.

Redis comes from ``REDIS_URL_TEST`` or, failing that, a ``redis-server`` started on a
free loopback port for the session. Without either, Redis tests fail when ``CI`` is
set (install it with ``apt-get install -y --no-install-recommends redis-server``)
and are skipped otherwise.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

from callbridge.adapters.quota import MemoryQuotaStore, QuotaStore, RedisQuotaStore
from tests.support.server import free_port

_NO_REDIS = (
    "Redis tests need a server: set REDIS_URL_TEST, or install redis-server "
    "(apt-get install -y --no-install-recommends redis-server)."
)


def _wait_for_redis(port: int, process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"redis-server exited with status {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("redis-server did not answer PING within 10 s")


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """The URL of a Redis server for this test session."""
    url = os.environ.get("REDIS_URL_TEST")
    if url:
        yield url
        return
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail(_NO_REDIS)
        pytest.skip(_NO_REDIS)
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_redis(port, process)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)


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
