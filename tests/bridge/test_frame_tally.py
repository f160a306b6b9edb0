"""callbridge_frames_total counted by lock-free per-pump tallies, exact whenever scraped."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from callbridge.metrics import Metrics


def _frames(metrics: Metrics, direction: str) -> float:
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            if sample.name == "callbridge_frames_total" and sample.labels == {
                "direction": direction
            }:
                return sample.value
    return 0.0


def test_a_scrape_sees_every_frame_of_live_and_ended_pumps() -> None:
    """Frames counted by two live tallies show in full at a scrape, again after more are
    counted, and stay counted once the pumps end; the other direction is untouched."""
    metrics = Metrics()
    with metrics.frame_tally("to_agent") as one:
        with metrics.frame_tally("to_agent") as two:
            one.count += 3
            two.count += 4
            assert _frames(metrics, "to_agent") == 7
            one.count += 1
            assert _frames(metrics, "to_agent") == 8
        two_after = two.count
        one.count += 2
    assert two_after == 4
    assert _frames(metrics, "to_agent") == 10
    assert metrics.frames.labels(direction="to_agent")._value.get() == 10
    assert _frames(metrics, "to_callee") == 0


def test_a_pump_that_fails_still_settles_its_count() -> None:
    """A pump that ends with an exception has its frames counted all the same."""
    metrics = Metrics()
    try:
        with metrics.frame_tally("to_agent") as tally:
            tally.count += 5
            raise RuntimeError("the pump failed")
    except RuntimeError:
        pass
    assert metrics.frames.labels(direction="to_agent")._value.get() == 5
