"""Only numbers in allowed countries and of ordinary types may be called (security.md 15-17)."""

from __future__ import annotations

import phonenumbers
import pytest

from callbridge.domain.phone import normalise
from callbridge.domain.policy import NumberPolicy, parse_countries
from callbridge.errors import ConfigError, InvalidNumber, PolicyRejected

POLICY = NumberPolicy()

_REFUSED_TYPES = (
    "TOLL_FREE", "PREMIUM_RATE", "SHARED_COST", "VOIP", "PERSONAL_NUMBER", "PAGER", "UAN",
    "VOICEMAIL", "UNKNOWN",
)  # fmt: skip

# Known special numbers per allowed country, with the type numbering data gives them.
SPECIAL_NUMBERS: list[tuple[str, str, str]] = [
    ("US", "+1 800 555 0143", "TOLL_FREE"),
    ("US", "+1 833 555 0143", "TOLL_FREE"),
    ("US", "+1 844 555 0143", "TOLL_FREE"),
    ("US", "+1 855 555 0143", "TOLL_FREE"),
    ("US", "+1 866 555 0143", "TOLL_FREE"),
    ("US", "+1 877 555 0143", "TOLL_FREE"),
    ("US", "+1 888 555 0143", "TOLL_FREE"),
    ("US", "+1 900 555 0143", "PREMIUM_RATE"),
    ("US", "+1 900 234 5678", "PREMIUM_RATE"),
    ("US", "+1 500 555 0143", "PERSONAL_NUMBER"),
    ("US", "+1 533 555 0143", "PERSONAL_NUMBER"),
    ("US", "+1 544 555 0143", "PERSONAL_NUMBER"),
    ("CA", "+1 800 212 3456", "TOLL_FREE"),
    ("CA", "+1 900 212 3456", "PREMIUM_RATE"),
    ("CA", "+1 600 201 2345", "VOIP"),
    ("CA", "+1 622 555 0143", "PERSONAL_NUMBER"),
    ("CA", "+1 310 1234", "UAN"),
]


def _examples() -> list[tuple[str, str, str]]:
    """libphonenumber's own example number of every refused type, for US and CA."""
    found = []
    for region in ("US", "CA"):
        for name in _REFUSED_TYPES:
            example = phonenumbers.example_number_for_type(
                region, getattr(phonenumbers.PhoneNumberType, name)
            )
            if example is not None:
                e164 = phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)
                found.append((region, e164, name))
    return found


EXAMPLES = _examples()


class TestAllowed:
    @pytest.mark.parametrize(
        "raw", ["+1 234 567 8900", "+1 202 555 0143", "+1 604 555 0143", "+1 416 555 0143"]
    )
    def test_ordinary_us_and_canadian_numbers_pass(self, raw: str) -> None:
        """Fixed-line and mobile numbers in the US and Canada are callable."""
        number = POLICY.screen(raw, "US")
        assert number.region in {"US", "CA"}


class TestCountry:
    @pytest.mark.parametrize(
        ("raw", "region"),
        [("+44 20 7946 0123", "GB"), ("+1 876 555 0143", "JM"), ("00 44 20 7946 0123", "GB")],
    )
    def test_numbers_outside_the_allowed_countries_are_refused(self, raw: str, region: str) -> None:
        """A valid number elsewhere, even in the +1 zone (Jamaica), is refused with 422."""
        number = normalise(raw, "US")
        assert number.region == region
        with pytest.raises(PolicyRejected) as caught:
            POLICY.check(number)
        assert caught.value.reason == "country"
        assert caught.value.http_status == 422
        assert caught.value.message == "We can only call numbers in the United States and Canada."

    def test_the_message_names_the_configured_countries(self) -> None:
        """The refusal names whatever countries the operator allowed."""
        policy = NumberPolicy(allowed_countries=frozenset({"GB"}))
        with pytest.raises(PolicyRejected, match="in the United Kingdom[.]$"):
            policy.check(normalise("+1 202 555 0143", "US"))
        assert policy.screen("+44 20 7946 0123", "GB").region == "GB"


class TestNumberType:
    def test_every_refused_type_has_examples_in_the_fixture(self) -> None:
        """The generated fixture covers toll-free, premium, personal, VoIP and UAN numbers."""
        covered = {name for _, _, name in EXAMPLES + SPECIAL_NUMBERS}
        assert {"TOLL_FREE", "PREMIUM_RATE", "PERSONAL_NUMBER", "VOIP", "UAN"} <= covered

    @pytest.mark.parametrize(("region", "raw", "kind"), SPECIAL_NUMBERS + EXAMPLES)
    def test_special_numbers_are_refused_with_422(self, region: str, raw: str, kind: str) -> None:
        """Premium-rate, toll-free and other special numbers can't be called."""
        number = normalise(raw, region)
        assert number.number_type == kind
        with pytest.raises(PolicyRejected) as caught:
            POLICY.check(number)
        assert caught.value.reason == "number_type"
        assert caught.value.http_status == 422
        assert caught.value.message == (
            "Premium-rate, toll-free and other special numbers can't be called."
        )

    def test_an_operator_can_narrow_the_types(self) -> None:
        """With only MOBILE allowed, a FIXED_LINE_OR_MOBILE number is refused."""
        policy = NumberPolicy(allowed_types=frozenset({"MOBILE"}))
        with pytest.raises(PolicyRejected, match="special numbers"):
            policy.screen("+1 202 555 0143", "US")


class TestShortNumbers:
    @pytest.mark.parametrize(
        ("raw", "reason"),
        [("911", "emergency"), ("112", "emergency"), ("611", "short_code"),
         ("22333", "short_code"), ("tel:911", "emergency")],
    )  # fmt: skip
    def test_short_codes_and_emergency_numbers_are_refused(self, raw: str, reason: str) -> None:
        """911, 112, service codes and SMS short codes are refused with 422 and a reason."""
        with pytest.raises(PolicyRejected) as caught:
            POLICY.screen(raw, "US")
        assert caught.value.reason == reason
        assert caught.value.http_status == 422

    def test_invalid_text_is_still_invalid_number(self) -> None:
        """Text that is neither a short number nor valid raises InvalidNumber."""
        with pytest.raises(InvalidNumber):
            POLICY.screen("+1 202 555 01", "US")


class TestConfiguration:
    def test_country_lists_parse_to_upper_case_codes(self) -> None:
        """'us, ca' is the set {US, CA}."""
        assert parse_countries(" us, CA ,") == frozenset({"US", "CA"})

    @pytest.mark.parametrize("text", ["", ",", "USA", "US,XX"])
    def test_bad_country_lists_are_config_errors(self, text: str) -> None:
        """An empty list or a code that is not an ISO region is a ConfigError."""
        with pytest.raises(ConfigError, match="CALLBRIDGE_ALLOWED_COUNTRIES"):
            parse_countries(text)

    def test_a_policy_with_unknown_codes_or_types_is_refused(self) -> None:
        """Constructing a policy with a bad country or type raises ConfigError."""
        with pytest.raises(ConfigError):
            NumberPolicy(allowed_countries=frozenset({"XX"}))
        with pytest.raises(ConfigError):
            NumberPolicy(allowed_types=frozenset({"CELL"}))
