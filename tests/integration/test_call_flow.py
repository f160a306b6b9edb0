"""Issue 2, "Done when": one call to the documented number, end to end over real HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
import pytest_asyncio

from tests.integration.helpers import DOCUMENTED, DOCUMENTED_E164, finished, place
from tests.support.app import Sandbox, running_sandbox

pytestmark = pytest.mark.asyncio(loop_scope="module")

_LIFECYCLE = ["queued", "initiated", "ringing", "in-progress", "completed"]


@dataclass
class Placed:
    sb: Sandbox
    answer: dict[str, Any]
    sim: Any
    sse: list[dict[str, Any]]
    sse_closed: bool


async def _follow(sb: Sandbox, call_id: str) -> tuple[list[dict[str, Any]], bool]:
    events: list[dict[str, Any]] = []
    async with sb.http.stream("GET", f"/api/call/{call_id}/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        kind = None
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: ") and kind == "status":
                events.append(orjson.loads(line.removeprefix("data: ")))
    return events, True


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def placed() -> AsyncIterator[Placed]:
    env = {"CALLBRIDGE_SANDBOX_CALLEE": "answer=0.5,digits=1,hangup=1.2"}
    async with running_sandbox(env) as sb:
        answer = await place(
            sb,
            DOCUMENTED,
            name="Ada Lovelace",
            reason="pricing",
            summary="Asked about the team plan.",
            conversation_id="conv_web_1",
        )
        follower = asyncio.create_task(_follow(sb, answer["call_id"]))
        sim = await finished(sb, answer)
        sse, closed = await asyncio.wait_for(follower, 10)
        yield Placed(sb, answer, sim, sse, closed)


async def test_answer_has_the_original_shape(placed: Placed) -> None:
    """The call request is answered like the original service: success, message, sid, status."""
    answer = placed.answer
    assert answer["success"] is True
    assert answer["message"] == "Call initiated successfully"
    assert answer["status"] == "queued"
    assert answer["call_sid"].startswith("CA") and len(answer["call_sid"]) == 34
    assert answer["call_id"]


async def test_emulator_sees_the_whole_lifecycle(placed: Placed) -> None:
    """Twilio reports initiated, ringing, in-progress and completed, with a duration."""
    sim = placed.sim
    assert sim.to == DOCUMENTED_E164
    statuses = [cb["CallStatus"] for cb in sim.callbacks]
    assert statuses == ["initiated", "ringing", "in-progress", "completed"]
    assert [cb["SequenceNumber"] for cb in sim.callbacks] == ["0", "1", "2", "3"]
    assert int(sim.callbacks[-1]["CallDuration"]) >= 1
    status_hooks = [w for w in sim.webhooks if w.kind == "status"]
    assert [w.status_code for w in status_hooks] == [204] * 4


async def test_call_row_holds_the_call(placed: Placed) -> None:
    """The call row holds the number, SID, mode, status, context, times and duration."""
    call = await placed.sb.container.store.get_call(placed.answer["call_id"])
    assert call is not None
    assert call.to_number == DOCUMENTED_E164
    assert call.call_sid == placed.answer["call_sid"]
    assert call.mode.value == "agent"
    assert call.status.value == "completed"
    assert call.context.visitor_name == "Ada Lovelace"
    assert call.context.reason == "pricing"
    assert call.context.summary == "Asked about the team plan."
    assert call.context.conversation_id == "conv_web_1"
    assert call.answered_at is not None and call.ended_at is not None
    assert call.created_at <= call.answered_at <= call.ended_at
    assert call.duration_s == int(placed.sim.callbacks[-1]["CallDuration"])


async def test_every_callback_is_an_event_with_its_sequence_number(placed: Placed) -> None:
    """Each status callback is kept as one event row with its SequenceNumber."""
    events = await placed.sb.container.store.events(placed.answer["call_id"])
    twilio = [(e.status, e.sequence_number) for e in events if e.source == "twilio"]
    assert twilio == [("initiated", 0), ("ringing", 1), ("in-progress", 2), ("completed", 3)]
    assert [e.status for e in events if e.source == "service"][:2] == ["requested", "queued"]
    completed = next(e for e in events if e.source == "twilio" and e.status == "completed")
    assert completed.detail["CallDuration"] == placed.sim.callbacks[-1]["CallDuration"]


async def test_public_view_masks_the_number_and_hides_private_fields(placed: Placed) -> None:
    """GET /api/call/{id} tells the status and duration, masks the number, hides the rest."""
    response = await placed.sb.http.get(f"/api/call/{placed.answer['call_id']}")
    assert response.status_code == 200
    view = response.json()
    assert view["status"] == "completed"
    assert view["duration"] == int(placed.sim.callbacks[-1]["CallDuration"])
    assert view["to"].endswith("8900") and "234567" not in view["to"].replace(" ", "")
    raw = response.text
    for private in (
        "Ada",
        "pricing",
        "team plan",
        "conv_web_1",
        placed.answer["call_sid"],
        "stream",
        "token",
        "transcript",
        DOCUMENTED_E164,
    ):
        assert private not in raw


async def test_unknown_call_is_404(placed: Placed) -> None:
    """A call id that does not exist gets 404 on both the view and the event stream."""
    assert (await placed.sb.http.get("/api/call/call_nope")).status_code == 404
    assert (await placed.sb.http.get("/api/call/call_nope/events")).status_code == 404


async def test_event_stream_delivers_each_status_then_ends(placed: Placed) -> None:
    """The SSE stream sends each status once, in order, and closes after ``completed``."""
    statuses = [e["status"] for e in placed.sse]
    assert placed.sse_closed
    assert statuses[-1] == "completed"
    assert "in-progress" in statuses
    assert statuses == _LIFECYCLE[_LIFECYCLE.index(statuses[0]) :]
    assert placed.sse[-1]["duration"] == int(placed.sim.callbacks[-1]["CallDuration"])
    assert all(e["call_id"] == placed.answer["call_id"] for e in placed.sse)
