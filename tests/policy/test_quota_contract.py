"""Every quota store enforces every quota the same way, atomically (security.md 6-14).

Each test runs once against MemoryQuotaStore and once against RedisQuotaStore.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from callbridge.adapters.quota import QuotaStore
from callbridge.domain.phone import normalise
from callbridge.domain.quotas import (
    NUMBER_UNAVAILABLE_MESSAGE,
    QuotaLimits,
    QuotaRequest,
    Reservation,
    number_unavailable,
)
from callbridge.domain.spend import MICROS_PER_CENT
from callbridge.errors import PolicyRejected, SpendUnknown

KEY = b"test-number-hashing-key"
T0 = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC: 6400 s before the UTC day ends


def quota_limits(**overrides: Any) -> QuotaLimits:
    """QuotaLimits whose destination rules stay out of the way unless a test sets them.

    Most tests here ask for the fictional numbers +1 202 555 01nn, one range and one
    country code; the destination rules have their own tests below.
    """
    return QuotaLimits(**{"per_country_daily": 10_000, "per_prefix_daily": 10_000, **overrides})


LIMITS = quota_limits()
LOOSE = quota_limits(
    per_ip_hourly=1000, per_ip_block_hourly=1000, distinct_numbers_per_ip_daily=1000
)


def req(n: int = 1, ip: str = "203.0.113.7") -> QuotaRequest:
    """A request for the fictional number +1 202 555 01nn from ``ip``."""
    return QuotaRequest.for_number(normalise(f"+1 202 555 01{n:02d}", "US"), ip, KEY)


async def refused(
    store: QuotaStore, request: QuotaRequest, now: float, limits: QuotaLimits = LIMITS
) -> PolicyRejected:
    with pytest.raises(PolicyRejected) as caught:
        await store.reserve(request, limits, now)
    return caught.value


async def bind(store: QuotaStore, reservation: Reservation, now: float, *, ttl: float = 900) -> str:
    """Hold a reservation's slots for a call (its id made from the reservation's)."""
    call_id = "call_" + reservation.id
    await store.hold(
        call_id, reservation.number_key, until=now + ttl, now=now, reservation_id=reservation.id
    )
    return call_id


async def attempt(
    store: QuotaStore, request: QuotaRequest, now: float, limits: QuotaLimits
) -> None:
    """Reserve, hold and release at once, as a call that failed straight away."""
    reservation = await store.reserve(request, limits, now)
    await store.release(await bind(store, reservation, now), now=now)


class TestPerNumber:
    async def test_a_first_request_is_granted_with_a_spend_reservation(
        self, store: QuotaStore
    ) -> None:
        """A first request reserves the call's worst-case cost."""
        reservation = await store.reserve(req(), LIMITS, T0)
        assert reservation.number_key == req().number_key
        assert reservation.reserved_cents == 10 * 15
        assert reservation.created_at == T0

    async def test_a_second_request_while_a_call_is_in_flight_is_refused(
        self, store: QuotaStore
    ) -> None:
        """While a call to a number is in flight, another request for it gets 429, any IP."""
        await store.reserve(req(ip="203.0.113.7"), LIMITS, T0)
        error = await refused(store, req(ip="198.51.100.9"), T0 + 700)
        assert (error.http_status, error.reason) == (429, "number_in_flight")

    async def test_releasing_frees_the_in_flight_slot(self, store: QuotaStore) -> None:
        """After the call ends, the number may be called again once the cool-down passed."""
        reservation = await store.reserve(req(), LIMITS, T0)
        call_id = await bind(store, reservation, T0)
        await store.release(call_id, now=T0 + 60)
        await store.reserve(req(), LIMITS, T0 + 600)

    async def test_an_unreleased_slot_expires_after_the_time_limit_plus_five_minutes(
        self, store: QuotaStore
    ) -> None:
        """A lost release frees the number after time limit + 300 s (900 s by default)."""
        await store.reserve(req(), LIMITS, T0)
        assert (await refused(store, req(), T0 + 899)).reason == "number_in_flight"
        await store.reserve(req(), LIMITS, T0 + 900)

    async def test_a_number_called_within_the_cool_down_is_refused(self, store: QuotaStore) -> None:
        """Within 600 s of an attempt the number is refused (429) whatever the IP."""
        await attempt(store, req(ip="203.0.113.7"), T0, LIMITS)
        error = await refused(store, req(ip="198.51.100.9"), T0 + 599)
        assert (error.http_status, error.reason) == (429, "number_cooldown")
        await store.reserve(req(ip="198.51.100.9"), LIMITS, T0 + 600)

    async def test_the_fourth_request_for_one_number_within_an_hour_is_refused(
        self, store: QuotaStore
    ) -> None:
        """The fourth request for one number within a rolling hour is refused with 429."""
        for minute in (0, 10, 20):
            await attempt(store, req(), T0 + minute * 60, LIMITS)
        error = await refused(store, req(), T0 + 30 * 60)
        assert (error.http_status, error.reason) == (429, "number_hourly")
        await store.reserve(req(), LIMITS, T0 + 3600)

    async def test_the_sixth_request_for_one_number_within_a_day_is_refused(
        self, store: QuotaStore
    ) -> None:
        """The sixth request for one number within a rolling day is refused; a day on, it passes."""
        times = [T0, T0 + 600, T0 + 1200, T0 + 3600, T0 + 4200]
        for now in times:
            await attempt(store, req(), now, LIMITS)
        error = await refused(store, req(), T0 + 5000)
        assert (error.http_status, error.reason) == (429, "number_daily")
        assert (await refused(store, req(), T0 + 86_399)).reason == "number_daily"
        await store.reserve(req(), LIMITS, T0 + 86_400)

    async def test_every_per_number_refusal_looks_the_same(self, store: QuotaStore) -> None:
        """In-flight, cool-down, hourly and daily refusals share status, body and Retry-After."""
        limits = quota_limits(per_number_hourly=2, per_number_daily=3, per_number_cooldown_s=60)
        errors = []
        call_id = await bind(store, await store.reserve(req(1), limits, T0), T0)
        errors.append(await refused(store, req(1), T0 + 1, limits))  # in flight
        await store.release(call_id, now=T0 + 2)
        errors.append(await refused(store, req(1), T0 + 3, limits))  # cool-down
        await attempt(store, req(1), T0 + 100, limits)
        errors.append(await refused(store, req(1), T0 + 200, limits))  # hourly
        await attempt(store, req(1), T0 + 3700, limits)
        errors.append(await refused(store, req(1), T0 + 7300, limits))  # daily
        assert [e.reason for e in errors] == [
            "number_in_flight", "number_cooldown", "number_hourly", "number_daily",
        ]  # fmt: skip
        do_not_call = number_unavailable("do_not_call", limits)
        for error in errors:
            assert error.message == NUMBER_UNAVAILABLE_MESSAGE
            assert (error.http_status, error.retry_after, error.code) == (
                do_not_call.http_status, do_not_call.retry_after, do_not_call.code,
            )  # fmt: skip


