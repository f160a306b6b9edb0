"""The soak's one-screen summary and its JSON form."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from callbridge.soak.evidence import Evidence
from callbridge.soak.faults import FaultRecord
from callbridge.soak.invariants import Invariant
from callbridge.soak.traffic import Attempt


@dataclass(frozen=True, slots=True)
class SoakResult:
    """A finished run: what was sent, what happened, the verdicts."""

    attempts: Sequence[Attempt]
    evidence: Evidence
    faults: Sequence[FaultRecord]
    invariants: Sequence[Invariant]
    wall_s: float
    workdir: str

    @property
    def passed(self) -> bool:
        """Whether no invariant failed (not-yet-measurable ones do not fail a run)."""
        return all(i.ok is not False for i in self.invariants)


def _outcome(attempt: Attempt) -> str:
    if attempt.error is not None:
        return "no answer"
    if attempt.accepted:
        return "accepted"
    return f"{attempt.status} {attempt.code or ''}".strip()


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def first_call_after(result: SoakResult, fault: FaultRecord) -> float | None:
    """Seconds from the fault's end to the first call request sent after it that was placed."""
    if not fault.lifted:
        return None
    placed = [a.sent for a in result.attempts if a.accepted and a.sent >= fault.lifted]
    return min(placed) - fault.lifted if placed else None


def summary_lines(result: SoakResult) -> list[str]:
    """The summary, one screen: calls, outcomes, faults, invariants."""
    attempts = result.attempts
    requests = Counter(_outcome(a) for a in attempts)
    ours = Counter(c.status for c in result.evidence.calls)
    twilio = Counter(c.status for c in result.evidence.twilio.values())
    by_kind = Counter(a.call.behaviour.name for a in attempts if a.accepted)
    lines = [
        f"callbridge soak: {len(attempts)} call requests in {result.wall_s:.0f} s wall "
        f"(logs: {result.workdir})",
        "requests:  " + ", ".join(f"{k} {n}" for k, n in requests.most_common()),
        "accepted:  " + ", ".join(f"{k} {n}" for k, n in by_kind.most_common()),
        "ours:      " + ", ".join(f"{k} {n}" for k, n in ours.most_common()),
        "twilio:    " + ", ".join(f"{k} {n}" for k, n in twilio.most_common()),
        "faults:",
    ]
    for fault in result.faults:
        if fault.skipped:
            lines.append(f"  {fault.name:<22} skipped: {fault.skipped}")
            continue
        note = f"; {fault.note}" if fault.note else ""
        lines.append(
            f"  {fault.name:<22} down {_seconds(fault.down_s)}, "
            f"all servers ready {_seconds(fault.recovery_s)} after, "
            f"next call placed {_seconds(first_call_after(result, fault))} after{note}"
        )
    lines.append("invariants:")
    for inv in result.invariants:
        lines.append(f"  {inv.verdict:<4} {inv.name}: {inv.figures}")
        lines.extend(f"         - {example}" for example in inv.examples[:3])
    lines.append("RESULT: " + ("PASS" if result.passed else "FAIL"))
    return lines


def as_json(result: SoakResult) -> dict[str, Any]:
    """The run as JSON-ready data."""
    return {
        "passed": result.passed,
        "wall_s": round(result.wall_s, 1),
        "workdir": result.workdir,
        "requests": dict(Counter(_outcome(a) for a in result.attempts)),
        "our_statuses": dict(Counter(c.status for c in result.evidence.calls)),
        "twilio_statuses": dict(Counter(c.status for c in result.evidence.twilio.values())),
        "faults": [
            {
                "name": f.name,
                "skipped": f.skipped or None,
                "down_s": f.down_s,
                "recovery_s": f.recovery_s,
                "next_call_placed_s": first_call_after(result, f),
                "note": f.note,
            }
            for f in result.faults
        ],
        "invariants": [
            {"name": i.name, "verdict": i.verdict, "figures": i.figures, "examples": i.examples}
            for i in result.invariants
        ],
        "harness_errors": result.evidence.errors,
    }
