"""From raw measurements to figures: percentiles, per-call CPU and memory, ratios, the table.

The figures' shape is the one issue 7 asks for (``calls``, ``duration_s``,
``frames``, ``added_latency_ms``, ``first_agent_audio_ms``, ``clear_ms``,
``setup_ms``, ``server``); the baseline's figures have the same shape.

Added latency is given twice, each way: ``added_latency_ms`` over the *whole run*
(every frame sent after its call's stream started, so the set-up bursts of the
calls still arriving are in it: what a user feels) and ``added_latency_steady_ms``
over the steady window only (None when the run has none).

CPU and memory are taken over the *steady window*, from the moment the last
call's stream started to the moment the first call hung up, when every call is
up at once; a run too short to have one (under three seconds) falls back to the
span of all streams, weighted by how many calls were up. ``cpu_s_per_call_minute``
is the CPU seconds the process used in the window divided by the call-minutes in
it; ``rss_mb_per_call`` is the *marginal* memory of a call: the highest resident
memory in the window minus the memory just before the first measured call (taken
after the runner's warm-up calls, whose one-time growth is ``rss_mb_warmup``),
divided by the calls. ``rss_anon_mb_per_call`` is the same for the anonymous part
(heap, allocator arenas, thread stacks), and ``threads`` the most threads seen.

With ``--repeat N`` every figure is the median over the rounds
(:func:`combine`), except the counts that say whether a round worked: frames lost
and unstamped frames are the worst round's, calls completed the fewest. A ratio is
the median of the rounds' own ratios (:func:`median_ratios`), and the target rows
(:data:`TARGETS`) also give its lowest and highest (:func:`ratio_spread`).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from callbridge.bench.loadgen import RunResult
from callbridge.bench.procs import ProcSample

__all__ = [
    "TARGETS",
    "combine",
    "median_ratios",
    "passes",
    "percentiles",
    "print_memory",
    "print_ramp",
    "print_table",
    "ratio_spread",
    "ratios",
    "summarise",
]

_STEADY_MIN_S = 3.0
#: The ramp's bar: no frame lost and p99 added latency under this, both ways.
RAMP_P99_MS = 20.0
#: Above this p99 frame lateness (ms) the load generator's own delays show in the tails.
_LATE_MS = 10.0


def percentiles(values_ns: Iterable[int], keys: Sequence[str]) -> dict[str, float | None]:
    """Nearest-rank percentiles (``"p50"``…, ``"max"``) in milliseconds; None without data."""
    ordered = sorted(values_ns)
    out: dict[str, float | None] = {}
    for key in keys:
        if not ordered:
            out[key] = None
            continue
        if key == "max":
            value = ordered[-1]
        else:
            rank = math.ceil(float(key[1:]) / 100 * len(ordered))
            value = ordered[min(len(ordered) - 1, max(0, rank - 1))]
        out[key] = round(value / 1e6, 3)
    return out


def _window(result: RunResult) -> tuple[float, float, float, bool] | None:
    """(start, end, call-seconds inside, steady?) in monotonic seconds."""
    spans = [
        (p.stream_start_ns / 1e9, p.end_ns / 1e9)
        for p in result.probes
        if p.stream_start_ns is not None and p.end_ns is not None
    ]
    if not spans:
        return None
    start, end = max(s for s, _ in spans), min(e for _, e in spans)
    steady = end - start >= _STEADY_MIN_S and len(spans) == len(result.probes)
    if not steady:
        start, end = min(s for s, _ in spans), max(e for _, e in spans)
    inside = sum(max(0.0, min(e, end) - max(s, start)) for s, e in spans)
    return start, end, inside, steady


def _rate(samples: Sequence[ProcSample], start: float, end: float) -> float | None:
    """CPU seconds per second between the first and last reading inside [start, end]."""
    inside = [s for s in samples if start <= s.at <= end]
    if len(inside) < 2 or inside[-1].at - inside[0].at <= 0:
        return None
    return (inside[-1].cpu_s - inside[0].cpu_s) / (inside[-1].at - inside[0].at)


def summarise(result: RunResult) -> dict[str, Any]:
    """The figures of one run."""
    probes = result.probes
    to_agent = [p.to_agent for p in probes]
    to_callee = [p.to_callee for p in probes]
    frames = {
        name: {
            "sent": sum(d.sent for d in ways),
            "received": sum(d.received for d in ways),
            "lost": max(0, sum(d.sent for d in ways) - sum(d.received for d in ways)),
        }
        for name, ways in (("to_agent", to_agent), ("to_callee", to_callee))
    }
    lat_keys = ("p50", "p95", "p99", "max")
    latency = {
        "to_agent": percentiles((v for d in to_agent for v in d.latency_ns), lat_keys),
        "to_callee": percentiles((v for d in to_callee for v in d.latency_ns), lat_keys),
    }
    window = _window(result)
    steady_latency: dict[str, dict[str, float | None]] | None = None
    if window is not None and window[3]:
        lo, hi = int(window[0] * 1e9), int(window[1] * 1e9)
        steady_latency = {
            name: percentiles(
                (
                    v
                    for d in ways
                    for v, at in zip(d.latency_ns, d.sent_ns, strict=True)
                    if lo <= at <= hi
                ),
                lat_keys,
            )
            for name, ways in (("to_agent", to_agent), ("to_callee", to_callee))
        }
    first_audio = percentiles(
        (
            p.first_audio_ns - p.stream_start_ns
            for p in probes
            if p.first_audio_ns is not None and p.stream_start_ns is not None
        ),
        ("p50", "p99"),
    )
    clear = percentiles((v for p in probes for v in p.clear_ns), ("p50", "p99"))
    setup: dict[str, float | None] = percentiles(
        (
            p.created_ns - p.post_ns
            for p in probes
            if p.created_ns is not None and p.post_ns is not None
        ),
        ("p50", "p99"),
    )
    server: dict[str, float | None] = {
        "cpu_s_per_call_minute": None,
        "rss_mb_per_call": None,
        "rss_anon_mb_per_call": None,
        "rss_mb_idle": None if result.idle is None else round(result.idle.rss_bytes / 2**20, 1),
        "threads": None,
    }
    loadgen_cpu: float | None = None
    steady = False
    if window is not None:
        start, end, call_s, steady = window
        rate = _rate(result.server, start, end)
        if rate is not None and call_s > 0:
            server["cpu_s_per_call_minute"] = round(rate * (end - start) * 60 / call_s, 4)
        calls_up = call_s / max(end - start, 1e-9)
        inside = [s for s in result.server if start <= s.at <= end]
        idle = result.idle
        if inside and idle is not None and calls_up > 0:
            peak = max(s.rss_bytes for s in inside) - idle.rss_bytes
            server["rss_mb_per_call"] = round(peak / calls_up / 2**20, 3)
            anon = max(s.rss_anon_bytes for s in inside) - idle.rss_anon_bytes
            server["rss_anon_mb_per_call"] = round(anon / calls_up / 2**20, 3)
        if inside:
            server["threads"] = max(s.threads for s in inside)
        own = _rate(result.loadgen, start, end)
        # Both load generator processes: the media endpoints and the flow driver.
        driver = _rate(result.driver, start, end) or 0.0
        loadgen_cpu = round((own + driver) * 100, 1) if own is not None else None
    errors = sorted({p.error for p in probes if p.error})
    return {
        "calls": result.config.calls,
        "duration_s": result.config.duration_s,
        "frames": frames,
        "added_latency_ms": latency,
        "added_latency_steady_ms": steady_latency,
        "first_agent_audio_ms": first_audio,
        "clear_ms": clear,
        "setup_ms": setup,
        "server": server,
        "calls_completed": sum(1 for p in probes if p.completed),
        "interruptions": sum(p.interruptions for p in probes),
        # Every callee frame carries a stamp, so an unstamped one reaching the agent was
        # damaged on the way. Toward the callee the bridge cuts each stamped agent chunk
        # into 20 ms frames (security.md D34): only the first of them carries the stamp.
        "unstamped_frames": sum(d.unstamped for d in to_agent),
        "loadgen": {
            "cpu_percent": loadgen_cpu,
            "frame_lateness_ms": percentiles(result.lateness_ns, ("p50", "p99", "max")),
        },
        "steady_window": steady,
        "machine": {"cores_busy_percent": result.cores_busy, "load_average": result.load_average},
        "errors": errors[:10] + result.agent_errors[:5],
    }


def passes(figures: dict[str, Any], p99_ms: float = RAMP_P99_MS) -> bool:
    """The ramp's bar: every call completed, no frame lost, p99 under ``p99_ms`` both ways."""
    frames, latency = figures["frames"], figures["added_latency_ms"]
    p99s = [latency[w]["p99"] for w in ("to_agent", "to_callee")]
    return (
        figures["calls_completed"] == figures["calls"]
        and frames["to_agent"]["lost"] == 0
        and frames["to_callee"]["lost"] == 0
        and all(p is not None and p < p99_ms for p in p99s)
    )


