"""The benchmark still works: a few calls for a few seconds through a real server and the baseline.

It asserts that frames flow both ways and that the JSON has the keys issue 7 asks
for; it never asserts a speed.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
from rich.console import Console

from callbridge.bench.node import NodeRelay, NodeUnavailable
from callbridge.bench.runner import DEFAULT_BASELINE, BenchOptions, run_bench, write_json
from callbridge.bench.twilio_flow import FlowConfig

pytestmark = pytest.mark.timeout(180)

_WAYS = ("to_agent", "to_callee")


def _check_figures(figures: dict[str, object]) -> None:
    assert set(figures) >= {
        "calls",
        "duration_s",
        "frames",
        "added_latency_ms",
        "first_agent_audio_ms",
        "clear_ms",
        "setup_ms",
        "server",
    }
    frames = figures["frames"]
    latency = figures["added_latency_ms"]
    assert isinstance(frames, dict) and isinstance(latency, dict)
    for way in _WAYS:
        assert set(frames[way]) >= {"sent", "received", "lost"}
        assert frames[way]["sent"] > 0
        assert frames[way]["received"] > 0
        assert set(latency[way]) >= {"p50", "p95", "p99", "max"}
        assert latency[way]["p99"] is not None
    for key in ("first_agent_audio_ms", "clear_ms", "setup_ms"):
        assert set(figures[key]) >= {"p50", "p99"}  # type: ignore[arg-type]
    assert set(figures["server"]) >= {  # type: ignore[arg-type]
        "cpu_s_per_call_minute",
        "rss_mb_per_call",
        "rss_anon_mb_per_call",
        "rss_mb_start",
        "rss_mb_warmup",
        "threads",
    }


async def test_two_rounds_alternate_and_report_medians_of_figures_and_ratios(
    tmp_path: Path,
) -> None:
    """Two rounds of three calls of three seconds through callbridge and the baseline
    relay carry audio both ways and complete every call; the second round runs them in
    the other order; every reported figure is the median of the rounds' figures, each
    ratio the median of the rounds' ratios with its range, and the JSON keeps each
    round; each process's warm-up growth and its memory at start are reported apart."""
    options = BenchOptions(
        calls=3,
        duration_s=3.0,
        pin=False,
        arrival_rate=10.0,
        flow=FlowConfig(answer_s=0.05, consent_s=0.05),
        workdir=tmp_path,
        repeat=2,
    )
    with (tmp_path / "console.txt").open("w") as out:
        figures = await run_bench(options, Console(file=out))

    _check_figures(figures)
    assert figures["calls_completed"] == 3, figures["errors"]
    assert figures["setup_ms"]["p50"] is not None
    baseline = figures["baseline"]
    _check_figures(baseline)
    assert baseline["calls_completed"] == 3, baseline["errors"]
    rounds = figures["rounds"]
    assert [r["order"] for r in rounds] == [["callbridge", "baseline"], ["baseline", "callbridge"]]
    for who, combined in (("callbridge", figures), ("baseline", baseline)):
        for key in ("cpu_s_per_call_minute", "rss_mb_per_call", "rss_mb_start"):
            per_round = [r[who]["server"][key] for r in rounds]
            assert combined["server"][key] == pytest.approx(statistics.median(per_round), abs=1e-3)
        assert combined["server"]["rss_mb_start"] > 0
        assert combined["server"]["rss_mb_warmup"] is not None
    cpu_ratios = [r["ratio_to_baseline"]["server"]["cpu_s_per_call_minute"] for r in rounds]
    assert figures["ratio_to_baseline"]["server"]["cpu_s_per_call_minute"] == pytest.approx(
        statistics.median(cpu_ratios), abs=1e-3
    )
    assert figures["ratio_spread_to_baseline"]["server/cpu_s_per_call_minute"] == [
        min(cpu_ratios),
        max(cpu_ratios),
    ]
    p99 = [r["callbridge"]["added_latency_ms"]["to_agent"]["p99"] for r in rounds]
    assert figures["added_latency_ms"]["to_agent"]["p99"] == pytest.approx(
        statistics.median(p99), abs=1e-3
    )
    path = tmp_path / "bench.json"
    write_json(figures, path)
    written = json.loads(path.read_text())
    assert len(written["rounds"]) == 2
    assert written["rounds"][1]["baseline"]["frames"]["to_agent"]["sent"] > 0


@pytest.mark.parametrize("script", ["lean_relay.py", "sansio_relay.py"])
async def test_a_lean_python_relay_in_the_baselines_place_carries_audio_both_ways(
    tmp_path: Path, script: str
) -> None:
    """A lean Python relay run in the baseline's place (``--baseline-script``) carries
    the same three calls' audio both ways, undamaged, and every call completes."""
    options = BenchOptions(
        calls=3,
        duration_s=3.0,
        pin=False,
        arrival_rate=10.0,
        flow=FlowConfig(answer_s=0.05, consent_s=0.05),
        workdir=tmp_path,
        warmup_calls=1,
        baseline_script=DEFAULT_BASELINE.parent / script,
    )
    with (tmp_path / "console.txt").open("w") as out:
        figures = await run_bench(options, Console(file=out))

    relay = figures["baseline"]
    _check_figures(relay)
    assert relay["calls_completed"] == 3, relay["errors"]
    assert relay["unstamped_frames"] == 0
    for way in _WAYS:
        assert relay["frames"][way]["lost"] == 0


def test_compare_node_without_node_says_so_in_one_sentence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without node and npm on the PATH, preparing the Node relay fails with one sentence
    naming what is missing, and installs nothing."""
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(NodeUnavailable, match=r"^--compare-node needs node .* lacks node\.$"):
        NodeRelay.prepare(cache=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


async def test_roles_and_memory_profile_report_the_media_process_and_its_allocations(
    tmp_path: Path,
) -> None:
    """With ``roles`` the same calls go through a control and a media process and carry
    audio both ways; with ``profile_memory`` the figures name the allocation sites the
    calls hold, each with a positive size per call; the steady-window latency sits beside
    the whole run's when the run has a steady window."""
    options = BenchOptions(
        calls=3,
        duration_s=4.0,
        pin=False,
        baseline=False,
        arrival_rate=10.0,
        flow=FlowConfig(answer_s=0.05, consent_s=0.05),
        workdir=tmp_path,
        roles=True,
        profile_memory=True,
    )
    with (tmp_path / "console.txt").open("w") as out:
        figures = await run_bench(options, Console(file=out))

    _check_figures(figures)
    assert figures["calls_completed"] == 3, figures["errors"]
    assert "media" in figures["meta"]["roles"], "a media process carried the streams"
    steady = figures["added_latency_steady_ms"]
    assert figures["steady_window"] is True
    for way in _WAYS:
        assert set(steady[way]) >= {"p50", "p95", "p99", "max"}
    profile = figures["memory_profile"]
    assert profile["calls"] == 3
    assert profile["top"], "the snapshot holds what the calls allocated"
    assert all(entry["kib_per_call"] > 0 and entry["where"] for entry in profile["top"])