class TestPerRequester:
    async def test_the_eleventh_request_from_one_ip_within_an_hour_is_refused(
        self, store: QuotaStore
    ) -> None:
        """The 11th request from an IP in an hour gets 429 with the exact Retry-After."""
        limits = quota_limits(distinct_numbers_per_ip_daily=100)
        for n in range(10):
            await attempt(store, req(n), T0 + n, limits)
        error = await refused(store, req(50), T0 + 10, limits)
        assert (error.http_status, error.reason, error.retry_after) == (429, "ip_hourly", 3590)
        assert (
            error.message
            == "Too many call requests from your network. Please try again in 60 minutes."
        )
        await store.reserve(req(50), limits, T0 + 3600)

    async def test_the_thirty_first_request_from_one_slash_24_is_refused(
        self, store: QuotaStore
    ) -> None:
        """Thirty requests from 203.0.113.0/24 fill its hour; the next address in it is refused."""
        for n in range(30):
            await attempt(store, req(n, ip=f"203.0.113.{n + 1}"), T0 + n, LIMITS)
        error = await refused(store, req(60, ip="203.0.113.200"), T0 + 30)
        assert (error.http_status, error.reason, error.retry_after) == (
            429,
            "ip_block_hourly",
            3570,
        )
        await store.reserve(req(60, ip="203.0.114.1"), LIMITS, T0 + 30)

    async def test_ipv6_addresses_share_their_slash_64(self, store: QuotaStore) -> None:
        """Two addresses in one IPv6 /64 count together; another /64 does not."""
        limits = quota_limits(per_ip_block_hourly=2)
        await attempt(store, req(1, ip="2001:db8:1:2::1"), T0, limits)
        await attempt(store, req(2, ip="2001:db8:1:2:ffff::9"), T0 + 1, limits)
        error = await refused(store, req(3, ip="2001:db8:1:2::abcd"), T0 + 2, limits)
        assert error.reason == "ip_block_hourly"
        await store.reserve(req(3, ip="2001:db8:1:3::1"), limits, T0 + 2)

    async def test_a_fourth_distinct_number_blocks_the_ip_for_a_day(
        self, store: QuotaStore
    ) -> None:
        """Asking for a 4th number in a day is refused and blocks that IP for 24 h."""
        for n in (1, 2, 3):
            await attempt(store, req(n), T0 + n * 600, LIMITS)
        await attempt(store, req(1), T0 + 2400, LIMITS)  # a number it asked for before
        error = await refused(store, req(4), T0 + 3000)
        assert (error.http_status, error.reason, error.retry_after) == (
            429, "distinct_numbers", 86_400,
        )  # fmt: skip
        blocked = await refused(store, req(1), T0 + 4000)
        assert (blocked.reason, blocked.retry_after) == ("ip_flagged", 86_400 - 1000)
        await store.reserve(req(4, ip="198.51.100.9"), LIMITS, T0 + 4000)
        await store.reserve(req(5), LIMITS, T0 + 3000 + 86_400)

    async def test_a_flagged_ip_is_refused_until_its_block_ends(self, store: QuotaStore) -> None:
        """flag_ip blocks an address; a shorter flag never shortens a longer block."""
        await store.flag_ip("203.0.113.7", 600, now=T0)
        await store.flag_ip("203.0.113.7", 60, now=T0)
        error = await refused(store, req(), T0 + 100)
        assert (error.http_status, error.reason, error.retry_after) == (429, "ip_flagged", 500)
        await store.reserve(req(), LIMITS, T0 + 600)

    async def test_refused_requests_are_not_counted(self, store: QuotaStore) -> None:
        """A refusal records nothing: it uses none of the IP's hourly allowance."""
        limits = quota_limits(per_ip_hourly=2, distinct_numbers_per_ip_daily=10)
        await store.reserve(req(1), limits, T0)
        for _ in range(5):
            await refused(store, req(1), T0 + 1, limits)
        await store.reserve(req(2), limits, T0 + 2)


