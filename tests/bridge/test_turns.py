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


def test_a_later_echo_settles_the_cleared_marks_before_it_as_not_heard() -> None:
    """Audio sent after a clear is heard when its mark returns; the marks cleared before
    it were not heard, whether their own echoes come before, after or never."""
    tracker = TurnTracker()
    tracker.response_text(5, "one two three four")
    cut = [tracker.audio_sent(5, 100) for _ in range(2)]
    tracker.cleared(5)
    later = tracker.audio_sent(6, 160)
    assert not tracker.all_heard
    tracker.mark_echoed(later)
    assert tracker.turns[6].bytes_heard == 160
    assert tracker.all_heard
    for name in cut:
        tracker.mark_echoed(name)
    assert tracker.turns[5].bytes_heard == 0
    assert tracker.turns[5].interrupted
    assert not tracker.turns[6].interrupted