def ratios(ours: Any, base: Any) -> Any:
    """``ours / base`` for every number both have (None where undefined)."""
    if isinstance(ours, dict) and isinstance(base, dict):
        return {k: ratios(v, base.get(k)) for k, v in ours.items() if k in base}
    numbers = (int, float)
    if isinstance(ours, numbers) and isinstance(base, numbers) and not isinstance(ours, bool):
        return round(ours / base, 3) if base else None
    return None


#: The rows issue 12 sets targets for: their ratio is shown with its range over the rounds.
TARGETS: tuple[tuple[str, ...], ...] = (
    *(
        (key, way, q)
        for key in ("added_latency_ms", "added_latency_steady_ms")
        for way in ("to_agent", "to_callee")
        for q in ("p99", "max")
    ),
    ("server", "cpu_s_per_call_minute"),
    ("server", "rss_mb_per_call"),
)
#: Keys taken from the worst round rather than the median (did every round work?).
_WORST_MAX = frozenset({"lost", "unstamped_frames"})
_WORST_MIN = frozenset({"calls_completed"})


def _combine(values: Sequence[Any], key: str | None, worst: bool) -> Any:
    present = [v for v in values if v is not None]
    if not present:
        return None
    first = present[0]
    if isinstance(first, dict):
        keys = list(dict.fromkeys(k for v in present if isinstance(v, dict) for k in v))
        return {
            k: _combine([v.get(k) for v in present if isinstance(v, dict)], k, worst) for k in keys
        }
    if isinstance(first, bool):
        return all(present)
    if isinstance(first, int | float):
        numbers = [v for v in present if isinstance(v, int | float)]
        if worst and key in _WORST_MAX:
            return max(numbers)
        if worst and key in _WORST_MIN:
            return min(numbers)
        middle = statistics.median(numbers)
        if all(isinstance(v, int) for v in numbers) and float(middle).is_integer():
            return int(middle)
        return round(middle, 4)
    if isinstance(first, list):
        if all(isinstance(x, str) for v in present for x in v):
            return list(dict.fromkeys(x for v in present for x in v))[:15]
        if all(len(v) == len(first) for v in present):
            return [_combine(column, None, worst) for column in zip(*present, strict=True)]
    return first


