"""Calls happen only 08:00-21:00 in the callee's time, in every zone (security.md 44)."""

from __future__ import annotations

from datetime import UTC, datetime, time

import pytest

from callbridge.domain.phone import PhoneNumber, normalise
from callbridge.domain.policy import QuietHours, parse_quiet_hours
from callbridge.errors import ConfigError, PolicyRejected

HOURS = QuietHours()
NEW_YORK = normalise("+1 234 567 8900", "US")  # America/New_York
IDAHO = normalise("+1 208 555 0143", "US")  # America/Boise and America/Los_Angeles


def utc(year: int, month: int, day: int, hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def refusal(number: PhoneNumber, now: datetime, hours: QuietHours = HOURS) -> PolicyRejected:
    with pytest.raises(PolicyRejected) as caught:
        hours.check(number, now)
    return caught.value


class TestSingleZone:
    def test_a_call_at_the_start_of_the_window_is_allowed(self) -> None:
        """08:00 EDT (12:00 UTC in July) is inside the window."""
        HOURS.check(NEW_YORK, utc(2024, 7, 1, 12, 0))

    def test_a_call_one_second_early_is_refused_with_409(self) -> None:
        """07:59:59 local is refused (409) with Retry-After 1 and the opening time."""
        error = refusal(NEW_YORK, utc(2024, 7, 1, 11, 59, 59))
        assert error.reason == "quiet_hours"
        assert error.http_status == 409
        assert error.retry_after == 1
        assert "between 08:00 and 21:00 local time" in error.message
        assert "after 08:00 America/New_York time" in error.message

    def test_the_end_of_the_window_is_exclusive(self) -> None:
        """21:00 local is refused until 08:00 the next morning (11 hours later)."""
        HOURS.check(NEW_YORK, utc(2024, 7, 2, 0, 59, 59))
        error = refusal(NEW_YORK, utc(2024, 7, 2, 1, 0))
        assert error.retry_after == 11 * 3600

    def test_winter_time_moves_the_window_in_utc(self) -> None:
        """In January, 08:00 EST is 13:00 UTC: 12:30 UTC is refused, 13:00 allowed."""
        assert refusal(NEW_YORK, utc(2024, 1, 15, 12, 30)).retry_after == 1800
        HOURS.check(NEW_YORK, utc(2024, 1, 15, 13, 0))

    def test_the_window_opening_across_a_dst_change_is_exact(self) -> None:
        """At 03:00 EDT on 10 March 2024 (clocks sprang forward) the wait is 5 hours."""
        assert refusal(NEW_YORK, utc(2024, 3, 10, 7, 0)).retry_after == 5 * 3600


class TestMultiZone:
    def test_the_window_must_be_open_in_every_zone(self) -> None:
        """08:30 in Boise is 07:30 in Los Angeles: refused until 08:00 Pacific."""
        error = refusal(IDAHO, utc(2024, 7, 1, 14, 30))
        assert error.retry_after == 1800
        assert "09:00 America/Boise time" in error.message
        assert "08:00 America/Los_Angeles time" in error.message

    def test_the_evening_ends_with_the_earliest_zone(self) -> None:
        """20:59 Mountain is allowed; 21:00 Mountain (20:00 Pacific) is refused."""
        HOURS.check(IDAHO, utc(2024, 7, 2, 2, 59))
        assert refusal(IDAHO, utc(2024, 7, 2, 3, 0)).reason == "quiet_hours"

    def test_an_alaska_number_follows_its_westernmost_zone(self) -> None:
        """907 rings in Anchorage and Adak; 08:00 Anchorage is still 07:00 in Adak."""
        alaska = normalise("+1 907 555 0143", "US")
        assert set(alaska.timezones) == {"America/Anchorage", "America/Adak"}
        assert refusal(alaska, utc(2024, 7, 1, 16, 0)).retry_after == 3600
        HOURS.check(alaska, utc(2024, 7, 1, 17, 0))

    def test_zones_whose_windows_never_meet_are_refused_without_retry(self) -> None:
        """A one-hour window never open in both London and Tokyo at once: no Retry-After."""
        number = PhoneNumber(
            e164="+12025550143", region="US", country_code=1, number_type="MOBILE",
            timezones=("Europe/London", "Asia/Tokyo"), masked="+1••••••0143",
        )  # fmt: skip
        error = refusal(number, utc(2024, 7, 1, 12), QuietHours(time(9), time(10)))
        assert error.retry_after is None


class TestEdgeCases:
    def test_a_number_without_a_known_zone_is_refused(self) -> None:
        """With no time zone to go by, the call is refused (fail closed)."""
        number = PhoneNumber(
            e164="+12025550143", region="US", country_code=1, number_type="MOBILE",
            timezones=(), masked="+1••••••0143",
        )  # fmt: skip
        error = refusal(number, utc(2024, 7, 1, 16))
        assert error.reason == "quiet_hours"
        assert error.retry_after is None

    def test_an_overnight_window_runs_past_midnight(self) -> None:
        """With 22:00-06:00, 23:00 local is allowed and noon is refused until 22:00."""
        night = QuietHours(time(22), time(6))
        night.check(NEW_YORK, utc(2024, 7, 2, 3, 0))
        assert refusal(NEW_YORK, utc(2024, 7, 1, 16), night).retry_after == 10 * 3600

    def test_a_naive_datetime_is_a_programming_error(self) -> None:
        """now_utc must carry a time zone."""
        with pytest.raises(ValueError, match="timezone-aware"):
            HOURS.check(NEW_YORK, datetime(2024, 7, 1, 12))  # noqa: DTZ001


class TestParse:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("08:00-21:00", QuietHours(time(8), time(21))),
            (" 9:30 - 17:00 ", QuietHours(time(9, 30), time(17))),
            ("22:00-06:00", QuietHours(time(22), time(6))),
            ("off", None),
            ("OFF", None),
        ],
    )
    def test_settings_parse(self, text: str, expected: QuietHours | None) -> None:
        """'HH:MM-HH:MM' gives a window and 'off' gives None."""
        assert parse_quiet_hours(text) == expected

    @pytest.mark.parametrize("text", ["", "8-21", "25:00-26:00", "08:00-08:00", "08:60-21:00"])
    def test_bad_settings_are_config_errors(self, text: str) -> None:
        """Anything else names the setting in a ConfigError."""
        with pytest.raises(ConfigError, match="CALLBRIDGE_QUIET_HOURS"):
            parse_quiet_hours(text)
