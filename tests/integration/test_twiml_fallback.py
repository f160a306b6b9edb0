"""Our TwiML endpoint failing for one call: Twilio's fallback path, end to end.

A thin ASGI layer in front of the real server answers 500 to the first TwiML
request of one call (as a crashed worker or a failing proxy would). The Twilio
emulator then requests the FallbackUrl we gave on create, signed, with
``ErrorCode`` and ``ErrorUrl``; our fallback answers with an apology and
``<Hangup/>``, the callee hears it and the call ends, recorded failed with
Twilio's code.
"""

from __future__ import annotations

from urllib.parse import parse_qs

from starlette.types import ASGIApp, Receive, Scope, Send

from tests.integration.helpers import VISITOR, finished, place
from tests.support.app import running_sandbox


class FailFirstTwiml:
    """Answers 500 to the first ``POST /api/call/twiml`` that names a call id."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.failed: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            not self.failed
            and scope["type"] == "http"
            and scope["method"] == "POST"
            and scope["path"] == "/api/call/twiml"
            and "call_id" in parse_qs(scope["query_string"].decode())
        ):
            self.failed.append(scope["query_string"].decode())
            await send({"type": "http.response.start", "status": 500, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        await self.app(scope, receive, send)


async def test_a_failing_twiml_answer_falls_back_to_our_apology_and_the_call_ends() -> None:
    """The first TwiML request 500s: the emulator requests our fallback with ErrorCode
    11200, our server verifies the signature and answers an apology and <Hangup/>; the
    callee hears it, the agent is never connected, and the call is recorded failed with
    Twilio's code."""
    layers: list[FailFirstTwiml] = []

    def front(app: ASGIApp) -> ASGIApp:
        layers.append(FailFirstTwiml(app))
        return layers[0]

    env = {"CALLBRIDGE_SANDBOX_CALLEE": "answer=0.2,digits=1,hangup=10"}
    async with running_sandbox(env, front=front) as sb:
        body = await place(sb, VISITOR)
        sim = await finished(sb, body)
        assert layers[0].failed == [f"call_id={body['call_id']}"]
        twiml_hooks = [w for w in sim.webhooks if w.kind == "twiml"]
        assert [w.status_code for w in twiml_hooks] == [500, 200]
        fallback = twiml_hooks[1]
        assert fallback.url == sb.base_url + "/api/call/twiml?step=fallback"
        assert fallback.params["ErrorCode"] == "11200"
        assert fallback.params["ErrorUrl"] == twiml_hooks[0].url
        assert sim.said == [
            "Sorry, something went wrong on our side. Please try again later. Goodbye."
        ]
        assert sim.status == "completed" and sim.end_reason == "twiml-ended"
        assert not sim.streams and not sb.elevenlabs.conversations
        call = await sb.container.store.get_call(body["call_id"])
        assert call is not None
        assert call.status.value == "failed"
        assert (call.failure_code, call.provider_error_code) == ("twiml_error", 11200)
        events = [e.status for e in await sb.container.store.events(body["call_id"])]
        assert "twiml_fallback" in events and "completed" in events