def combine(rounds: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One set of figures from several rounds' (see the module docstring)."""
    out = _combine(rounds, None, worst=True)
    assert isinstance(out, dict)
    return out


def median_ratios(per_round: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The median of each ratio over the rounds (rounds where it is undefined left out)."""
    out = _combine(per_round, None, worst=False)
    return out if isinstance(out, dict) else {}


def ratio_spread(per_round: Sequence[dict[str, Any]]) -> dict[str, list[float] | None]:
    """``[lowest, highest]`` of each target row's ratio over the rounds, by ``a/b/c`` path."""
    out: dict[str, list[float] | None] = {}
    for path in TARGETS:
        values = [v for r in per_round if isinstance(v := _get(r, path), int | float)]
        out["/".join(path)] = [min(values), max(values)] if values else None
    return out


_ROWS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("calls completed", ("calls_completed",)),
    ("frames → agent sent", ("frames", "to_agent", "sent")),
    ("frames → agent lost", ("frames", "to_agent", "lost")),
    ("frames → callee sent", ("frames", "to_callee", "sent")),
    ("frames → callee lost", ("frames", "to_callee", "lost")),
    *(
        (f"added ms → {w} {q} ({label})", (key, w, q))
        for w in ("agent", "callee")
        for key, label in (("added_latency_ms", "whole run"), ("added_latency_steady_ms", "steady"))
        for q in ("p50", "p95", "p99", "max")
    ),
    ("start → first agent audio ms p50", ("first_agent_audio_ms", "p50")),
    ("start → first agent audio ms p99", ("first_agent_audio_ms", "p99")),
    ("interruption → clear ms p50", ("clear_ms", "p50")),
    ("interruption → clear ms p99", ("clear_ms", "p99")),
    ("POST → call created ms p50", ("setup_ms", "p50")),
    ("POST → call created ms p99", ("setup_ms", "p99")),
    ("server CPU s / call-minute", ("server", "cpu_s_per_call_minute")),
    ("server RSS MB at start", ("server", "rss_mb_start")),
    ("server RSS MB grown by the warm-up calls", ("server", "rss_mb_warmup")),
    ("server RSS MB / call (marginal)", ("server", "rss_mb_per_call")),
    ("server anonymous RSS MB / call", ("server", "rss_anon_mb_per_call")),
    ("server threads (most)", ("server", "threads")),
    ("load generator CPU %", ("loadgen", "cpu_percent")),
    ("load generator frame lateness ms p99", ("loadgen", "frame_lateness_ms", "p99")),
)
_WAY = {"agent": "to_agent", "callee": "to_callee"}


def _get(data: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(_WAY.get(key, key))
    return data


def _fmt(value: Any, ratio: bool = False) -> str:
    if value is None:
        return "—"
    if ratio:
        return f"{value:.2f}×"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def _fmt_ratio(
    ratio: Any, spread: dict[str, list[float] | None] | None, path: tuple[str, ...]
) -> str:
    text = _fmt(ratio, ratio=True)
    full = "/".join(_WAY.get(k, k) for k in path)
    lo_hi = (spread or {}).get(full)
    if ratio is not None and lo_hi is not None and lo_hi[0] != lo_hi[1]:
        text += f" ({lo_hi[0]:.2f}–{lo_hi[1]:.2f})"
    return text


def print_table(figures: dict[str, Any], console: Console) -> None:
    """The figures for people: callbridge, the baseline and the Node relay when measured,
    with the ratios (the median of the rounds' ratios, and for the target rows their range)."""
    base = figures.get("baseline")
    node = figures.get("node_relay")
    rounds = len(figures.get("rounds", [])) or 1
    title = f"callbridge bench: {figures['calls']} calls × {figures['duration_s']:g} s"
    if rounds > 1:
        title += f", median of {rounds} rounds"
    table = Table(title=title)
    table.add_column("figure")
    table.add_column("callbridge", justify="right")
    if base is not None:
        table.add_column("baseline relay", justify="right")
        table.add_column("callbridge ÷ baseline", justify="right")
    if node is not None:
        table.add_column("node relay", justify="right")
        table.add_column("node ÷ callbridge", justify="right")
    for label, path in _ROWS:
        cells = [label, _fmt(_get(figures, path))]
        if base is not None:
            ratio = _get(figures.get("ratio_to_baseline"), path)
            spread = figures.get("ratio_spread_to_baseline")
            cells += [_fmt(_get(base, path)), _fmt_ratio(ratio, spread, path)]
        if node is not None:
            ratio = _get(figures.get("ratio_node_to_callbridge"), path)
            spread = figures.get("ratio_spread_node_to_callbridge")
            cells += [_fmt(_get(node, path)), _fmt_ratio(ratio, spread, path)]
        table.add_row(*cells)
    console.print(table)
    for entry in figures.get("rounds", []):
        loads = ", ".join(
            f"{who} {_fmt(_get(entry.get(who), ('machine', 'load_average')))}"
            for who in entry["order"]
        )
        console.print(f"round {entry['round'] + 1}: load average {loads}")
    for who, data in (("callbridge", figures), ("baseline", base or {}), ("node", node or {})):
        for error in data.get("errors", [])[:5]:
            console.print(f"[yellow]{who}: {error}[/]")
        load = _get(data, ("machine", "load_average"))
        if load is not None and load > 2.5:
            console.print(
                f"[yellow]{who}: load average {load:.1f} during the run: other processes "
                "competed for the cores; latency tails are not the bridge's alone.[/]"
            )
        cpu = _get(data, ("loadgen", "cpu_percent"))
        if cpu is not None and cpu > 85:
            console.print(
                f"[yellow]{who}: the load generator used {cpu:.0f} % of its core; "
                "latency figures include its own delays.[/]"
            )
        late = _get(data, ("loadgen", "frame_lateness_ms", "p99"))
        if late is not None and late > _LATE_MS:
            console.print(
                f"[yellow]{who}: the load generator sent its frames up to {late:.0f} ms late "
                "(p99): it was busy, so it also read the answers late; the latency tails "
                "carry its delays too.[/]"
            )


def print_ramp(
    steps: list[dict[str, Any]], carried: dict[str, int | None], console: Console
) -> None:
    """One row per ramp step and the largest load carried."""
    table = Table(title=f"ramp: no frame lost and p99 added latency < {RAMP_P99_MS:g} ms")
    for column in (
        "target",
        "calls",
        "ok",
        "lost →agent/→callee",
        "p99 ms →agent/→callee",
        "CPU s/call-min",
        "loadgen CPU %",
    ):
        table.add_column(column)
    for step in steps:
        f = step["figures"]
        lost = f"{f['frames']['to_agent']['lost']}/{f['frames']['to_callee']['lost']}"
        p99 = (
            f"{_fmt(f['added_latency_ms']['to_agent']['p99'])}/"
            f"{_fmt(f['added_latency_ms']['to_callee']['p99'])}"
        )
        table.add_row(
            step["target"],
            str(f["calls"]),
            "yes" if step["pass"] else "no",
            lost,
            p99,
            _fmt(f["server"]["cpu_s_per_call_minute"]),
            _fmt(f["loadgen"]["cpu_percent"]),
        )
    console.print(table)
    for target, calls in carried.items():
        console.print(
            f"[bold]{target}[/]: carries {calls if calls else 'none of the steps'} "
            "concurrent calls on one core"
        )


def print_memory(profile: dict[str, Any], console: Console) -> None:
    """The memory profile's top allocation sites, per call."""
    table = Table(
        title=f"memory per call by allocation site (tracemalloc, {profile['calls']} calls up)"
    )
    table.add_column("where (allocation ← our frame)")
    table.add_column("KiB / call", justify="right")
    table.add_column("blocks / call", justify="right")
    for entry in profile["top"]:
        table.add_row(
            entry["where"], f"{entry['kib_per_call']:.2f}", f"{entry['blocks_per_call']:.1f}"
        )
    console.print(table)
    if not profile["taken_with_every_call_up"]:
        console.print(
            "[yellow]the snapshot was not taken with every call up: per-call "
            "figures are understated[/]"
        )