def number(text: str, region: str = "US", ip: str = "203.0.113.7") -> QuotaRequest:
    """A request for ``text`` (a fictional number) from ``ip``."""
    return QuotaRequest.for_number(normalise(text, region), ip, KEY)


class TestPerDestination:
    async def test_the_twenty_first_call_into_one_range_in_a_day_is_refused(
        self, store: QuotaStore
    ) -> None:
        """Twenty calls to +1 202 555 01nn from many IPs fill the range's day; a number
        in another range passes; a day after the first call the range has room again."""
        limits = QuotaLimits(per_country_daily=10_000)  # per_prefix_daily: the default 20
        for n in range(20):
            await attempt(store, req(n, ip=f"198.51.100.{n + 1}"), T0 + n * 60, limits)
        error = await refused(store, req(40, ip="192.0.2.1"), T0 + 1200, limits)
        assert (error.http_status, error.reason) == (429, "prefix_daily")
        assert error.retry_after == 86_400 - 1200  # when the first call leaves the day
        assert "destination" in error.message
        await store.reserve(number("+1 202 556 0140", ip="192.0.2.1"), limits, T0 + 1200)
        await store.reserve(req(40, ip="192.0.2.1"), limits, T0 + 86_400)

    async def test_a_country_code_has_its_own_daily_limit(self, store: QuotaStore) -> None:
        """Calls to +1 numbers in different ranges share the country code's day; Canada
        is +1 too; a +44 number is another destination."""
        limits = QuotaLimits(per_country_daily=3)
        for n, text in enumerate(("+1 202 555 0101", "+1 212 555 0102", "+1 415 555 0103")):
            await attempt(store, number(text, ip=f"198.51.100.{n + 1}"), T0 + n, limits)
        canada = number("+1 613 555 0104", "CA", ip="192.0.2.9")
        error = await refused(store, canada, T0 + 10, limits)
        assert (error.http_status, error.reason, error.retry_after) == (
            429, "country_daily", 86_390,
        )  # fmt: skip
        await store.reserve(number("+44 20 7946 0123", "GB", ip="192.0.2.9"), limits, T0 + 10)

    async def test_a_full_range_refuses_opted_out_and_other_numbers_alike(
        self, store: QuotaStore
    ) -> None:
        """Destination rules run before the number's: in a full range, a do-not-call
        number and any other number get the same refusal (no opt-out oracle)."""
        limits = quota_limits(per_prefix_daily=2)
        for n in (1, 2):
            await attempt(store, req(n, ip=f"198.51.100.{n}"), T0 + n, limits)
        opted_out = QuotaRequest.for_number(
            normalise("+1 202 555 0109", "US"), "192.0.2.1", KEY, do_not_call=True
        )
        plain = number("+1 202 555 0108", ip="192.0.2.2")
        first = await refused(store, opted_out, T0 + 10, limits)
        second = await refused(store, plain, T0 + 10, limits)
        assert (first.reason, first.http_status, first.retry_after, first.message) == (
            second.reason, second.http_status, second.retry_after, second.message,
        )  # fmt: skip
        assert first.reason == "prefix_daily"

    async def test_refused_calls_do_not_fill_a_range(self, store: QuotaStore) -> None:
        """Only granted calls count toward a destination: refusals for an in-flight
        number leave the range's allowance untouched."""
        limits = quota_limits(per_prefix_daily=2)
        await store.reserve(req(1), limits, T0)
        for ip in range(5):
            assert (await refused(store, req(1, ip=f"198.51.100.{ip}"), T0 + 1, limits)).reason == (
                "number_in_flight"
            )
        await store.reserve(req(2, ip="192.0.2.1"), limits, T0 + 2)


