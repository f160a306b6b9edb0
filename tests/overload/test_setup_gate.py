"""The overload gate's decisions (pure: a hand-moved clock, no server)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import pytest

from callbridge.errors import Overloaded
from callbridge.metrics import Metrics
from callbridge.services.overload import SetupGate


class Clock:
    """Monotonic seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@asynccontextmanager
async def held(gate: SetupGate, count: int) -> AsyncIterator[None]:
    """``count`` set-ups in flight for the duration of the block."""
    async with AsyncExitStack() as stack:
        for _ in range(count):
            await stack.enter_async_context(gate.setup())
        yield


async def slow_setups(gate: SetupGate, clock: Clock, count: int, took_s: float) -> None:
    """``count`` set-ups under way together, each finishing after ``took_s`` seconds."""
    async with held(gate, count):
        clock.now += took_s


async def test_a_setup_over_the_bound_is_shed_with_retry_after_and_counted() -> None:
    """With max_in_flight set-ups under way the next one raises Overloaded (503, with a
    Retry-After) at once, and the shed is counted; once one finishes there is room."""
    metrics = Metrics()
    gate = SetupGate(max_in_flight=2, clock=Clock(), metrics=metrics)
    async with held(gate, 2):
        with pytest.raises(Overloaded) as refused:
            async with gate.setup():
                pytest.fail("admitted over the bound")
        assert refused.value.http_status == 503 and refused.value.code == "overloaded"
        assert refused.value.retry_after and refused.value.retry_after > 0
        assert gate.in_flight == 2
    assert gate.in_flight == 0
    async with held(gate, 2):
        pass
    shed = metrics.setups_shed.labels(reason="in_flight")._value.get()
    assert shed == 1


async def test_a_setup_that_fails_gives_its_place_back() -> None:
    """A set-up that raises (a Twilio refusal, a policy refusal) frees its place."""
    gate = SetupGate(max_in_flight=1, clock=Clock())
    with pytest.raises(ValueError, match="refused"):
        async with gate.setup():
            raise ValueError("refused")
    async with held(gate, 1):
        assert gate.in_flight == 1


async def test_a_standing_queue_sheds_new_setups_for_an_interval() -> None:
    """When even the fastest set-up of an interval missed the target, new set-ups are
    shed (queue_delay) until an interval passes; then the gate opens again."""
    clock = Clock()
    gate = SetupGate(max_in_flight=100, target_s=2.0, interval_s=1.0, clock=clock)
    await slow_setups(gate, clock, 3, took_s=2.5)  # every set-up that finished was slow
    clock.now += 1.0
    with pytest.raises(Overloaded):
        async with gate.setup():
            pytest.fail("admitted while set-ups were queueing")
    clock.now += 1.1  # an interval with nothing finished: no sign of a queue
    async with gate.setup():
        pass


async def test_one_slow_setup_or_an_old_one_is_no_queue() -> None:
    """A single slow set-up (Twilio retrying) and slow set-ups long ago shed nothing."""
    clock = Clock()
    gate = SetupGate(max_in_flight=100, target_s=2.0, interval_s=1.0, clock=clock)
    await slow_setups(gate, clock, 1, took_s=3.0)
    clock.now += 1.0
    async with gate.setup():
        pass
    await slow_setups(gate, clock, 3, took_s=2.5)
    clock.now += 600  # quiet for ten minutes
    async with gate.setup():
        pass


async def test_zero_turns_the_gate_off() -> None:
    """max_in_flight=0 admits everything (the operator's way back to no bound)."""
    gate = SetupGate(max_in_flight=0, clock=Clock())
    async with held(gate, 50):
        pass


async def test_an_event_loop_always_late_sheds_new_setups() -> None:
    """When every tick of an interval ran later than the loop target (live calls hold the
    loop), new set-ups are shed (loop_lag); one late tick among prompt ones sheds nothing."""
    clock = Clock()
    metrics = Metrics()
    gate = SetupGate(
        max_in_flight=100, loop_target_s=0.1, interval_s=1.0, clock=clock, metrics=metrics
    )
    for late in (0.3, 0.002, 0.25):  # one prompt tick: the loop keeps up
        gate.observe_loop_lag(late)
        clock.now += 0.4
    async with gate.setup():
        pass
    for late in (0.3, 0.2, 0.25):
        gate.observe_loop_lag(late)
        clock.now += 0.4
    with pytest.raises(Overloaded):
        async with gate.setup():
            pytest.fail("admitted while the event loop was behind")
    assert metrics.setups_shed.labels(reason="loop_lag")._value.get() == 1
    clock.now += 1.1
    async with gate.setup():
        pass
