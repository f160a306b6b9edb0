"""The pure quota decision, its keys, and what only the Redis store must add."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from callbridge.adapters.quota import RedisQuotaStore
from callbridge.domain.phone import normalise
from callbridge.domain.quotas import (
    QUOTA_RULES,
    QuotaCounters,
    QuotaLimits,
    QuotaRequest,
    Reservation,
    evaluate_quotas,
    hashed,
    ip_block,
    normalise_ip,
    number_range,
    quota_error,
)
from callbridge.errors import ConfigError, PolicyRejected, StoreError
from tests.support.server import free_port

KEY = b"test-number-hashing-key"
T0 = 1_700_000_000.0
LIMITS = QuotaLimits()


class TestDecision:
    def test_empty_counters_pass(self) -> None:
        """With nothing recorded, every rule passes."""
        assert evaluate_quotas(QuotaCounters(), LIMITS, T0) is None

    def test_requester_rules_come_before_number_rules(self) -> None:
        """A blocked requester is told about itself, never about the number it asked for."""
        counters = QuotaCounters(
            ip_hour=tuple(T0 - i for i in range(10)), number_in_flight=1, concurrent_calls=10
        )
        refusal = evaluate_quotas(counters, LIMITS, T0)
        assert refusal is not None and refusal.rule == "ip_hourly"

    def test_destination_rules_come_before_number_rules(self) -> None:
        """A full number range refuses before the number's own state is looked at."""
        counters = QuotaCounters(
            prefix_day=tuple(T0 - i for i in range(20)), number_do_not_call=True
        )
        refusal = evaluate_quotas(counters, LIMITS, T0)
        assert refusal is not None and refusal.rule == "prefix_daily"

    def test_number_rules_come_before_service_rules(self) -> None:
        """A number in flight is refused as such even when every line is busy."""
        refusal = evaluate_quotas(
            QuotaCounters(number_in_flight=1, concurrent_calls=10), LIMITS, T0
        )
        assert refusal is not None and refusal.rule == "number_in_flight"

    def test_a_zero_limit_always_refuses(self) -> None:
        """per_ip_hourly=0 refuses every request for a full hour."""
        refusal = evaluate_quotas(QuotaCounters(), QuotaLimits(per_ip_hourly=0), T0)
        assert refusal is not None and (refusal.rule, refusal.retry_after) == ("ip_hourly", 3600)

    def test_every_rule_maps_to_a_refusal_with_a_retry_after(self) -> None:
        """Each rule becomes a PolicyRejected of status 429 or 503 with a Retry-After."""
        from callbridge.domain.quotas import QuotaRefusal

        for rule in QUOTA_RULES:
            error = quota_error(QuotaRefusal(rule, 42), LIMITS)
            assert isinstance(error, PolicyRejected)
            assert error.reason == rule
            assert error.http_status == (503 if rule in ("capacity", "spend_cap") else 429)
            assert error.retry_after is not None and error.retry_after > 0


class TestLimits:
    def test_the_reservation_is_the_time_limit_at_the_highest_rate(self) -> None:
        """10 minutes at 15 cents a minute reserves 150 cents."""
        assert LIMITS.reservation_cents == 150
        assert (
            QuotaLimits(time_limit_minutes=5, max_rate_cents_per_minute=7).reservation_cents == 35
        )

    @pytest.mark.parametrize(
        "kwargs",
        [{"per_ip_hourly": -1}, {"per_number_cooldown_s": 0}, {"ip_block_escalation_s": 0},
         {"per_number_daily": 2.5}],
    )  # fmt: skip
    def test_impossible_limits_are_config_errors(self, kwargs: dict[str, object]) -> None:
        """Negative, fractional or zero-length limits are refused when configured."""
        with pytest.raises(ConfigError):
            QuotaLimits(**kwargs)  # type: ignore[arg-type]