class TestService:
    async def test_no_call_beyond_the_concurrency_limit(self, store: QuotaStore) -> None:
        """With every line busy a request gets 503 'capacity'; a finished call frees a line."""
        limits = quota_limits(max_concurrent_calls=2)
        first = await bind(store, await store.reserve(req(1, ip="192.0.2.1"), limits, T0), T0)
        await store.reserve(req(2, ip="198.51.100.1"), limits, T0)
        error = await refused(store, req(3, ip="203.0.113.1"), T0, limits)
        assert (error.http_status, error.reason, error.retry_after) == (503, "capacity", 60)
        await store.release(first, now=T0 + 30)
        await store.reserve(req(3, ip="203.0.113.1"), limits, T0 + 30)

    async def test_the_daily_spend_cap_counts_reservations_until_they_are_settled(
        self, store: QuotaStore
    ) -> None:
        """Reservations fill the cap (503 until UTC midnight); settling one to its real cost
        (adjust_spend by the difference) makes room; a new UTC day starts empty."""
        limits = quota_limits(daily_spend_cap_cents=300)  # two reservations of 150
        await store.reserve(req(1, ip="192.0.2.1"), limits, T0)
        await store.reserve(req(2, ip="198.51.100.1"), limits, T0)
        error = await refused(store, req(3, ip="203.0.113.1"), T0, limits)
        assert (error.http_status, error.reason, error.retry_after) == (503, "spend_cap", 6400)
        day = int(T0 // 86_400)
        assert await store.spend(day) == 300 * MICROS_PER_CENT
        await store.adjust_spend(day, 14_000 - 150 * MICROS_PER_CENT)  # cost 1.4 cents
        assert await store.spend(day) == 150 * MICROS_PER_CENT + 14_000
        assert (await refused(store, req(3, ip="203.0.113.1"), T0, limits)).reason == "spend_cap"
        await store.adjust_spend(day, 14_000 - 150 * MICROS_PER_CENT)
        await store.reserve(req(3, ip="203.0.113.1"), limits, T0 + 3)
        assert (
            await refused(store, req(4, ip="203.0.113.9"), T0 + 4, limits)
        ).reason == "spend_cap"
        await store.reserve(req(4, ip="203.0.113.9"), limits, T0 + 6400)  # a new UTC day

    async def test_no_spend_cap_when_it_is_none(self, store: QuotaStore) -> None:
        """daily_spend_cap_cents=None disables the cap."""
        limits = quota_limits(daily_spend_cap_cents=None, max_rate_cents_per_minute=10**6)
        await store.reserve(req(1), limits, T0)


class TestAtomicity:
    async def test_fifty_concurrent_requests_for_one_number_yield_one_call(
        self, store: QuotaStore
    ) -> None:
        """50 concurrent identical requests produce exactly one reservation (security.md 10)."""
        results = await asyncio.gather(
            *(store.reserve(req(7), LIMITS, T0) for _ in range(50)), return_exceptions=True
        )
        granted = [r for r in results if isinstance(r, Reservation)]
        refusals = [r for r in results if isinstance(r, PolicyRejected)]
        assert len(granted) == LIMITS.per_number_in_flight == 1
        assert len(refusals) == 49

    async def test_fifty_concurrent_requests_from_many_ips_yield_one_call(
        self, store: QuotaStore
    ) -> None:
        """Spreading the race over 50 networks still gives one call to the number."""
        results = await asyncio.gather(
            *(store.reserve(req(7, ip=f"198.51.{i}.1"), LOOSE, T0) for i in range(50)),
            return_exceptions=True,
        )
        assert sum(isinstance(r, Reservation) for r in results) == 1
        assert {r.reason for r in results if isinstance(r, PolicyRejected)} == {"number_in_flight"}

    async def test_fifty_concurrent_requests_fill_exactly_the_free_lines(
        self, store: QuotaStore
    ) -> None:
        """50 concurrent requests for different numbers get exactly max_concurrent_calls lines."""
        results = await asyncio.gather(
            *(store.reserve(req(i, ip=f"198.51.{i}.1"), LOOSE, T0) for i in range(50)),
            return_exceptions=True,
        )
        assert sum(isinstance(r, Reservation) for r in results) == LOOSE.max_concurrent_calls
        assert {r.reason for r in results if isinstance(r, PolicyRejected)} == {"capacity"}


class TestCallSlots:
    async def test_any_process_releases_a_call_s_slots_by_its_id_once(
        self, store: QuotaStore, twin: QuotaStore
    ) -> None:
        """A slot held under a call id is freed by another process knowing only that id;
        a second release frees nothing."""
        limits = quota_limits(max_concurrent_calls=1)
        call_id = await bind(store, await store.reserve(req(1), limits, T0), T0)
        assert (await refused(store, req(2, ip="198.51.100.1"), T0, limits)).reason == "capacity"
        assert await twin.release(call_id, now=T0 + 5) is True
        assert await twin.release(call_id, now=T0 + 6) is False
        assert await store.release(call_id, now=T0 + 7) is False
        await store.reserve(req(2, ip="198.51.100.1"), limits, T0 + 8)
        assert await store.held(T0 + 8) == {}

    async def test_a_held_slot_expires_on_its_own_at_its_until(self, store: QuotaStore) -> None:
        """Nobody releases the call: its slots (the line and the number) free themselves at
        ``until``, not before."""
        limits = quota_limits(max_concurrent_calls=1, per_number_cooldown_s=1)
        call_id = await bind(store, await store.reserve(req(1), limits, T0), T0, ttl=700)
        assert await store.held(T0 + 699) == {call_id: T0}
        assert (await refused(store, req(1), T0 + 699, limits)).reason == "number_in_flight"
        assert await store.held(T0 + 700) == {}
        await store.reserve(req(1), limits, T0 + 700)

    async def test_only_reservations_held_by_a_call_are_listed(self, store: QuotaStore) -> None:
        """held() names calls; a reservation no call holds yet is not one (and still counts)."""
        limits = quota_limits(max_concurrent_calls=2)
        await store.reserve(req(1), limits, T0)
        call_id = await bind(store, await store.reserve(req(2, ip="198.51.100.1"), limits, T0), T0)
        assert await store.held(T0 + 1) == {call_id: T0}
        assert (await refused(store, req(3, ip="192.0.2.3"), T0 + 1, limits)).reason == "capacity"

    async def test_a_slot_is_held_again_for_a_live_call_that_lost_it(
        self, store: QuotaStore
    ) -> None:
        """A fresh hold (no reservation) takes a line and the number; only_if_missing leaves
        a call that holds a slot as it is."""
        limits = quota_limits(max_concurrent_calls=1)
        number_key = req(1).number_key
        assert await store.hold("call_a", number_key, until=T0 + 600, now=T0) is True
        assert (await refused(store, req(2, ip="198.51.100.1"), T0, limits)).reason == "capacity"
        again = await store.hold(
            "call_a", number_key, until=T0 + 900, now=T0 + 10, only_if_missing=True
        )
        assert again is False
        assert await store.held(T0 + 10) == {"call_a": T0}
        assert await store.held(T0 + 600) == {}


class TestSpendCounter:
    async def test_an_unknown_day_is_refused_only_when_the_caller_requires_it(
        self, store: QuotaStore
    ) -> None:
        """Without a counter for today, require_spend raises SpendUnknown and records
        nothing; once restored, the reservation is booked on top of the restored sum."""
        day = int(T0 // 86_400)
        assert await store.spend(day) is None
        with pytest.raises(SpendUnknown):
            await store.reserve(req(1), LIMITS, T0, require_spend=True)
        assert await store.restore_spend(day, 42) is True
        assert await store.restore_spend(day, 99) is False  # set once: never overwritten
        await store.reserve(req(1), LIMITS, T0, require_spend=True)  # no cool-down: unrecorded
        assert await store.spend(day) == 42 + 150 * MICROS_PER_CENT

    async def test_adjusting_an_unknown_day_writes_nothing(self, store: QuotaStore) -> None:
        """adjust_spend on a day without a counter leaves it unknown (the ledger rebuilds it)."""
        day = int(T0 // 86_400)
        await store.adjust_spend(day, -5)
        assert await store.spend(day) is None
        await store.restore_spend(day, 10)
        await store.adjust_spend(day, -5)
        assert await store.spend(day) == 5

    async def test_the_cap_compares_exact_micro_dollars(self, store: QuotaStore) -> None:
        """A day booked 1 µUSD past room for one more reservation refuses it; settled down
        by that 1 µUSD it admits it."""
        limits = quota_limits(daily_spend_cap_cents=300)
        day = int(T0 // 86_400)
        await store.restore_spend(day, 150 * MICROS_PER_CENT + 1)
        assert (await refused(store, req(1), T0, limits)).reason == "spend_cap"
        await store.adjust_spend(day, -1)
        await store.reserve(req(1), limits, T0)
        assert (await store.spend(day)) == 300 * MICROS_PER_CENT
