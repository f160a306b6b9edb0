"""Issue 11 §5 over real HTTP: call set-ups past the bound are shed at once, and Twilio's
status callbacks are processed while set-ups are saturated."""

from __future__ import annotations

import asyncio

import httpx

from tests.integration.helpers import VISITOR, place, wait_until
from tests.support.app import Sandbox, count_rows, running_sandbox

_ENV = {
    "CALLBRIDGE_MAX_SETUPS_IN_FLIGHT": "2",
    "CALLBRIDGE_SANDBOX_CALLEE": "answer=0.2,digits=1,hangup=60",
}
_OTHERS = ["+12025550143", "+12025550144", "+12025550145"]


class HeldCreates:
    """Twilio create requests held until :attr:`release` is set; :attr:`waiting` counts them."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.waiting = 0


def hold_creates(sb: Sandbox) -> HeldCreates:
    """Hold every Twilio create request our adapter sends until released (a slow Twilio,
    as seen from callbridge); nothing else on the client is held."""
    held = HeldCreates()

    async def hook(request: httpx.Request) -> None:
        if request.method == "POST" and request.url.path.endswith("/Calls.json"):
            held.waiting += 1
            await held.release.wait()

    sb.container.http.event_hooks["request"].append(hook)
    return held


async def test_setups_over_the_bound_are_shed_and_callbacks_still_land() -> None:
    """With CALLBRIDGE_MAX_SETUPS_IN_FLIGHT=2 and two set-ups stuck waiting for Twilio, a
    third request is answered 503 overloaded with Retry-After, records and places
    nothing; a live call's status callback is still processed meanwhile, and the held
    set-ups finish normally once Twilio answers."""
    async with running_sandbox(_ENV) as sb:
        live = await place(sb, VISITOR)
        sim = sb.twilio.calls[live["call_sid"]]
        await wait_until(lambda: sim.status == "in-progress", 10)
        twilio = hold_creates(sb)
        held = [asyncio.create_task(sb.request_call(n)) for n in _OTHERS[:2]]
        await wait_until(lambda: sb.container.setup_gate.in_flight == 2, 10)
        # Both set-ups have recorded their calls once their creates reach Twilio: count
        # the rows only then, or a slow insert lands after the count.
        await wait_until(lambda: twilio.waiting == 2, 10)
        rows = await count_rows(sb, "calls")

        shed = await sb.request_call(_OTHERS[2])

        assert shed.status_code == 503, shed.text
        assert shed.json()["error"]["code"] == "overloaded"
        assert shed.json()["success"] is False
        assert int(shed.headers["Retry-After"]) > 0
        assert await count_rows(sb, "calls") == rows
        assert [c for c in sb.twilio.calls.values() if c.to == _OTHERS[2]] == []

        sb.twilio.callee_hangup(live["call_sid"])  # Twilio posts "completed" to us now

        async def ended() -> bool:
            call = await sb.container.store.get_call(live["call_id"])
            return call is not None and call.status.value == "completed"

        await wait_until(ended, 10)
        assert sb.container.setup_gate.in_flight == 2  # still saturated throughout
        twilio.release.set()
        answers = await asyncio.gather(*held)
        assert [a.status_code for a in answers] == [200, 200]
        assert sb.container.setup_gate.in_flight == 0
