"""The drain's steps with fakes: grace, goodbye for answered calls, hang-up for ringing ones."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from callbridge.domain.call import Call, CallMode, CallStatus, ChatContext
from callbridge.errors import ErrorCategory, ProviderError
from callbridge.ports import CallEvent
from callbridge.services.drain import DrainConfig, Drainer


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> datetime:
        return datetime(2026, 11, 20, tzinfo=UTC)

    def monotonic(self) -> float:
        return self.t


def _call(call_id: str, status: CallStatus) -> Call:
    return Call(
        id=call_id,
        to_number="+12025550143",
        mode=CallMode.AGENT,
        status=status,
        created_at=datetime(2026, 11, 20, tzinfo=UTC),
        context=ChatContext(),
        dialled_number="+12025550143",
        call_sid="CA" + call_id,
    )


class _World:
    def __init__(self, calls: list[Call]) -> None:
        self.live = calls
        self.clock = _Clock()
        self.actions: list[tuple[str, str]] = []
        self.events: list[CallEvent] = []
        self.began = False
        self.fail_for: set[str] = set()

    async def live_calls(self) -> list[Call]:
        return list(self.live)

    async def sleep(self, seconds: float) -> None:
        self.clock.t += seconds

    async def redirect(self, sid: str, *, twiml: str | None = None, url: str | None = None) -> None:
        if sid in self.fail_for:
            raise ProviderError("gone", provider="twilio", category=ErrorCategory.CLIENT)
        self.actions.append(("redirect", sid))
        self.live = [c for c in self.live if c.call_sid != sid]

    async def hang_up(self, sid: str) -> None:
        self.actions.append(("hang_up", sid))
        self.live = [c for c in self.live if c.call_sid != sid]

    async def add_event(self, event: CallEvent) -> bool:
        self.events.append(event)
        return True

    def drainer(self, grace: float) -> Drainer:
        def begin() -> None:
            self.began = True

        return Drainer(
            config=DrainConfig(grace_s=grace, goodbye_wait_s=2, poll_s=0.5),
            begin=begin,
            live_calls=self.live_calls,
            telephony=self,  # type: ignore[arg-type]
            goodbye_twiml="<Response><Say>bye</Say><Hangup/></Response>",
            store=self,
            clock=self.clock,
            sleep=self.sleep,  # type: ignore[arg-type]
        )


async def test_no_live_calls_means_an_immediate_drain() -> None:
    """With nothing live, the drain flags the process and returns without waiting."""
    world = _World([])
    report = await world.drainer(30).drain()
    assert world.began and world.clock.t == 0 and report.ended == []


async def test_answered_calls_get_the_goodbye_and_ringing_ones_are_hung_up() -> None:
    """After the grace period an in-progress call is redirected and a ringing one hung up;
    each gets a timeline event."""
    world = _World([_call("a", CallStatus.IN_PROGRESS), _call("b", CallStatus.RINGING)])
    report = await world.drainer(3).drain()
    assert world.clock.t >= 3
    assert world.actions == [("redirect", "CAa"), ("hang_up", "CAb")]
    assert [e.status for e in world.events] == ["drain_goodbye", "drain_hung_up"]
    assert report.ended == ["a", "b"] and report.still_live == []


async def test_a_failed_redirect_is_reported_not_raised() -> None:
    """A call Twilio no longer knows is left in ``still_live``; the drain still finishes."""
    world = _World([_call("a", CallStatus.IN_PROGRESS)])
    world.fail_for = {"CAa"}
    report = await world.drainer(1).drain()
    assert report.ended == [] and report.still_live == ["a"]


async def test_the_drain_runs_once() -> None:
    """A second drain returns at once."""
    world = _World([replace(_call("a", CallStatus.IN_PROGRESS))])
    drainer = world.drainer(1)
    await drainer.drain()
    again = await drainer.drain()
    assert again.ended == [] and again.finished_in_grace == 0
