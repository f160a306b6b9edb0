"""What the load generator writes down about each call, from both of its ends.

A :class:`CallProbe` is shared by the emulated callee (the Twilio side) and the
emulated agent (the ElevenLabs side) of one call: they find each other through
the ``call_id`` the callee receives in ``<Parameter>`` and the agent receives in
``dynamic_variables``. Frame counts only include frames sent before the call's
*cutoff* (shortly before the callee hangs up), so the frames still in flight at
hang-up are not counted as lost.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field

__all__ = ["CallProbe", "Direction", "Registry"]


@dataclass
class Direction:
    """Frames one way: how many were sent and received, and each one's transit time."""

    sent: int = 0
    received: int = 0
    unstamped: int = 0
    #: transit times (ns) of frames sent after the stream started
    latency_ns: array[int] = field(default_factory=lambda: array("q"))
    #: when each of those frames was sent (ns), so a window of the run can be picked out
    sent_ns: array[int] = field(default_factory=lambda: array("q"))


@dataclass
class CallProbe:
    """One call's measurements (monotonic nanoseconds throughout)."""

    index: int
    call_id: str
    number: str
    post_ns: int | None = None
    created_ns: int | None = None
    stream_start_ns: int | None = None
    end_ns: int | None = None
    cutoff_ns: int | None = None
    first_audio_ns: int | None = None
    interrupt_ns: int | None = None
    interruptions: int = 0
    clear_ns: array[int] = field(default_factory=lambda: array("q"))
    to_agent: Direction = field(default_factory=Direction)
    to_callee: Direction = field(default_factory=Direction)
    agent_connected: bool = False
    completed: bool = False
    error: str | None = None

    def counts(self, sent_ns: int) -> bool:
        """Whether a frame sent at ``sent_ns`` is counted (sent before the cutoff)."""
        return self.cutoff_ns is None or sent_ns < self.cutoff_ns

    def arrived(self, way: Direction, sent_ns: int | None, now_ns: int) -> None:
        """A frame stamped ``sent_ns`` (None: no stamp) arrived ``way`` at ``now_ns``."""
        if sent_ns is None:
            way.unstamped += 1
            return
        if self.counts(sent_ns):
            way.received += 1
        start = self.stream_start_ns
        if start is not None and sent_ns >= start:
            way.latency_ns.append(now_ns - sent_ns)
            way.sent_ns.append(sent_ns)

    def fail(self, why: str) -> None:
        """Record the first thing that went wrong with this call."""
        if self.error is None:
            self.error = why


class Registry:
    """Every call of a run, by call id and by index."""

    def __init__(self) -> None:
        self.by_id: dict[str, CallProbe] = {}
        self.by_index: dict[int, CallProbe] = {}
        self.by_number: dict[str, CallProbe] = {}

    def add(self, probe: CallProbe) -> None:
        """Register a call."""
        self.by_id[probe.call_id] = probe
        self.by_index[probe.index] = probe
        self.by_number[probe.number] = probe

    def rename(self, probe: CallProbe, call_id: str) -> None:
        """The server chose the call id: file the probe under it."""
        self.by_id.pop(probe.call_id, None)
        probe.call_id = call_id
        self.by_id[call_id] = probe

    def __iter__(self) -> Iterator[CallProbe]:
        return iter(self.by_index.values())

    def __len__(self) -> int:
        return len(self.by_index)
