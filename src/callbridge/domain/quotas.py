"""Quotas, as a pure decision over counters (security.md 4, 6-14, 45).

:class:`QuotaLimits` and :func:`evaluate_quotas` are the decision a
:class:`~callbridge.ports.QuotaStore` applies atomically to its
counters. Rules run in :data:`QUOTA_RULES` order: who asks, then where the call goes
(the number's country calling code and its block of 10,000 numbers), then the number,
then the service.

Every per-number refusal reads the same and carries the same ``Retry-After``
(:func:`number_unavailable`), so nobody can learn from a refusal whether a number was
called recently or opted out (security.md 14). The destination rules run *before* the
per-number ones for the same reason: a number range that is full refuses every number
in it alike, opted out or not.

Rate-limit stores only ever see numbers and number ranges through :func:`hashed`
(security.md 45).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
from dataclasses import dataclass
from typing import Final, Literal, get_args

from callbridge.domain.phone import PhoneNumber
from callbridge.domain.spend import cents_to_micros
from callbridge.errors import ConfigError, PolicyRejected

HOUR: Final = 3600
DAY: Final = 86400
CAPACITY_RETRY_AFTER_S: Final = 60

QuotaRule = Literal[
    "ip_flagged",
    "ip_hourly",
    "ip_block_hourly",
    "distinct_numbers",
    "country_daily",
    "prefix_daily",
    "do_not_call",
    "number_in_flight",
    "number_cooldown",
    "number_hourly",
    "number_daily",
    "capacity",
    "spend_cap",
]
QUOTA_RULES: Final[tuple[QuotaRule, ...]] = get_args(QuotaRule)
"""Every rule, in the order they are checked: the requester first (so a blocked
requester learns nothing about numbers), then the destination, then the number, then
the service."""

NUMBER_RULES: Final = frozenset(
    {"do_not_call", "number_in_flight", "number_cooldown", "number_hourly", "number_daily"}
)
REQUESTER_RULES: Final = frozenset(
    {"ip_flagged", "ip_hourly", "ip_block_hourly", "distinct_numbers"}
)
"""Rules about who asks. A request that passes them *counts* as a request for its number
(security.md 9: "requesting more than N distinct numbers"), even if a later rule refuses it."""
DESTINATION_RULES: Final = frozenset({"country_daily", "prefix_daily"})
"""Rules about where calls go: a country calling code, a block of 10,000 numbers."""
PREFIX_HIDDEN_DIGITS: Final = 4
"""A number's range is its E.164 form without its last four digits (``+1202555``)."""
NUMBER_UNAVAILABLE_MESSAGE: Final = "We can't call this number. Please get in touch another way."
"""The one body of every refusal about the number itself (security.md 14: the do-not-call
list and the per-number limits look the same). An opted-out number stays opted out, so the
text invites no retry ("later"); the Retry-After header still tells a client when a
per-number limit would allow the number again (and the same for a listed one)."""


@dataclass(frozen=True, slots=True)
class QuotaLimits:
    """Quota settings (security.md 6-12); counts are per rolling window.

    Attributes:
        per_number_in_flight: calls to one number at once.
        per_number_hourly: attempts to one number per rolling hour.
        per_number_daily: attempts to one number per rolling day.
        per_number_cooldown_s: seconds after an attempt before the next one.
        per_ip_hourly: attempts from one IP per rolling hour.
        per_ip_block_hourly: attempts from one /24 (IPv4) or /64 (IPv6) per hour.
        distinct_numbers_per_ip_daily: different numbers one IP may ask for per day;
            one more blocks the IP for ``ip_block_escalation_s``.
        per_country_daily: calls to one country calling code per rolling day, from
            everyone (a spike to one destination is the shape of toll fraud).
        per_prefix_daily: calls into one block of 10,000 numbers (the number without
            its last four digits) per rolling day, from everyone: pumping walks a
            range of numbers, which per-number limits alone never notice.
        max_concurrent_calls: calls in flight service-wide.
        daily_spend_cap_cents: booked spend per UTC day (reservations of calls not yet
            settled, then estimates and prices); ``None``: no cap.
        time_limit_minutes: the longest call (Twilio ``TimeLimit``).
        max_rate_cents_per_minute: the highest per-minute cost among allowed countries,
            telephony and agent together.
        ip_block_escalation_s: how long an escalated IP stays blocked.
        number_retry_after_s: the one ``Retry-After`` of every per-number refusal.
    """

    per_number_in_flight: int = 1
    per_number_hourly: int = 3
    per_number_daily: int = 5
    per_number_cooldown_s: int = 600
    per_ip_hourly: int = 10
    per_ip_block_hourly: int = 30
    distinct_numbers_per_ip_daily: int = 3
    per_country_daily: int = 200
    per_prefix_daily: int = 20
    max_concurrent_calls: int = 10
    daily_spend_cap_cents: int | None = 5000
    time_limit_minutes: int = 10
    max_rate_cents_per_minute: int = 15
    ip_block_escalation_s: int = 86400
    number_retry_after_s: int = 3600

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 0):
                raise ConfigError(f"quota limit {name} must be a whole number >= 0, not {value!r}")
        if not 1 <= self.per_number_cooldown_s <= DAY or self.ip_block_escalation_s < 1:
            raise ConfigError("quota cool-down must be 1 s to 1 day and escalation at least 1 s")

    @property
    def reservation_cents(self) -> int:
        """What one call may cost at most: its time limit at the highest rate."""
        return self.time_limit_minutes * self.max_rate_cents_per_minute

    @property
    def in_flight_ttl_s(self) -> int:
        """How long an unreleased in-flight slot lives: the time limit plus 5 minutes."""
        return self.time_limit_minutes * 60 + 300


