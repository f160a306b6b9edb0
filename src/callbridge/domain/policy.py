"""Which numbers may be called, and when: pure decisions (security.md 15-17, 44).

Two layers, cheapest first, none of which does I/O:

* :class:`NumberPolicy` — which numbers may be called at all: an explicit country
  allowlist and an allowlist of libphonenumber types; short codes and emergency
  numbers never (security.md 15-17). Refusals are a helpful 422, because they
  follow from public numbering data (security.md 14).
* :class:`QuietHours` — calls only inside a daily window in the callee's local
  time, in *every* time zone the number may ring in (security.md 44).

The third layer, quotas, is in :mod:`callbridge.domain.quotas`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Final
from zoneinfo import ZoneInfo

import phonenumbers
from phonenumbers import geocoder, shortnumberinfo

from callbridge.domain.phone import (
    PhoneNumber,
    normalise,
    refuse_extension,
    short_number_kind,
)
from callbridge.errors import ConfigError, InvalidSchedule, OutsideCallingHours, PolicyRejected

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
            InvalidNumber: the number has an extension, which cannot be dialled.
        """
        refuse_extension(number)
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

    def check(self, number: PhoneNumber, now_utc: datetime, *, at: datetime | None = None) -> None:
        """Refuse a call outside the window in any of the number's time zones.

        Args:
            number: the number to call; a number with no known zone is refused.
            now_utc: the current time, timezone-aware.
            at: when the call would be placed (a scheduled call); ``now_utc`` if None.

        Raises:
            OutsideCallingHours: 409, ``reason="quiet_hours"``, with the next allowed
                times and ``retry_after`` = seconds until the window is open in every
                zone (``None`` if it never is).
        """
        zones = [ZoneInfo(name) for name in number.timezones]
        when = at or now_utc
        opens = self.opens_at(zones, when)
        if opens is not None and opens <= when:
            return
        window = f"{self.start:%H:%M} and {self.end:%H:%M}"
        if opens is None:
            raise OutsideCallingHours(
                f"We only call between {window} local time, and can't tell when that is"
                " for this number.",
                next_allowed=[],
            )
        local = ", ".join(
            dict.fromkeys(f"{opens.astimezone(zone):%H:%M} {zone.key} time" for zone in zones[:3])
        )
        slots = self.next_allowed(number, when)
        later = "Please pick another time" if at is not None else "Please try again"
        raise OutsideCallingHours(
            f"It's outside calling hours where this number is: we only call between {window}"
            f" local time. {later} after {local}, or choose one of the times offered.",
            next_allowed=[slot.as_json() for slot in slots],
            retry_after=max(1, math.ceil((opens - now_utc).total_seconds())),
        )

    def next_allowed(
        self, number: PhoneNumber, after_utc: datetime, count: int = 3
    ) -> list[CallingSlot]:
        """The next ``count`` times a call may be placed, from ``after_utc`` on.

        The first is the moment the window opens (or ``after_utc`` itself when it is
        open); the others are the openings of the following days' windows. Each is
        given in UTC and in the number's (first) time zone.

        Raises:
            ValueError: ``after_utc`` is naive.
        """
        zones = [ZoneInfo(name) for name in number.timezones]
        if after_utc.tzinfo is None:
            raise ValueError("after_utc must be timezone-aware")
        if not zones:
            return []
        common = self._windows(zones[0], after_utc, days=count + 2)
        for zone in zones[1:]:
            common = _intersect(common, self._windows(zone, after_utc, days=count + 2))
        # A window open for less than a minute after ``after_utc`` is no offer.
        starts = [
            max(begin, after_utc)
            for begin, end in common
            if end - max(begin, after_utc) >= timedelta(minutes=1)
        ]
        return [CallingSlot(start.astimezone(UTC), zones[0]) for start in starts[:count]]

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

    def _windows(
        self, zone: ZoneInfo, now_utc: datetime, days: int = 2
    ) -> list[tuple[datetime, datetime]]:
        today = now_utc.astimezone(zone).date()
        spans = []
        for offset in range(-1, days + 1):
            day = today + timedelta(days=offset)
            end_day = day if self.end > self.start else day + timedelta(days=1)
            begin = datetime.combine(day, self.start, tzinfo=zone).astimezone(UTC)
            end = datetime.combine(end_day, self.end, tzinfo=zone).astimezone(UTC)
            spans.append((begin, end))
        return spans


@dataclass(frozen=True, slots=True)
class CallingSlot:
    """A time a call may be placed, and the callee's zone to show it in."""

    utc: datetime
    zone: ZoneInfo

    def as_json(self) -> dict[str, str]:
        """``{"utc", "local", "zone"}`` (ISO 8601) for the 409 body and the page."""
        return {
            "utc": self.utc.isoformat().replace("+00:00", "Z"),
            "local": self.utc.astimezone(self.zone).isoformat(),
            "zone": self.zone.key,
        }


def check_schedule_time(at: datetime, now_utc: datetime, *, max_days: int) -> datetime:
    """Check a requested call time: not in the past, at most ``max_days`` ahead.

    A time less than a minute ahead is read as "now-ish" and is refused as past, so
    that a call the visitor could have asked for at once is not recorded as scheduled.

    Returns:
        ``at`` in UTC.

    Raises:
        InvalidSchedule: 422 ``schedule_naive`` (no offset), ``schedule_in_past``
            or ``schedule_too_far``.
    """
    if at.tzinfo is None or at.utcoffset() is None:
        raise InvalidSchedule(
            "The call time must include a time zone offset, like 2026-12-02T09:00:00-05:00.",
            code="schedule_naive",
        )
    at_utc = at.astimezone(UTC)
    if at_utc < now_utc + timedelta(minutes=1):
        raise InvalidSchedule(
            "That time has already passed. Please pick a time in the future.",
            code="schedule_in_past",
        )
    if at_utc > now_utc + timedelta(days=max_days):
        raise InvalidSchedule(
            f"We can schedule a call at most {max_days} days ahead. Please pick an earlier time.",
            code="schedule_too_far",
        )
    return at_utc


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
