"""The one translation of redis-py's failures, for every Redis adapter.

redis-py raises :class:`redis.exceptions.ConnectionError` (refused, reset, the server
still loading its data) and :class:`redis.exceptions.TimeoutError` when Redis is away,
and other :class:`~redis.exceptions.RedisError` s when it refuses a command; a bare
``OSError`` can slip out of a socket being torn down. :func:`redis_errors` turns the
first kind into :class:`~callbridge.errors.Unavailable` and the rest into
:class:`~callbridge.errors.StoreError`, both naming ``redis`` as the dependency, so
the web layer answers 503 with ``Retry-After`` and ``/readyz`` can say what is down.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from callbridge.errors import StoreError, Unavailable

__all__ = ["ping", "redis_errors"]


@contextmanager
def redis_errors(what: str) -> Iterator[None]:
    """Translate a Redis failure raised in the block.

    Args:
        what: the adapter, for the message (``"quota store"``, ``"event bus"``…).

    Raises:
        Unavailable: Redis could not be reached or did not answer in time.
        StoreError: Redis refused the command.
    """
    try:
        yield
    except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
        raise Unavailable(
            f"the {what} (Redis) is unreachable: {type(exc).__name__}",
            dependency="redis",
        ) from exc
    except RedisError as exc:
        raise StoreError(
            f"the {what} (Redis) failed: {type(exc).__name__}",
            dependency="redis",
        ) from exc


async def ping(client: Redis) -> None:
    """Ask Redis for ``PING`` (the readiness probe).

    Raises:
        Unavailable: Redis could not be reached or did not answer in time.
        StoreError: Redis refused the command.
    """
    with redis_errors("server"):
        await client.ping()
