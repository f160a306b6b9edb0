"""Twilio's times (RFC 2822) are read tolerantly, and a callback's ``Timestamp`` is the end."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from email.utils import format_datetime

import pytest

from callbridge.domain.twilio_times import twilio_time
from tests.integration.helpers import ringing_call, signed_post
from tests.support.app import Sandbox, running_sandbox

_RINGING = {"CALLBRIDGE_SANDBOX_CALLEE": "no-answer"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Tue, 01 Dec 2026 18:05:07 +0000", datetime(2026, 12, 1, 18, 5, 7, tzinfo=UTC)),
        ("Tue, 01 Dec 2026 18:05:07 -0000", datetime(2026, 12, 1, 18, 5, 7, tzinfo=UTC)),
        ("Tue, 01 Dec 2026 19:05:07 +0100", datetime(2026, 12, 1, 18, 5, 7, tzinfo=UTC)),
        (datetime(2026, 12, 1, 18, 5, 7), datetime(2026, 12, 1, 18, 5, 7, tzinfo=UTC)),
        (
            datetime(2026, 12, 1, 20, 5, 7, tzinfo=timezone(timedelta(hours=2))),
            datetime(2026, 12, 1, 18, 5, 7, tzinfo=UTC),
        ),
        ("", None),
        ("   ", None),
        ("yesterday", None),
        ("Tue, 99 Foo 2026 99:99:99 +0000", None),
        (None, None),
        (1764612307, None),
    ],
)
def test_a_twilio_time_is_utc_or_none(value: object, expected: datetime | None) -> None:
    """RFC 2822 strings and the SDK's datetimes become aware UTC; anything else is None."""
    assert twilio_time(value) == expected


def _callback(sb: Sandbox, sid: str, **extra: str) -> dict[str, str]:
    return {
        "AccountSid": sb.container.account_sid,
        "CallSid": sid,
        "CallStatus": "completed",
        "From": sb.container.from_number,
        "To": "+12025550142",
        "Direction": "outbound-api",
        "ApiVersion": "2010-04-01",
        "CallbackSource": "call-progress-events",
        "SequenceNumber": "9",
        "CallDuration": "0",
        **extra,
    }


@pytest.mark.parametrize("stamp", ["after_creation", "before_creation", "absent", "garbage"])
async def test_the_final_callbacks_timestamp_is_the_end_and_a_bad_one_is_no_error(
    stamp: str,
) -> None:
    """A final callback's ``Timestamp`` is the call's end, not the moment the callback
    reached us (but never before the call was created); an absent or unreadable one is
    not an error: the end is then our clock's."""
    async with running_sandbox(_RINGING) as sb:
        body = await ringing_call(sb)
        placed = await sb.container.store.get_call(body["call_id"])
        assert placed is not None
        created = placed.created_at
        ended = (created + timedelta(seconds=2)).replace(microsecond=0)
        timestamps = {
            "after_creation": format_datetime(ended, usegmt=True),
            "before_creation": format_datetime(created - timedelta(hours=1), usegmt=True),
            "garbage": "not a date",
        }
        extra = {"Timestamp": timestamps[stamp]} if stamp in timestamps else {}
        before = datetime.now(UTC)
        response = await signed_post(
            sb, "/api/call/status", _callback(sb, body["call_sid"], **extra)
        )
        assert response.status_code in (200, 204)
        call = await sb.container.store.get_call(body["call_id"])
        assert call is not None and call.status.value == "completed" and call.ended_at
        if stamp == "after_creation":
            assert call.ended_at == ended
        elif stamp == "before_creation":
            assert call.ended_at == created
        else:
            assert call.ended_at >= before
