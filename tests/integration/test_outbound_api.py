"""``POST /api/call/outbound``: input, normalisation, idempotency, Twilio refusals and retries."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

from tests.integration.helpers import VISITOR, wait_until
from tests.support.app import Sandbox, count_rows, running_sandbox

_COUNTRY_REFUSALS = [
    (400, 21211, "The 'To' number +12025550142 is not a valid phone number.", "invalid_number"),
    (400, 21214, "'To' phone number cannot be reached", "unreachable"),
    (400, 21215, "Account not authorized to call +12025550142.", "blocked_by_provider"),
    (400, 21216, "Call blocked by Twilio", "blocked_by_provider"),
    (
        400,
        21219,
        "The number +12025550142 is unverified. Trial accounts may only make calls "
        "to verified numbers.",
        "unverified_number",
    ),
]


def _creates(sb: Sandbox) -> list[httpx.Request]:
    """Record every create request our Twilio adapter sends (hook on the shared client)."""
    seen: list[httpx.Request] = []

    async def hook(request: httpx.Request) -> None:
        if request.method == "POST" and request.url.path.endswith("/Calls.json"):
            seen.append(request)

    sb.container.http.event_hooks["request"].append(hook)
    return seen


def _calls_to(sb: Sandbox, e164: str) -> list[Any]:
    return [c for c in sb.twilio.calls.values() if c.to == e164]


async def test_optional_fields_are_accepted_and_kept() -> None:
    """The original body plus name, reason, summary and conversation_id is accepted."""
    async with running_sandbox() as sb:
        response = await sb.request_call(
            VISITOR,
            name="Grace",
            reason="a demo",
            summary="Wants a demo.",
            conversation_id="conv_1",
        )
        assert response.status_code == 200
        body = response.json()
        assert set(body) >= {"success", "message", "call_sid", "status", "call_id"}
        assert (body["success"], body["status"]) == (True, "queued")
        call = await sb.container.store.get_call(body["call_id"])
        assert call is not None and call.context.visitor_name == "Grace"


@pytest.mark.parametrize(
    "raw",
    ["(202) 555-0142", "202.555.0142", "+1-202-555-0142", "1 202 555 0142", " +1 (202) 555 0142 "],
)
async def test_numbers_in_common_formats_are_normalised(raw: str) -> None:
    """A US number in any common format is dialled in E.164."""
    async with running_sandbox() as sb:
        response = await sb.request_call(raw)
        assert response.status_code == 200, response.text
        assert sb.twilio.calls[response.json()["call_sid"]].to == "+12025550142"


async def test_national_numbers_use_the_default_region() -> None:
    """A national number is read in CALLBRIDGE_DEFAULT_REGION."""
    env = {"CALLBRIDGE_DEFAULT_REGION": "GB", "CALLBRIDGE_ALLOWED_COUNTRIES": "GB"}
    async with running_sandbox(env) as sb:
        response = await sb.request_call("020 7946 0018")
        assert response.status_code == 200, response.text
        assert sb.twilio.calls[response.json()["call_sid"]].to == "+442079460018"


@pytest.mark.parametrize(
    ("content", "status", "code"),
    [
        (b"not json", 400, "invalid_request"),
        (b"[1, 2]", 400, "invalid_request"),
        (b"{}", 400, "invalid_request"),
        (b'{"to_number": ""}', 400, "invalid_request"),
        (b'{"to_number": "+12025550142", "from": "+12025550100"}', 400, "unknown_field"),
        (b'{"to_number": "+12025550142", "prompt": "ignore all"}', 400, "unknown_field"),
        (b'{"to_number": 12025550142}', 400, "invalid_request"),
        (b'{"to_number": "12"}', 422, "invalid_number"),
        (b'{"to_number": "call me maybe"}', 422, "invalid_number"),
    ],
)
async def test_bad_input_is_refused_and_nothing_is_recorded(
    content: bytes, status: int, code: str
) -> None:
    """Malformed input gets the error body with the right 4xx; no call is recorded or placed."""
    async with running_sandbox() as sb:
        headers = {"X-Callbridge-Token": await sb.token(), "Content-Type": "application/json"}
        response = await sb.http.post("/api/call/outbound", content=content, headers=headers)
        assert response.status_code == status, response.text
        body = response.json()
        assert body["success"] is False
        assert body["error"]["code"] == code
        assert isinstance(body["error"]["message"], str) and body["error"]["message"]
        assert await count_rows(sb, "calls") == 0
        assert sb.twilio.calls == {}


async def test_idempotency_key_replays_the_first_answer_and_places_one_call() -> None:
    """A retried request with the same Idempotency-Key gets the first answer; one call is placed."""
    async with running_sandbox() as sb:
        answers = []
        for _ in range(3):
            headers = {"X-Callbridge-Token": await sb.token(), "Idempotency-Key": "retry-7f3a"}
            response = await sb.http.post(
                "/api/call/outbound", json={"to_number": VISITOR}, headers=headers
            )
            answers.append((response.status_code, response.json()))
        assert answers[0][0] == 200
        assert answers[1] == answers[0] and answers[2] == answers[0]
        assert len(sb.twilio.calls) == 1
        assert await count_rows(sb, "calls") == 1


@pytest.mark.parametrize(("http_status", "twilio_code", "message", "code"), _COUNTRY_REFUSALS)
async def test_twilio_refusals_are_recorded_and_explained(
    http_status: int, twilio_code: int, message: str, code: str
) -> None:
    """A Twilio refusal is recorded as failed with its code; the visitor gets a plain sentence."""
    async with running_sandbox() as sb:
        sb.twilio.refuse_number(VISITOR, http_status, twilio_code, message)
        creates = _creates(sb)
        response = await sb.request_call(VISITOR)
        await _assert_refused(sb, response, code, twilio_code)
        assert len(creates) == 1  # a refusal is not retried


async def test_bad_credentials_are_recorded_and_explained() -> None:
    """Twilio's 20003 (authentication) is recorded; the visitor is told to try later (503)."""
    async with running_sandbox() as sb:
        sb.twilio.inject_create_failure(401, 20003, "Authenticate")
        creates = _creates(sb)
        response = await sb.request_call(VISITOR)
        assert response.status_code == 503
        await _assert_refused(sb, response, "provider_auth", 20003)
        assert len(creates) == 1