@dataclass(frozen=True, slots=True)
class QuotaRequest:
    """Who asks to call what, as the quota store sees it (no plain number).

    Attributes:
        number_key: :func:`hashed` of the E.164 number.
        ip: the requester's address (see :func:`normalise_ip`).
        country_code: the number's country calling code (``"1"``); public data.
        prefix_key: :func:`hashed` of the number's range (see
            :data:`PREFIX_HIDDEN_DIGITS`), hashed because a range and a masked
            number together would give the whole number.
        do_not_call: the number is on the do-not-call list. It is refused as a
            per-number rule, *after* the requester's rules, so a refusal never tells a
            rate-limited requester which numbers opted out (security.md 14, 20).
    """

    number_key: str
    ip: str
    do_not_call: bool = False
    country_code: str = ""
    prefix_key: str = ""

    @classmethod
    def for_number(
        cls, number: PhoneNumber, ip: str, key: bytes, *, do_not_call: bool = False
    ) -> QuotaRequest:
        """Build a request for ``number`` from ``ip``, hashing the number with ``key``."""
        return cls(
            number_key=hashed(number.e164, key),
            ip=normalise_ip(ip),
            do_not_call=do_not_call,
            country_code=str(number.country_code),
            prefix_key=hashed(number_range(number.e164), key),
        )

    @property
    def ip_block(self) -> str:
        """The requester's /24 or /64 aggregate."""
        return ip_block(self.ip)


@dataclass(frozen=True, slots=True)
class Reservation:
    """A granted attempt, to be released when the call ends.

    Attributes:
        id: an opaque random id.
        number_key: the hashed number it is for.
        ip: the requester.
        reserved_cents: spend held for the call until it is released.
        spend_day: the UTC day (days since the epoch) the spend is booked on.
        created_at: when it was granted (the ``now`` given to ``reserve``).
    """

    id: str
    number_key: str
    ip: str
    reserved_cents: int
    spend_day: int
    created_at: float


@dataclass(frozen=True, slots=True)
class QuotaCounters:
    """A store's counters for one request, already pruned to their windows.

    Attributes:
        ip_flagged_until: when the requester's escalation block ends (0: none).
        ip_hour: times of the requester's attempts in the last hour, ascending.
        block_hour: times of the requester's block's attempts in the last hour.
        ip_numbers_day: distinct numbers the requester asked for in the last day.
        number_seen_from_ip: whether this number is one of them.
        country_day: times of calls to the number's country code in the last day.
        prefix_day: times of calls into the number's range in the last day.
        number_do_not_call: the number is on the do-not-call list.
        number_in_flight: calls to this number in flight.
        number_day: times of attempts to this number in the last day, ascending.
        concurrent_calls: calls in flight service-wide.
        spent_today_micros: spend booked on today's UTC day, in µUSD
            (:mod:`callbridge.domain.spend`).
    """

    ip_flagged_until: float = 0.0
    ip_hour: tuple[float, ...] = ()
    block_hour: tuple[float, ...] = ()
    ip_numbers_day: int = 0
    number_seen_from_ip: bool = False
    country_day: tuple[float, ...] = ()
    prefix_day: tuple[float, ...] = ()
    number_do_not_call: bool = False
    number_in_flight: int = 0
    number_day: tuple[float, ...] = ()
    concurrent_calls: int = 0
    spent_today_micros: int = 0


@dataclass(frozen=True, slots=True)
class QuotaRefusal:
    """Which rule refused, and after how many seconds it would pass."""

    rule: QuotaRule
    retry_after: int


