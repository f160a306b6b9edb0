"""The visitor's free text: control characters out, everything printable kept (pure)."""

from __future__ import annotations

import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from callbridge.domain.text import clean_optional, strip_controls


@given(st.text())
def test_no_control_character_or_line_separator_survives(text: str) -> None:
    """Whatever the input, the result has no Cc character, no U+2028/U+2029, and cleaning
    it again changes nothing."""
    cleaned = strip_controls(text)
    assert not [c for c in cleaned if unicodedata.category(c) == "Cc" or c in "\u2028\u2029"]
    assert strip_controls(cleaned) == cleaned


def test_line_breaks_become_one_space_and_printable_text_stays() -> None:
    """CR/LF, tabs and separators read as a space; other controls vanish; letters stay."""
    assert strip_controls("Zoë\r\n\tLovelace") == "Zoë Lovelace"
    assert strip_controls("a\u2028b\u2029c\x85d") == "a b c d"
    assert strip_controls("bell\x07 esc\x1b[31m del\x7f") == "bell esc[31m del"
    assert strip_controls("  two  spaces  ") == "two  spaces"


def test_text_that_is_only_control_characters_is_no_text() -> None:
    """Optional fields that clean to nothing are None, as if never given."""
    assert clean_optional("\r\n\x00") is None
    assert clean_optional(None) is None
    assert clean_optional(" Ada ") == "Ada"
