"""Typed phone numbers become E.164, or a clear InvalidNumber (domain/phone.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callbridge.domain.phone import MAX_INPUT_LENGTH, PhoneNumber, normalise, short_number_kind
from callbridge.errors import InvalidNumber

DEMO = "+1 234 567 8900"
NO_SUCH = "That phone number doesn't exist. Please check it and try again."
NEED_CC = "Please include the country code, for example +1 for the United States."


class TestFormats:
    @pytest.mark.parametrize(
        ("raw", "region", "e164"),
        [
            (DEMO, "US", "+12345678900"),
            ("+1 202 555 0143", "US", "+12025550143"),
            ("(202) 555-0143", "US", "+12025550143"),
            ("202.555.0143", "US", "+12025550143"),
            ("1-202-555-0143", "US", "+12025550143"),
            ("+1 (202) 555\u20110143", "GB", "+12025550143"),
            ("\u00a0+1\u00a0202\u00a0555\u00a00143 ", "US", "+12025550143"),
            ("tel:+1-202-555-0143", "US", "+12025550143"),
            ("TEL:+12025550143", "US", "+12025550143"),
            ("00 1 202 555 0143", "US", "+12025550143"),
            ("00 44 20 7946 0123", "US", "+442079460123"),
            ("011 44 20 7946 0123", "US", "+442079460123"),
            ("+1 604 555 0143", "US", "+16045550143"),
            ("(202) 555-0143", "us", "+12025550143"),
        ],
    )
    def test_common_formats_normalise_to_e164(self, raw: str, region: str, e164: str) -> None:
        """Spaces, dashes, dots, brackets, tel: and 00/011 prefixes all give one E.164."""
        assert normalise(raw, region).e164 == e164

    @pytest.mark.parametrize(
        ("raw", "extension"),
        [
            ("+1 202 555 0143 ext. 12", "12"),
            ("+1 202 555 0143 extension 12", "12"),
            ("202 555 0143 x 5", "5"),
            ("tel:+1-202-555-0143;ext=7", "7"),
        ],
    )
    def test_an_extension_is_split_off(self, raw: str, extension: str) -> None:
        """An extension is kept apart; the number itself stays the main line."""
        number = normalise(raw, "US")
        assert number.e164 == "+12025550143"
        assert number.extension == extension

    def test_the_demo_number_is_a_valid_us_number(self) -> None:
        """libphonenumber accepts +1 234 567 8900: a US (Ohio) number in New York time."""
        number = normalise(DEMO, "US")
        assert number == PhoneNumber(
            e164="+12345678900",
            region="US",
            country_code=1,
            number_type="FIXED_LINE_OR_MOBILE",
            timezones=("America/New_York",),
            masked="+1\u2022\u2022\u2022\u2022\u2022\u20228900",
        )

    def test_a_number_prints_masked_and_hides_its_digits_in_repr(self) -> None:
        """str() is the masked form and repr() leaves the full number out (security.md 45)."""
        number = normalise("+1 202 555 0143", "US")
        assert str(number) == "+1••••••0143"
        assert "2025550143" not in repr(number)
        assert "555" not in repr(number)

    def test_masking_keeps_a_longer_country_code(self) -> None:
        """The country code and the last four digits stay visible, the rest is dots."""
        assert normalise("+44 20 7946 0123", "US").masked == "+44••••••0123"

    def test_normalising_e164_gives_the_same_number(self) -> None:
        """An E.164 string normalises to itself, whatever the default region."""
        number = normalise("(202) 555-0143", "US")
        assert normalise(number.e164, "GB") == number

    def test_a_multi_zone_number_lists_every_zone(self) -> None:
        """Idaho's 208 rings in Mountain and Pacific time; both zones are given."""
        number = normalise("+1 208 555 0143", "US")
        assert set(number.timezones) == {"America/Boise", "America/Los_Angeles"}


class TestErrors:
    @pytest.mark.parametrize(
        ("raw", "region", "message"),
        [
            ("", "US", "Please enter a phone number."),
            ("   ", "US", "Please enter a phone number."),
            ("+1 202 555 0143" + " " * 20 + "0", "US", "That phone number is too long."),
            ("1-800-FLOWERS", "US", "Please enter the phone number using digits only."),
            ("call me", "US", "Please enter the phone number using digits only."),
            ("x12", "US", "Please enter the phone number using digits only."),
            ("202*555*0143", "US", "That doesn't look like a phone number."),
            ("++12025550143", "US", "That doesn't look like a phone number."),
            ("1+2025550143", "US", "That doesn't look like a phone number."),
            ("+", "US", "That doesn't look like a phone number."),
            ("--", "US", "That doesn't look like a phone number."),
            ("+1 202 555 01434", "US", NO_SUCH),
            ("+1 456 555 0143", "US", NO_SUCH),
            ("555 0143", "US", NO_SUCH),
            ("+999 123456", "US", NO_SUCH),
            ("(202) 555-0143", "ZZ", NEED_CC),
            ("١٢٣٤٥٦٧٨٩٠", "US", "That doesn't look like a phone number."),
        ],
    )  # fmt: skip
    def test_bad_input_raises_invalid_number_with_a_clear_message(
        self, raw: str, region: str, message: str
    ) -> None:
        """Each kind of bad input is refused with a sentence the visitor can act on."""
        with pytest.raises(InvalidNumber) as caught:
            normalise(raw, region)
        assert caught.value.message == message
        assert caught.value.http_status == 422

    def test_input_longer_than_the_limit_is_refused_before_parsing(self) -> None:
        """Anything over 32 characters is too long, even if it were a number."""
        assert MAX_INPUT_LENGTH == 32
        with pytest.raises(InvalidNumber, match="too long"):
            normalise("1" * 33, "US")


_PHONEISH = st.text(alphabet="0123456789+-.() /x#:;=tel\u00a0\u2011", max_size=40)


class TestProperties:
    @given(raw=st.text(max_size=48), region=st.sampled_from(["US", "CA", "GB", "ZZ", "", "us"]))
    def test_any_text_normalises_or_raises_invalid_number(self, raw: str, region: str) -> None:
        """No text makes the parser raise anything but InvalidNumber."""
        try:
            number = normalise(raw, region)
        except InvalidNumber:
            return
        assert number.e164.startswith("+")

    @given(raw=_PHONEISH, region=st.sampled_from(["US", "CA", "GB"]))
    def test_phone_like_text_normalises_or_raises_invalid_number(
        self, raw: str, region: str
    ) -> None:
        """Digits and separators in any order give a valid E.164 or InvalidNumber."""
        try:
            number = normalise(raw, region)
        except InvalidNumber:
            return
        assert number.e164[1:].isdigit()
        assert normalise(number.e164, region).e164 == number.e164

    @given(raw=st.text(max_size=48) | _PHONEISH, region=st.sampled_from(["US", "ZZ", ""]))
    def test_short_number_kind_never_raises(self, raw: str, region: str) -> None:
        """The short-code probe answers for any text and never raises."""
        assert short_number_kind(raw, region) in (None, "emergency", "short_code")


class TestShortNumbers:
    @pytest.mark.parametrize(
        ("raw", "kind"),
        [("911", "emergency"), ("112", "emergency"), ("611", "short_code"),
         ("22333", "short_code"), ("988", "short_code"), ("+1 202 555 0143", None),
         ("2025550143", None), ("*611", None)],
    )  # fmt: skip
    def test_short_codes_and_emergency_numbers_are_recognised(
        self, raw: str, kind: str | None
    ) -> None:
        """911 and 112 are emergency numbers, 611 and SMS codes short codes, in the US."""
        assert short_number_kind(raw, "US") == kind
