"""Stage times of a self-test call, read off its timeline."""

from __future__ import annotations

from callbridge.services.self_test import stages


def test_each_stage_takes_the_first_matching_event_and_missing_ones_stay_empty() -> None:
    """Stages come in the fixed order; a stage with no event has no time."""
    timeline = [
        {"at": "2026-12-01T10:00:00+00:00", "status": "requested"},
        {"at": "2026-12-01T10:00:01+00:00", "status": "queued"},
        {"at": "2026-12-01T10:00:02+00:00", "status": "ringing"},
        {"at": "2026-12-01T10:00:05+00:00", "status": "in-progress"},
        {"at": "2026-12-01T10:00:09+00:00", "status": "stream_started"},
        {"at": "2026-12-01T10:00:20+00:00", "status": "stream_stopped"},
        {"at": "2026-12-01T10:00:21+00:00", "status": "completed"},
        {"at": "2026-12-01T10:00:09.4+00:00", "status": "first_agent_audio"},
    ]
    found = {s.name: (s.at, s.status) for s in stages(timeline)}
    assert list(found) == [
        "create",
        "ringing",
        "answer",
        "consent",
        "stream start",
        "first agent audio",
        "hang-up",
    ]
    assert found["create"] == ("2026-12-01T10:00:01+00:00", "queued")
    assert found["consent"] == (None, None)
    assert found["first agent audio"][0] == "2026-12-01T10:00:09.4+00:00"
    assert found["hang-up"] == ("2026-12-01T10:00:21+00:00", "completed")  # not stream_stopped