class TestKeys:
    def test_numbers_are_keyed_by_hmac(self) -> None:
        """The key is a keyed hash: stable, secret-dependent, and free of the digits."""
        first = hashed("+12025550143", KEY)
        assert first == hashed("+12025550143", KEY.decode())
        assert first != hashed("+12025550143", b"another key")
        assert first != hashed("+12025550144", KEY)
        assert len(first) == 32 and "2025550143" not in first

    def test_an_empty_hashing_key_is_refused(self) -> None:
        """Hashing with an empty key would be a plain hash, so it is a ConfigError."""
        with pytest.raises(ConfigError):
            hashed("+12025550143", b"")

    @pytest.mark.parametrize(
        ("ip", "block"),
        [
            ("203.0.113.7", "203.0.113.0/24"),
            (" 203.0.113.255 ", "203.0.113.0/24"),
            ("::ffff:203.0.113.7", "203.0.113.0/24"),
            ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
            ("2001:DB8:1:2::1", "2001:db8:1:2::/64"),
            ("testclient", "testclient"),
        ],
    )
    def test_addresses_aggregate_to_their_slash_24_or_slash_64(self, ip: str, block: str) -> None:
        """IPv4 groups by /24, IPv6 by /64, mapped IPv4 as IPv4; non-addresses stand alone."""
        assert ip_block(ip) == block

    def test_requests_carry_the_hash_and_the_canonical_address(self) -> None:
        """A quota request holds the hashed number and the canonical IP, never the number."""
        request = QuotaRequest.for_number(
            normalise("+1 202 555 0143", "US"), "::ffff:192.0.2.1", KEY
        )
        assert request.number_key == hashed("+12025550143", KEY)
        assert request.ip == normalise_ip("192.0.2.1") == "192.0.2.1"
        assert request.ip_block == "192.0.2.0/24"
        assert request.country_code == "1"
        assert number_range("+12025550143") == "+1202555"
        assert request.prefix_key == hashed("+1202555", KEY)


@pytest.mark.redis
class TestRedisOnly:
    async def test_redis_holds_no_plain_number(
        self, redis_client: aioredis.Redis, quota_prefix: str
    ) -> None:
        """After a reservation held by a call, no key or value in Redis contains the number's
        digits."""
        store = RedisQuotaStore(redis_client, prefix=quota_prefix)
        request = QuotaRequest.for_number(normalise("+1 202 555 0143", "US"), "192.0.2.1", KEY)
        reservation = await store.reserve(request, LIMITS, T0)
        await store.hold(
            "call_1", request.number_key, until=T0 + 700, now=T0, reservation_id=reservation.id
        )
        keys = [key async for key in redis_client.scan_iter(match=quota_prefix + "*")]
        assert len(keys) == 10  # every key but the IP flag, and the call's slot
        dumped = [repr(key) for key in keys]
        for key in keys:
            kind = await redis_client.type(key)
            if kind == b"zset":
                dumped += [repr(member) for member in await redis_client.zrange(key, 0, -1)]
            elif kind == b"hash":
                dumped += [repr(pair) for pair in (await redis_client.hgetall(key)).items()]
            assert await redis_client.ttl(key) > 0
        assert not [text for text in dumped if "5550143" in text or "202555" in text]
        await redis_client.delete(*keys)

    async def test_two_processes_racing_get_one_call(
        self, redis_url: str, quota_prefix: str
    ) -> None:
        """Two stores on separate connections racing 25 requests each grant one call."""
        clients = [aioredis.Redis.from_url(redis_url) for _ in range(2)]
        try:
            stores = [RedisQuotaStore(client, prefix=quota_prefix) for client in clients]
            request = QuotaRequest.for_number(normalise("+1 202 555 0143", "US"), "192.0.2.1", KEY)
            results = await asyncio.gather(
                *(stores[i % 2].reserve(request, LIMITS, T0) for i in range(50)),
                return_exceptions=True,
            )
            assert sum(isinstance(r, Reservation) for r in results) == 1
            assert all(isinstance(r, Reservation | PolicyRejected) for r in results)
        finally:
            keys = [key async for key in clients[0].scan_iter(match=quota_prefix + "*")]
            if keys:
                await clients[0].delete(*keys)
            for client in clients:
                await client.aclose()

    async def test_an_unreachable_redis_fails_closed_with_store_error(self) -> None:
        """If Redis can't be reached, reserve raises StoreError: no call without a check."""
        client = aioredis.Redis(
            host="127.0.0.1",
            port=free_port(),
            socket_connect_timeout=1,
            retry=Retry(NoBackoff(), 0),
        )
        try:
            store = RedisQuotaStore(client)
            request = QuotaRequest.for_number(normalise("+1 202 555 0143", "US"), "192.0.2.1", KEY)
            with pytest.raises(StoreError, match="quota store"):
                await store.reserve(request, LIMITS, T0)
        finally:
            await client.aclose()
