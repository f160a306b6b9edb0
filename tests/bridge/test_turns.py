"""What the callee heard, from mark echoes: the pure turn tracker."""

from __future__ import annotations

from callbridge.services.turns import TurnTracker


def test_echoed_marks_count_as_heard_in_order() -> None:
    """Each echo settles its mark and every earlier one: marks come back in order."""
    tracker = TurnTracker()
    tracker.response_text(1, "one two three four")
    first = tracker.audio_sent(1, 100)
    second = tracker.audio_sent(1, 100)
    tracker.mark_echoed(second)
    assert tracker.turns[1].bytes_heard == 200
    tracker.mark_echoed(first)  # already settled: nothing changes
    assert tracker.turns[1].bytes_heard == 200
    assert tracker.all_heard


def test_a_mark_we_never_sent_changes_nothing() -> None:
    """An unknown mark name does not count outstanding audio as heard."""
    tracker = TurnTracker()
    tracker.audio_sent(1, 160)
    tracker.mark_echoed("response-1")
    assert tracker.turns[1].bytes_heard == 0
    assert not tracker.all_heard


def test_cleared_audio_is_not_heard_and_the_turn_is_cut() -> None:
    """Marks outstanding at a clear echo back but their audio was not heard."""
    tracker = TurnTracker()
    tracker.response_text(3, "alpha beta gamma delta")
    heard = tracker.audio_sent(3, 100)
    tracker.mark_echoed(heard)
    cut = [tracker.audio_sent(3, 100) for _ in range(3)]
    tracker.cleared(3)
    for name in cut:
        tracker.mark_echoed(name)
    turn = tracker.turns[3]
    assert turn.bytes_heard == 100
    assert turn.interrupted
    assert turn.heard_text() == "alpha"
    assert tracker.all_heard


def test_the_agents_correction_is_the_heard_text() -> None:
    """agent_response_correction, when sent, is taken as what was heard."""
    tracker = TurnTracker()
    tracker.response_text(4, "Let me tell you about the complete history")
    tracker.correction(4, "Let me tell you about")
    assert tracker.turns[4].heard_text() == "Let me tell you about"
    assert tracker.turns[4].interrupted
