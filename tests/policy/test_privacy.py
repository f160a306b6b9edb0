"""One masker for numbers in logs, metrics and pages."""

from __future__ import annotations

from callbridge.domain.phone import normalise
from callbridge.domain.privacy import mask_number


def test_a_number_is_masked_as_the_parser_masks_it() -> None:
    """mask_number gives the same text as PhoneNumber.masked, whatever the country code."""
    for raw in ("+1 234 567 8900", "+44 20 7946 0123", "+353 1 234 5678"):
        number = normalise(raw, "US")
        assert mask_number(number.e164) == number.masked


def test_text_that_is_no_number_keeps_only_its_last_four_digits() -> None:
    """Anything that does not parse shows no more than its last four characters."""
    assert mask_number("abc12345") == "••••2345"
    assert mask_number("123") == "•••"
    assert mask_number(None) == ""