def evaluate_quotas(c: QuotaCounters, limits: QuotaLimits, now: float) -> QuotaRefusal | None:
    """Decide a request from its counters: the first failing rule, or ``None``.

    Rules are checked in :data:`QUOTA_RULES` order. A store records the number among
    the requester's distinct numbers whenever the requester's rules pass (refusal by
    a later rule included), and records everything else only when all pass. The Redis
    store's Lua script implements this same function; the shared contract tests keep
    them equal.
    """

    def refuse(rule: QuotaRule, seconds: float) -> QuotaRefusal:
        return QuotaRefusal(rule, max(1, math.ceil(seconds)))

    if c.ip_flagged_until > now:
        return refuse("ip_flagged", c.ip_flagged_until - now)
    if (wait := window_wait(c.ip_hour, limits.per_ip_hourly, HOUR, now)) is not None:
        return refuse("ip_hourly", wait)
    if (wait := window_wait(c.block_hour, limits.per_ip_block_hourly, HOUR, now)) is not None:
        return refuse("ip_block_hourly", wait)
    if not c.number_seen_from_ip and c.ip_numbers_day >= limits.distinct_numbers_per_ip_daily:
        return refuse("distinct_numbers", limits.ip_block_escalation_s)
    if (wait := window_wait(c.country_day, limits.per_country_daily, DAY, now)) is not None:
        return refuse("country_daily", wait)
    if (wait := window_wait(c.prefix_day, limits.per_prefix_daily, DAY, now)) is not None:
        return refuse("prefix_daily", wait)
    if c.number_do_not_call:
        return refuse("do_not_call", limits.number_retry_after_s)
    if c.number_in_flight >= limits.per_number_in_flight:
        return refuse("number_in_flight", 1)
    if c.number_day and c.number_day[-1] > now - limits.per_number_cooldown_s:
        return refuse("number_cooldown", c.number_day[-1] + limits.per_number_cooldown_s - now)
    last_hour = tuple(t for t in c.number_day if t > now - HOUR)
    if (wait := window_wait(last_hour, limits.per_number_hourly, HOUR, now)) is not None:
        return refuse("number_hourly", wait)
    if (wait := window_wait(c.number_day, limits.per_number_daily, DAY, now)) is not None:
        return refuse("number_daily", wait)
    if c.concurrent_calls >= limits.max_concurrent_calls:
        return refuse("capacity", CAPACITY_RETRY_AFTER_S)
    cap = limits.daily_spend_cap_cents
    if cap is not None and c.spent_today_micros + cents_to_micros(
        limits.reservation_cents
    ) > cents_to_micros(cap):
        return refuse("spend_cap", DAY - now % DAY)
    return None


def window_wait(times: tuple[float, ...], limit: int, window: int, now: float) -> float | None:
    """Seconds until a rolling window holding ``times`` (ascending) has room, or ``None``."""
    if len(times) < limit:
        return None
    if limit == 0:
        return float(window)
    return times[len(times) - limit] + window - now


def quota_error(refusal: QuotaRefusal, limits: QuotaLimits) -> PolicyRejected:
    """The exception a quota refusal becomes, with its status, message and Retry-After."""
    rule, after = refusal.rule, refusal.retry_after
    if rule in NUMBER_RULES:
        return number_unavailable(rule, limits)
    if rule == "capacity":
        message = "All our lines are busy right now. Please try again in a minute."
        return PolicyRejected(message, reason=rule, http_status=503, retry_after=after)
    if rule in DESTINATION_RULES:
        message = "We can't place more calls to this destination today. Please try again later."
        return PolicyRejected(message, reason=rule, http_status=429, retry_after=after)
    if rule == "spend_cap":
        message = "We can't place any more calls today. Please try again tomorrow."
        return PolicyRejected(message, reason=rule, http_status=503, retry_after=after)
    minutes = max(1, math.ceil(after / 60))
    message = (
        "Too many call requests from your network. "
        f"Please try again in {minutes} minute{'s' if minutes != 1 else ''}."
    )
    return PolicyRejected(message, reason=rule, http_status=429, retry_after=after)


def number_unavailable(reason: str, limits: QuotaLimits) -> PolicyRejected:
    """The one refusal for a number that can't be called now (security.md 14).

    Per-number quotas, cool-down, in-flight — and the do-not-call list, whose
    check should raise this too — all give status 429, the same message and the
    same ``Retry-After``; only ``reason`` (never shown) differs.
    """
    return PolicyRejected(
        NUMBER_UNAVAILABLE_MESSAGE,
        reason=reason,
        http_status=429,
        retry_after=limits.number_retry_after_s,
    )


def hashed(number_e164: str, key: bytes | str) -> str:
    """Key a number for rate-limit stores: HMAC-SHA256, hex, 128 bits (security.md 45).

    Raises:
        ConfigError: the key is empty.
    """
    secret = key.encode() if isinstance(key, str) else key
    if not secret:
        raise ConfigError("the number hashing key must not be empty")
    return hmac.new(secret, number_e164.encode(), hashlib.sha256).hexdigest()[:32]


def number_range(e164: str) -> str:
    """The block of 10,000 numbers ``e164`` is in: its E.164 form less the last four digits.

    Too short a number (never a valid one) is its own range.
    """
    return e164[:-PREFIX_HIDDEN_DIGITS] if len(e164) > PREFIX_HIDDEN_DIGITS + 2 else e164


def normalise_ip(ip: str) -> str:
    """Canonical text of an address (IPv4-mapped IPv6 becomes IPv4); other text as is."""
    try:
        address = ipaddress.ip_address(ip.strip())
    except ValueError:
        return ip.strip()
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def ip_block(ip: str) -> str:
    """The aggregate an address belongs to: its /24 (IPv4) or /64 (IPv6) network.

    Text that is not an IP address (a test client's ``"testclient"``) is its own block.
    """
    text = normalise_ip(ip)
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return text
    prefix = 24 if address.version == 4 else 64
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))