async def _assert_refused(
    sb: Sandbox, response: httpx.Response, code: str, twilio_code: int
) -> None:
    assert 400 <= response.status_code < 600
    body = response.json()
    assert body["success"] is False
    assert body["error"]["code"] == code
    message = body["error"]["message"]
    assert str(twilio_code) not in message and "Twilio" not in message
    assert sb.twilio.calls == {}
    call = await sb.container.store.get_call(body["call_id"])
    assert call is not None
    assert call.status.value == "failed"
    assert call.failure_code == code
    assert call.provider_error_code == twilio_code
    view = (await sb.http.get(f"/api/call/{body['call_id']}")).json()
    assert view["status"] == "failed"
    assert view["failure"] == {"code": code, "message": message}


@pytest.mark.parametrize(("status", "code"), [(429, 20429), (500, 20500), (503, 20503)])
async def test_rate_limits_and_server_errors_that_placed_nothing_are_retried(
    status: int, code: int
) -> None:
    """429 and 5xx that placed no call are retried with backoff; one call results, and
    no request claims an idempotency header Twilio does not honour."""
    async with running_sandbox() as sb:
        sb.twilio.inject_create_failure(status, code, "Try again later", count=2)
        creates = _creates(sb)
        response = await sb.request_call(VISITOR)
        assert response.status_code == 200, response.text
        assert len(creates) == 3
        assert all("I-Twilio-Idempotency-Token" not in r.headers for r in creates)
        assert len(_calls_to(sb, VISITOR)) == 1
        assert response.json()["call_sid"] in sb.twilio.calls


@pytest.mark.parametrize(
    ("status", "code", "retries"),
    [(500, 20500, "2"), (502, 20500, "2"), (503, 20503, "2"), (500, 20500, "0")],
)
async def test_a_5xx_after_placing_then_a_retry_places_exactly_one_call(
    status: int, code: int, retries: str
) -> None:
    """Twilio places the call but answers 5xx: we look before retrying (or, with no
    retry left, before giving up), find it in Twilio's call list or through its first
    status callback, and never create a second one; the visitor gets the call that rings."""
    env = {"CALLBRIDGE_SANDBOX_CALLEE": "answer=0.5,hangup=2", "CALLBRIDGE_CREATE_RETRIES": retries}
    async with running_sandbox(env) as sb:
        sb.twilio.inject_create_failure(status, code, "Internal Server Error", after_placing=True)
        creates = _creates(sb)
        response = await sb.request_call(VISITOR)
        assert response.status_code == 200, response.text
        assert len(creates) == 1  # found, so never re-sent
        placed = _calls_to(sb, VISITOR)
        assert [c.sid for c in placed] == [response.json()["call_sid"]]
        final = await wait_until(lambda: _final_status(sb, response.json()["call_id"]), 15)
        assert final == "completed"
        assert len(_calls_to(sb, VISITOR)) == 1


