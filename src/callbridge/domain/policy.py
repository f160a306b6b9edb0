"""The abuse policy, as pure decisions (security.md sections A and B, 44, 45).

Three layers, cheapest first, none of which does I/O:

* :class:`NumberPolicy` — which numbers may be called at all: an explicit country
  allowlist and an allowlist of libphonenumber types; short codes and emergency
  numbers never (security.md 15-17). Refusals are a helpful 422, because they
  follow from public numbering data (security.md 14).
* :class:`QuietHours` — calls only inside a daily window in the callee's local
  time, in *every* time zone the number may ring in (security.md 44).
* Quotas — :class:`QuotaLimits` and :func:`evaluate_quotas`, the decision a
  :class:`~callbridge.adapters.quota.port.QuotaStore` applies atomically to its
  counters (security.md 6-12). Every per-number refusal reads the same and carries
  the same ``Retry-After`` (:func:`number_unavailable`), so nobody can learn from
  a refusal whether a number was called recently or opted out (security.md 14).

Rate-limit stores only ever see numbers through :func:`hashed` (security.md 45).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Final, Literal, get_args
from zoneinfo import ZoneInfo

import phonenumbers
from phonenumbers import geocoder, shortnumberinfo

from callbridge.domain.phone import PhoneNumber, normalise, short_number_kind
from callbridge.errors import ConfigError, PolicyRejected

# --- number policy ---------------------------------------------------------------------

DEFAULT_COUNTRIES: Final = frozenset({"US", "CA"})
DEFAULT_TYPES: Final = frozenset({"MOBILE", "FIXED_LINE", "FIXED_LINE_OR_MOBILE"})
_KNOWN_TYPES: Final = frozenset(
    name for name in vars(phonenumbers.PhoneNumberType) if name.isupper()
)

_MSG_SPECIAL = "Premium-rate, toll-free and other special numbers can't be called."
_MSG_EMERGENCY = (
    "Emergency numbers can't be called from here. In an emergency, dial it from your own phone."
)
_MSG_SHORT_CODE = "Short codes and service numbers can't be called."


@dataclass(frozen=True, slots=True)
class NumberPolicy:
    """Which valid numbers may be called (security.md 15-17).

    Attributes:
        allowed_countries: ISO 3166-1 regions that may be called; other regions of a
            shared calling code (``+1 876`` Jamaica in the NANP) are refused.
        allowed_types: libphonenumber type names that may be called.
    """

    allowed_countries: frozenset[str] = DEFAULT_COUNTRIES
    allowed_types: frozenset[str] = DEFAULT_TYPES

    def __post_init__(self) -> None:
        unknown = sorted(self.allowed_countries - phonenumbers.SUPPORTED_REGIONS)
        if unknown or not self.allowed_countries:
            raise ConfigError(f"allowed countries must be ISO region codes, not {unknown}")
        bad_types = sorted(self.allowed_types - _KNOWN_TYPES)
        if bad_types:
            raise ConfigError(f"unknown phone number types {bad_types}")

    def screen(self, raw: str, default_region: str) -> PhoneNumber:
        """Normalise typed text and check it: the one call a request needs.

        Args:
            raw: the number as the visitor typed it.
            default_region: the region assumed without an international prefix.

        Returns:
            The callable number.

        Raises:
            PolicyRejected: 422 for an emergency number or short code, a country or
                type that is not allowed.
            InvalidNumber: the text is not a valid phone number.
        """
        kind = short_number_kind(raw, default_region)
        if kind == "emergency":
            raise PolicyRejected(_MSG_EMERGENCY, reason="emergency", http_status=422)
        if kind == "short_code":
            raise PolicyRejected(_MSG_SHORT_CODE, reason="short_code", http_status=422)
        number = normalise(raw, default_region)
        self.check(number)
        return number

    def check(self, number: PhoneNumber) -> None:
        """Refuse a number this policy does not allow.

        Raises:
            PolicyRejected: 422 with ``reason`` ``"emergency"``, ``"short_code"``,
                ``"country"`` or ``"number_type"``.
        """
        national = number.e164.removeprefix(f"+{number.country_code}")
        if shortnumberinfo.is_emergency_number(national, number.region):
            raise PolicyRejected(_MSG_EMERGENCY, reason="emergency", http_status=422)
        if len(national) < 7:  # no allowed country has subscriber numbers this short
            raise PolicyRejected(_MSG_SHORT_CODE, reason="short_code", http_status=422)
        if number.region not in self.allowed_countries:
            raise PolicyRejected(
                f"We can only call numbers in {_country_list(self.allowed_countries)}.",
                reason="country",
                http_status=422,
            )
        if number.number_type not in self.allowed_types:
            raise PolicyRejected(_MSG_SPECIAL, reason="number_type", http_status=422)


def parse_countries(text: str) -> frozenset[str]:
    """Parse a country allowlist setting such as ``"US,CA"``.

    Raises:
        ConfigError: empty, or a code that is not a supported ISO region.
    """
    codes = frozenset(part.strip().upper() for part in text.split(",") if part.strip())
    unknown = sorted(codes - phonenumbers.SUPPORTED_REGIONS)
    if not codes or unknown:
        raise ConfigError(
            f"CALLBRIDGE_ALLOWED_COUNTRIES must list ISO country codes like US,CA; got {text!r}"
        )
    return codes


def _country_list(regions: frozenset[str]) -> str:
    names = []
    for region in sorted(regions, key=lambda code: (code != "US", code)):
        example = phonenumbers.example_number(region)
        name = geocoder.country_name_for_number(example, "en") if example else ""
        name = name or region
        names.append(f"the {name}" if name.startswith(("United ", "Netherlands")) else name)
    if len(names) == 1:
        return names[0]
    return ", ".join(names[:-1]) + " and " + names[-1]


# --- quiet hours -----------------------------------------------------------------------

_HHMM = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


@dataclass(frozen=True, slots=True)
class QuietHours:
    """The daily window in which calls may be placed, in the callee's local time.

    Calls are allowed from ``start`` (inclusive) to ``end`` (exclusive); a window
    whose end is before its start runs past midnight. A number that may ring in
    several zones is called only when the window is open in all of them (the most
    restrictive reading of security.md 44).

    Refusals are **409 Conflict** with ``retry_after``: the request is well formed
    and the number callable, so it is not the visitor's input that is wrong (422);
    it collides with the current time and will succeed later unchanged. 429 stays
    reserved for quotas, whose per-number refusals must all look alike.
    """

    start: time = time(8)
    end: time = time(21)

    def __post_init__(self) -> None:
        if self.start == self.end:
            raise ConfigError("quiet hours: the calling window must not be empty")

    def check(self, number: PhoneNumber, now_utc: datetime) -> None:
        """Refuse a call outside the window in any of the number's time zones.

        Args:
            number: the number to call; a number with no known zone is refused.
            now_utc: the current time, timezone-aware.

        Raises:
            PolicyRejected: 409, ``reason="quiet_hours"``, ``retry_after`` = seconds
                until the window is open in every zone (``None`` if it never is).
        """
        zones = [ZoneInfo(name) for name in number.timezones]
        opens = self.opens_at(zones, now_utc)
        if opens is not None and opens <= now_utc:
            return
        window = f"{self.start:%H:%M} and {self.end:%H:%M}"
        if opens is None:
            raise PolicyRejected(
                f"We only call between {window} local time, and can't tell when that is"
                " for this number.",
                reason="quiet_hours",
                http_status=409,
            )
        local = ", ".join(
            dict.fromkeys(f"{opens.astimezone(zone):%H:%M} {zone.key} time" for zone in zones[:3])
        )
        raise PolicyRejected(
            f"It's outside calling hours where this number is: we only call between {window}"
            f" local time. Please try again after {local}.",
            reason="quiet_hours",
            http_status=409,
            retry_after=max(1, math.ceil((opens - now_utc).total_seconds())),
        )

    def opens_at(self, zones: list[ZoneInfo], now_utc: datetime) -> datetime | None:
        """Return the first instant at or after ``now_utc`` inside the window in all zones.

        Returns:
            ``now_utc`` itself when the window is open now; ``None`` when there are
            no zones or the zones' windows never overlap.

        Raises:
            ValueError: ``now_utc`` is naive.
        """
        if now_utc.tzinfo is None:
            raise ValueError("now_utc must be timezone-aware")
        if not zones:
            return None
        common = self._windows(zones[0], now_utc)
        for zone in zones[1:]:
            common = _intersect(common, self._windows(zone, now_utc))
        for begin, end in common:
            if end > now_utc:
                return max(begin, now_utc)
        return None

    def _windows(self, zone: ZoneInfo, now_utc: datetime) -> list[tuple[datetime, datetime]]:
        today = now_utc.astimezone(zone).date()
        spans = []
        for offset in range(-1, 3):
            day = today + timedelta(days=offset)
            end_day = day if self.end > self.start else day + timedelta(days=1)
            begin = datetime.combine(day, self.start, tzinfo=zone).astimezone(UTC)
            end = datetime.combine(end_day, self.end, tzinfo=zone).astimezone(UTC)
            spans.append((begin, end))
        return spans


def _intersect(
    left: list[tuple[datetime, datetime]], right: list[tuple[datetime, datetime]]
) -> list[tuple[datetime, datetime]]:
    spans = [(max(a, c), min(b, d)) for a, b in left for c, d in right if max(a, c) < min(b, d)]
    return sorted(spans)


def parse_quiet_hours(text: str) -> QuietHours | None:
    """Parse ``CALLBRIDGE_QUIET_HOURS``: ``"08:00-21:00"`` or ``"off"`` (``None``).

    Raises:
        ConfigError: anything else, or an impossible time.
    """
    if text.strip().lower() == "off":
        return None
    match = _HHMM.match(text)
    try:
        if match is None:
            raise ValueError(text)
        h1, m1, h2, m2 = (int(group) for group in match.groups())
        return QuietHours(start=time(h1, m1), end=time(h2, m2))
    except (ValueError, ConfigError) as exc:
        raise ConfigError(
            f"CALLBRIDGE_QUIET_HOURS must look like 08:00-21:00 or be 'off', not {text!r}"
        ) from exc


# --- quotas ----------------------------------------------------------------------------

HOUR: Final = 3600
DAY: Final = 86400
CAPACITY_RETRY_AFTER_S: Final = 60

QuotaRule = Literal[
    "ip_flagged",
    "ip_hourly",
    "ip_block_hourly",
    "distinct_numbers",
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
requester learns nothing about numbers), then the number, then the service."""

