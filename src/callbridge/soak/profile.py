"""What one soak run does: the traffic's shape, the callee behaviours, the limits, the faults.

A :class:`SoakProfile` is plain data. :func:`ci_profile` is the run CI makes (a few
hundred calls in about five minutes on two cores); the command builds others from
``--calls`` and ``--duration``. The limits are *configured to the traffic*
(:meth:`SoakProfile.limits`): every quota the traffic is not meant to reach is set
just at or above what the planned traffic asks for, so a refusal for it means a
counter that is wrong, and the concurrency cap is set below the planned peak, so
some refusals for it are expected and each is checked against the calls really live.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

#: Every destination is a fictional 555-01xx number: 100 per area code.
NUMBERS_PER_AREA_CODE = 100

#: What the sandbox charges per started minute of an answered call, in cents
#: (``SANDBOX_RATE_PER_MINUTE`` of the Twilio emulator, 0.014 USD).
SANDBOX_CENTS_PER_MINUTE = 1.4


@dataclass(frozen=True, slots=True)
class Behaviour:
    """One kind of callee, scripted for a set of area codes.

    Attributes:
        name: the label in the summary (``answer``, ``busy``, …).
        script: the sandbox callee script (``CALLBRIDGE_SANDBOX_CALLEE`` steps).
        share: the fraction of the calls that go to this kind of callee.
        area_codes: the area codes whose 555-01xx numbers behave like this.
        talk_seconds: how long the callee stays on after answering (0: never answers).
        bridged: whether the call is expected to reach the agent.
    """

    name: str
    script: str
    share: float
    area_codes: tuple[str, ...]
    talk_seconds: float
    bridged: bool


DEFAULT_BEHAVIOURS: tuple[Behaviour, ...] = (
    Behaviour("answer", "answer=1,digits=1,speak,hangup=10", 0.22, ("202", "415"), 10, True),
    Behaviour("answer-chatty", "answer=2,digits=1,speak,hangup=16", 0.12, ("404",), 16, True),
    Behaviour("long", "answer=1,digits=1,speak,hangup=45", 0.08, ("617",), 45, True),
    Behaviour("hangup-in-greeting", "answer=1,hangup=1.5", 0.12, ("206",), 1.5, False),
    Behaviour("busy", "busy", 0.16, ("212",), 0, False),
    Behaviour("no-answer", "no-answer", 0.14, ("312",), 0, False),
    Behaviour("reject", "reject", 0.16, ("303",), 0, False),
)


@dataclass(frozen=True, slots=True)
class SoakProfile:
    """One soak run.

    Attributes:
        calls: call requests the traffic makes.
        duration_s: seconds over which they are spread (busier in the middle).
        behaviours: the callee kinds and their shares.
        max_concurrent_calls: the concurrency cap, below the planned peak.
        time_limit_s: ``CALLBRIDGE_TIME_LIMIT`` (the longest call).
        ring_timeout_s: ``CALLBRIDGE_RING_TIMEOUT`` (how long a no-answer rings).
        greeting: ``CALLBRIDGE_GREETING`` (short: the emulator speaks 60 ms a character).
        kill_at: when one server is killed (fraction of ``duration_s``).
        restart_after_s: how long the killed server stays down.
        postgres_at: when PostgreSQL is stopped (fraction of ``duration_s``).
        redis_at: when Redis is stopped (fraction of ``duration_s``).
        outage_s: how long PostgreSQL and Redis stay stopped.
        settle_s: how long after a call's real end it must be terminal on our side.
        postcall_reconcile_minutes: ``CALLBRIDGE_POSTCALL_RECONCILE_MINUTES``, compressed
            like the day: a post-call webhook lost in an outage is made up for from the
            Conversations API after this long (the job runs once a minute).
        extra_env: more settings for the servers (``--set``); a quota setting given here
            replaces the one configured to the traffic, and the checks use it.
    """

    calls: int = 300
    duration_s: float = 180.0
    behaviours: tuple[Behaviour, ...] = DEFAULT_BEHAVIOURS
    max_concurrent_calls: int = 12
    time_limit_s: int = 120
    ring_timeout_s: int = 5
    greeting: str = "Hello from the soak test. This call may be recorded."
    kill_at: float = 0.3
    restart_after_s: float = 3.0
    postgres_at: float = 0.5
    redis_at: float = 0.75
    outage_s: float = 10.0
    settle_s: float = 90.0
    postcall_reconcile_minutes: int = 1
    extra_env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for behaviour in self.behaviours:
            capacity = NUMBERS_PER_AREA_CODE * len(behaviour.area_codes)
            if self.planned(behaviour) > capacity:
                raise ValueError(
                    f"{self.calls} calls need more than {capacity} numbers for "
                    f"{behaviour.name!r}: give it more area codes or make fewer calls"
                )

    def planned(self, behaviour: Behaviour) -> int:
        """How many calls go to ``behaviour`` (shares rounded, the rest to the first)."""
        counts = [math.floor(self.calls * b.share) for b in self.behaviours]
        counts[0] += self.calls - sum(counts)
        return counts[self.behaviours.index(behaviour)]

    @property
    def postcall_wait_s(self) -> float:
        """The longest a bridged call may wait for its transcript after it ends: the
        post-call reconcile delay, one pass of the job, and a margin."""
        return self.postcall_reconcile_minutes * 60 + 60 + 30

    @property
    def reservation_cents(self) -> int:
        """What one call reserves of the spend cap: the time limit at the worst rate."""
        return math.ceil(self.time_limit_s / 60) * 15

    def expected_spend_cents(self) -> float:
        """What the answered calls of the plan cost in the sandbox, in cents."""
        total = 0.0
        for behaviour in self.behaviours:
            if behaviour.talk_seconds > 0:
                minutes = math.ceil(behaviour.talk_seconds / 60)
                total += self.planned(behaviour) * minutes * SANDBOX_CENTS_PER_MINUTE
        return total

    def limits(self) -> dict[str, str]:
        """The quota settings the servers run with: :meth:`traffic_limits`, with any of
        them given again in ``extra_env`` taking its value from there."""
        limits = self.traffic_limits()
        return limits | {k: v for k, v in self.extra_env.items() if k in limits}

    def traffic_limits(self) -> dict[str, str]:
        """The quota settings, configured to the traffic (see the module docstring)."""
        per_prefix = max(math.ceil(self.planned(b) / len(b.area_codes)) for b in self.behaviours)
        spend_cap = math.ceil(
            2 * self.expected_spend_cents() + self.max_concurrent_calls * self.reservation_cents
        )
        return {
            # Every number is called once: the documented per-number defaults are never hit.
            "CALLBRIDGE_PER_NUMBER_HOURLY": "3",
            "CALLBRIDGE_PER_NUMBER_DAILY": "5",
            "CALLBRIDGE_PER_NUMBER_COOLDOWN": "600",
            # Visitors come from many IPv6 /64s, a few requests each: the defaults hold.
            "CALLBRIDGE_PER_IP_HOURLY": "10",
            "CALLBRIDGE_PER_IP_BLOCK_HOURLY": "30",
            "CALLBRIDGE_DISTINCT_NUMBERS_PER_IP_DAILY": "3",
            # Just what the traffic asks for: one more would be refused.
            "CALLBRIDGE_PER_COUNTRY_DAILY": str(self.calls),
            "CALLBRIDGE_PER_PREFIX_DAILY": str(per_prefix),
            "CALLBRIDGE_MAX_CONCURRENT_CALLS": str(self.max_concurrent_calls),
            "CALLBRIDGE_DAILY_SPEND_CAP_CENTS": str(spend_cap),
            "CALLBRIDGE_MAX_RATE_CENTS_PER_MINUTE": "15",
        }


def ci_profile() -> SoakProfile:
    """The run CI makes: 300 calls over three minutes, every fault once."""
    return SoakProfile()