async def test_when_looking_fails_a_5xx_is_not_retried_blind() -> None:
    """A 5xx after placing, then Twilio's call list fails too, and no status callback
    has named the call: we cannot know whether it was placed, so the create is not
    sent again; the call is recorded failed (a late callback would hang it up)."""

    async def refuse_status_callbacks(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 503, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    def front(app: ASGIApp) -> ASGIApp:
        async def layer(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http" and scope["path"] == "/api/call/status":
                await refuse_status_callbacks(scope, receive, send)
                return
            await app(scope, receive, send)

        return layer

    env = {"CALLBRIDGE_SANDBOX_CALLEE": "busy", "CALLBRIDGE_CREATE_RETRIES": "2"}
    async with running_sandbox(env, front=front) as sb:
        sb.twilio.inject_create_failure(500, 20500, "Internal Server Error", after_placing=True)
        sb.twilio.inject_list_failure(503, 20503, "Service unavailable")
        creates = _creates(sb)
        response = await sb.request_call(VISITOR)
        assert response.status_code == 503, response.text
        assert len(creates) == 1
        assert len(_calls_to(sb, VISITOR)) == 1
        call = await sb.container.store.get_call(response.json()["call_id"])
        assert call is not None and call.status.value == "failed"


async def test_an_earlier_call_to_the_same_number_is_not_taken_for_a_lost_create() -> None:
    """A 5xx that placed nothing, with an earlier finished call of ours to the same
    number in Twilio's list: that call is not mistaken for this one, so the create is
    retried and a second, new call placed."""
    env = {"CALLBRIDGE_SANDBOX_CALLEE": "answer=0.2,hangup=0.3"}
    async with running_sandbox(env) as sb:
        first = await sb.request_call(VISITOR)
        assert first.status_code == 200, first.text
        assert await wait_until(lambda: _final_status(sb, first.json()["call_id"]), 15)
        sb.twilio.inject_create_failure(500, 20500, "Internal Server Error")
        creates = _creates(sb)

        async def admitted() -> httpx.Response | None:
            # The sandbox's one-second per-number cool-down refuses before Twilio is asked.
            answer = await sb.request_call(VISITOR)
            return None if answer.status_code == 429 else answer

        second = await wait_until(admitted, interval=0.2)
        assert second.status_code == 200, second.text
        assert len(creates) == 2
        sids = {c.sid for c in _calls_to(sb, VISITOR)}
        assert sids == {first.json()["call_sid"], second.json()["call_sid"]}
        assert first.json()["call_sid"] != second.json()["call_sid"]


async def test_retries_give_up_and_record_the_failure() -> None:
    """When every attempt gets 503 the call is recorded failed and no call exists."""
    async with running_sandbox({"CALLBRIDGE_CREATE_RETRIES": "1"}) as sb:
        sb.twilio.inject_create_failure(503, 20503, "Service unavailable", count=5)
        creates = _creates(sb)
        response = await sb.request_call(VISITOR)
        assert response.status_code == 503
        body = response.json()
        assert body["error"]["code"] == "provider_unavailable"
        assert len(creates) == 2
        assert sb.twilio.calls == {}
        call = await sb.container.store.get_call(body["call_id"])
        assert call is not None and call.status.value == "failed"


async def test_an_ambiguous_timeout_then_201_places_exactly_one_call() -> None:
    """A create that times out but was placed is found again, not placed twice."""
    async with running_sandbox() as sb:
        sb.container.telephony.request_timeout = 0.5
        sb.twilio.delay_next_create(1.5)
        creates = _creates(sb)
        response = await sb.request_call(VISITOR)
        assert response.status_code == 200, response.text
        assert len(_calls_to(sb, VISITOR)) == 1
        sid = response.json()["call_sid"]
        assert sid in sb.twilio.calls
        assert len(creates) == 1  # found in Twilio's list, so never re-sent
        call = await wait_until(lambda: sb.twilio.calls[sid].status != "queued")
        assert call


async def test_a_timeout_on_the_last_attempt_still_finds_the_placed_call() -> None:
    """With no retry left, a create that timed out but was placed is looked for before
    giving up (security.md 40): the visitor gets 200 and the call goes on. (Before, the
    call was recorded failed while the phone rang.)"""
    env = {"CALLBRIDGE_CREATE_RETRIES": "0", "CALLBRIDGE_SANDBOX_CALLEE": "answer=0.5,hangup=2"}
    async with running_sandbox(env) as sb:
        sb.container.telephony.request_timeout = 0.5
        sb.twilio.delay_next_create(1.5)
        response = await sb.request_call(VISITOR)
        assert response.status_code == 200, response.text
        assert [c.sid for c in _calls_to(sb, VISITOR)] == [response.json()["call_sid"]]
        final = await wait_until(lambda: _final_status(sb, response.json()["call_id"]), 15)
        assert final == "completed"


async def _final_status(sb: Sandbox, call_id: str) -> str | None:
    call = await sb.container.store.get_call(call_id)
    return call.status.value if call is not None and call.status.is_terminal else None


async def test_a_call_twilio_placed_after_we_gave_up_is_hung_up_while_it_rings() -> None:
    """The create reached Twilio only after our timeout (no retry left, and nothing to
    find yet), so the call is recorded failed and the visitor told so. Twilio's first
    callback for it gets it hung up through REST before the callee answers, and the agent
    is never contacted. (Before, the phone rang for a call we had called failed.)"""
    env = {"CALLBRIDGE_CREATE_RETRIES": "0", "CALLBRIDGE_SANDBOX_CALLEE": "answer=3,digits=1"}
    async with running_sandbox(env) as sb:
        sb.container.telephony.request_timeout = 0.5
        sb.twilio.delay_next_create(1.0, placed_late=True)
        response = await sb.request_call(VISITOR)
        assert response.status_code == 503, response.text
        call_id = response.json()["call_id"]
        placed = await wait_until(lambda: _calls_to(sb, VISITOR))
        sim = placed[0]
        await wait_until(lambda: sim.ended.is_set(), 10)
        assert "in-progress" not in [status for status, _ in sim.history]  # never answered
        call = await sb.container.store.get_call(call_id)
        assert call is not None and call.status.value == "failed"
        assert call.call_sid == sim.sid
        events = [e.status for e in await sb.container.store.events(call_id)]
        assert "late_call_ended" in events
        assert not sb.elevenlabs.conversations


async def test_a_create_placed_after_the_look_rings_once_more_and_is_hung_up() -> None:
    """The worst case of a lost create: it reaches Twilio only after we looked and
    retried, so Twilio places a second call. Its webhooks name our call id with another
    CallSid: it is hung up at once and never answered; the call we bound goes on."""
    env = {"CALLBRIDGE_CREATE_RETRIES": "1", "CALLBRIDGE_SANDBOX_CALLEE": "answer=3,hangup=1"}
    async with running_sandbox(env) as sb:
        sb.container.telephony.request_timeout = 0.5
        # Long after our look (0.5 s timeout, at most 0.75 s of backoff) and retry.
        sb.twilio.delay_next_create(4.0, placed_late=True)
        response = await sb.request_call(VISITOR)
        assert response.status_code == 200, response.text
        kept = response.json()["call_sid"]
        calls = await wait_until(
            lambda: len(_calls_to(sb, VISITOR)) == 2 and _calls_to(sb, VISITOR)
        )
        (duplicate,) = [c for c in calls if c.sid != kept]
        await wait_until(lambda: duplicate.ended.is_set(), 10)
        assert "in-progress" not in [status for status, _ in duplicate.history]
        final = await wait_until(lambda: _final_status(sb, response.json()["call_id"]), 15)
        assert final == "completed"
        call = await sb.container.store.get_call(response.json()["call_id"])
        assert call is not None and call.call_sid == kept
        events = await sb.container.store.events(response.json()["call_id"])
        assert [e.detail for e in events if e.status == "duplicate_call_ended"][:1] == [
            {"call_sid": duplicate.sid}
        ]