NUMBER_RULES: Final = frozenset(
    {"do_not_call", "number_in_flight", "number_cooldown", "number_hourly", "number_daily"}
)
REQUESTER_RULES: Final = frozenset(
    {"ip_flagged", "ip_hourly", "ip_block_hourly", "distinct_numbers"}
)
"""Rules about who asks. A request that passes them *counts* as a request for its number
(security.md 9: "requesting more than N distinct numbers"), even if a later rule refuses it."""
NUMBER_UNAVAILABLE_MESSAGE: Final = "We can't call this number right now. Please try again later."


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
        max_concurrent_calls: calls in flight service-wide.
        daily_spend_cap_cents: reserved + actual spend per UTC day; ``None``: no cap.
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
        do_not_call: the number is on the do-not-call list. It is refused as a
            per-number rule, *after* the requester's rules, so a refusal never tells a
            rate-limited requester which numbers opted out (security.md 14, 20).
    """

    number_key: str
    ip: str
    do_not_call: bool = False

    @classmethod
    def for_number(
        cls, number: PhoneNumber, ip: str, key: bytes, *, do_not_call: bool = False
    ) -> QuotaRequest:
        """Build a request for ``number`` from ``ip``, hashing the number with ``key``."""
        return cls(
            number_key=hashed(number.e164, key), ip=normalise_ip(ip), do_not_call=do_not_call
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
        number_do_not_call: the number is on the do-not-call list.
        number_in_flight: calls to this number in flight.
        number_day: times of attempts to this number in the last day, ascending.
        concurrent_calls: calls in flight service-wide.
        spent_today_cents: spend reserved or incurred on today's UTC day.
    """

    ip_flagged_until: float = 0.0
    ip_hour: tuple[float, ...] = ()
    block_hour: tuple[float, ...] = ()
    ip_numbers_day: int = 0
    number_seen_from_ip: bool = False
    number_do_not_call: bool = False
    number_in_flight: int = 0
    number_day: tuple[float, ...] = ()
    concurrent_calls: int = 0
    spent_today_cents: int = 0


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
    if cap is not None and c.spent_today_cents + limits.reservation_cents > cap:
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
