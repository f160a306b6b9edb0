"""Free text a visitor gives (name, reason, summary), made safe to store and to show (pure).

The text reaches the operator's pages, the logs and the agent's prompt variables, so
nothing in it may start a new line or move the cursor: every control character
(C0, DEL, C1, which includes CR, LF, TAB, NEL and ESC) and the Unicode line and
paragraph separators (U+2028, U+2029) are taken out. A run of line breaks or tabs
becomes one space, so two lines read as one sentence; the other control characters
are dropped. Ordinary spaces stay, and so does every printable character of every
script.
"""

from __future__ import annotations

import re

_BREAKS = re.compile(r"[\t\n\v\f\r\x85\u2028\u2029]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def strip_controls(text: str) -> str:
    """``text`` without control characters or line/paragraph separators, trimmed.

    Args:
        text: what the visitor typed.

    Returns:
        The cleaned text with its ends stripped of spaces: ``"Ada\\r\\nLovelace"``
        becomes ``"Ada Lovelace"`` and ``"Ada\\x1b[2J"`` becomes ``"Ada[2J"``.
    """
    return _CONTROL.sub("", _BREAKS.sub(" ", text)).strip()


def clean_optional(text: str | None) -> str | None:
    """:func:`strip_controls`, with ``None`` for text that is empty once cleaned."""
    if text is None:
        return None
    return strip_controls(text) or None
