"""Twilio's times: RFC 2822 strings in UTC (protocols.md §1.3 and §1.5), read tolerantly.

The Call resource's ``start_time`` and ``end_time`` and the status callback's
``Timestamp`` are given as e.g. ``Tue, 01 Dec 2026 18:05:07 +0000``. twilio-python
hands the resource's fields over already parsed (``deserialize.rfc2822_datetime``,
which returns None for an empty value); callbacks arrive as raw strings. Both are
read here, and anything unreadable is None, never an error: a missing time falls
back to our own clock, a broken one must not lose the callback.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime


def twilio_time(value: object) -> datetime | None:
    """A Twilio time as an aware UTC datetime; None when absent or unreadable.

    Args:
        value: a ``datetime`` (twilio-python already parsed it; naive means UTC) or
            an RFC 2822 string; anything else, or an empty string, gives None.
    """
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str) and value.strip():
        try:
            moment = parsedate_to_datetime(value.strip())
        except (TypeError, ValueError, IndexError):
            return None
    else:
        return None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)  # Twilio's times are UTC ("-0000" parses naive)
    return moment.astimezone(UTC)
