"""A PostgreSQL outage, end to end: clear 503s everywhere, nothing lost, recovery without restart.

A real callbridge server (uvicorn, the sandbox emulators) runs on a private
PostgreSQL cluster that the test stops for a few seconds (``pg_ctl stop -m fast``)
and starts again. One outage serves every check, to keep the file quick.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest
import websockets

from callbridge.adapters.elevenlabs.webhook_signature import HEADER, sign
from callbridge.services.placing import STATUS_CALLBACK_OVERRIDES
from tests.integration.helpers import VISITOR, signed_post, wait_for_status
from tests.operator.conftest import ADMIN_ENV, TOKEN, signed_in
from tests.outage.conftest import PrivateCluster
from tests.support.app import Sandbox, running_sandbox, twilio_signature
from tests.support.wait import wait_until

pytestmark = pytest.mark.postgres

_SECRET = "whsec_outage_test_secret"
_ENV = {
    **ADMIN_ENV,
    "CALLBRIDGE_SANDBOX_CALLEE": "no-answer",  # rings until the test hangs up
    "CALLBRIDGE_RING_TIMEOUT": "60",
    "ELEVENLABS_WEBHOOK_SECRET": _SECRET,
}


def assert_unavailable(response: httpx.Response, what: str) -> None:
    """503 ``unavailable`` as JSON, with Retry-After: never a 500, never plain text."""
    assert response.status_code == 503, (what, response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json"), what
    body = response.json()
    assert body["success"] is False and body["error"]["code"] == "unavailable", (what, body)
    assert int(response.headers["retry-after"]) > 0, what


def _start_message(call_sid: str, call_id: str, token: str) -> str:
    stream = "MZ" + "2" * 32
    return json.dumps({
        "event": "start", "sequenceNumber": "1", "streamSid": stream,
        "start": {"accountSid": "AC" + "0" * 32, "streamSid": stream, "callSid": call_sid,
                  "tracks": ["inbound"], "customParameters": {"call_id": call_id, "token": token},
                  "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}},
    })  # fmt: skip


async def _stream_close_code(sb: Sandbox, call_sid: str, call_id: str) -> int | None:
    url = sb.base_url.replace("http://", "ws://") + "/api/call/media-stream"
    headers = {"X-Twilio-Signature": twilio_signature(sb, url)}
    token = sb.container.stream_tokens.token_for(call_id)
    async with websockets.connect(url, additional_headers=headers, open_timeout=5) as ws:
        await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        await ws.send(_start_message(call_sid, call_id, token))
        try:
            async with asyncio.timeout(10):
                async for _ in ws:
                    pass
        except websockets.ConnectionClosed:
            pass
        return ws.close_code


async def _elevenlabs_webhook(sb: Sandbox) -> httpx.Response:
    body = json.dumps({
        "type": "post_call_transcription", "event_timestamp": int(time.time()),
        "data": {"agent_id": "agent_x", "conversation_id": "conv_outage_1", "status": "done",
                 "transcript": [], "metadata": {}, "analysis": {}},
    }).encode()  # fmt: skip
    headers = {HEADER: sign(body, _SECRET, int(time.time())), "Content-Type": "application/json"}
    return await sb.http.post("/api/webhooks/elevenlabs", content=body, headers=headers)


async def _ringing_call(sb: Sandbox) -> dict[str, Any]:
    response = await sb.request_call(VISITOR)
    assert response.status_code == 200, response.text
    placed: dict[str, Any] = response.json()
    await wait_for_status(sb, placed["call_id"], {"ringing"})
    return placed


async def test_a_database_outage_answers_503_everywhere_loses_no_callback_and_heals(
    private_postgres: PrivateCluster,
) -> None:
    """While PostgreSQL is stopped every endpoint that needs it answers JSON 503 with
    Retry-After (the stream door closes 1013), /readyz names the database, a call
    request records and places nothing, and the status callback Twilio sends meanwhile
    is retried until it is applied once the database is back; the same process then
    serves normally."""
    async with running_sandbox(_ENV, database_url=private_postgres.url) as sb:
        placed = await _ringing_call(sb)
        call_id, sid = placed["call_id"], placed["call_sid"]
        calls_at_twilio = len(sb.twilio.calls)
        token = await sb.token()  # issued before: redeeming it needs no database
        async with signed_in(sb) as admin:
            await asyncio.to_thread(private_postgres.stop)
            outage_began = time.monotonic()

            ready = await sb.http.get("/readyz")
            assert ready.status_code == 503 and ready.json()["down"] == ["database"]
            assert "retry-after" in ready.headers
            assert_unavailable(await sb.http.get(f"/api/call/{call_id}"), "call status")
            assert_unavailable(await sb.http.get(f"/api/call/{call_id}/events"), "events")
            outbound = await sb.http.post(
                "/api/call/outbound",
                json={"to_number": "+12025550143"},
                headers={"X-Callbridge-Token": token},
            )
            assert_unavailable(outbound, "outbound")
            session = await sb.http.get("/api/call/session")
            assert session.status_code == 200  # needs no store
            twiml_params = {"CallSid": sid, "AccountSid": sb.container.account_sid,
                            "CallStatus": "in-progress"}  # fmt: skip
            assert_unavailable(
                await signed_post(sb, f"/api/call/twiml?call_id={call_id}", twiml_params), "twiml"
            )
            fallback = await signed_post(sb, "/api/call/twiml?step=fallback", twiml_params)
            assert fallback.status_code == 200 and "<Say" in fallback.text  # needs no store
            status_params = {**twiml_params, "CallStatus": "ringing", "SequenceNumber": "9"}
            assert_unavailable(
                await signed_post(sb, f"/api/call/status?call_id={call_id}", status_params),
                "status callback",
            )
            assert await _stream_close_code(sb, sid, call_id) == 1013
            assert_unavailable(await _elevenlabs_webhook(sb), "elevenlabs webhook")
            assert_unavailable(await admin.get("/admin"), "admin overview")
            assert_unavailable(await admin.get(f"/admin/calls/{call_id}"), "admin call page")
            bearer = {"Authorization": f"Bearer {TOKEN}"}
            assert_unavailable(await sb.http.get("/api/admin/calls", headers=bearer), "api")
            metrics = await sb.http.get("/metrics")
            assert metrics.status_code == 200  # needs no store

            # Twilio's final callback for the call leaves during the outage, and is refused.
            # It leaves only now, so that its retries (15 s at most, Twilio's limit) span
            # the database's return however long the checks above took on a slow machine.
            sb.twilio.callee_hangup(sid)
            await wait_until(lambda: any(w.kind == "status" and w.status_code == 503
                                         for w in sb.twilio.calls[sid].webhooks), 10)  # fmt: skip
            await asyncio.to_thread(private_postgres.start)
            back = time.monotonic()

            # The callback sent during the outage is applied: the call ends, once.
            ended = await wait_for_status(sb, call_id, {"busy"}, timeout=20)
            print(f"outage {back - outage_began:.1f} s; callback applied "
                  f"{time.monotonic() - back:.1f} s after the database was back")  # fmt: skip
            assert ended.ended_at is not None

            # The retry that applied it is recorded at Twilio once its answer arrives, a
            # moment after the store wrote the status: wait for that answer, not the write.
            def busy_attempts() -> list[Any]:
                return [w for w in sb.twilio.calls[sid].webhooks
                        if w.kind == "status" and w.params["CallStatus"] == "busy"]  # fmt: skip

            await wait_until(lambda: [w.status_code for w in busy_attempts()][-1:] == [204], 10)
            attempts = busy_attempts()
            print("status callback attempts:", [w.status_code for w in attempts])
            assert 503 in [w.status_code for w in attempts]
            assert len({(w.idempotency_token, w.signature) for w in attempts}) == 1
            events = [e for e in await sb.container.store.events(call_id) if e.status == "busy"]
            assert len(events) == 1

            # Recovered in the same process.
            assert (await sb.http.get("/readyz")).status_code == 200
            assert (await sb.http.get(f"/api/call/{call_id}")).json()["status"] == "busy"
            assert (await admin.get("/admin")).status_code == 200
        # Nothing half-written: the refused request left no row and no Twilio call.
        recent = await sb.container.store.recent_calls(limit=10)
        assert [c.id for c in recent] == [call_id]
        assert len(sb.twilio.calls) == calls_at_twilio
        after = await sb.request_call("+12025550144")
        assert after.status_code == 200, after.text


def test_the_status_callback_url_asks_twilio_to_retry_5xx() -> None:
    """The StatusCallback we give Twilio carries connection overrides that retry a 5xx,
    a refused connection and a read timeout, within Twilio's documented limits."""
    from urllib.parse import parse_qsl

    from callbridge.services.placing import status_callback_url

    url = status_callback_url("https://calls.example.com", "c1")
    path, _, fragment = url.partition("#")
    assert path == "https://calls.example.com/api/call/status?call_id=c1"
    fields = dict(parse_qsl(fragment))
    assert fragment == STATUS_CALLBACK_OVERRIDES
    assert {"5xx", "ct", "rt"} <= set(fields["rp"].split(","))
    assert 1 <= int(fields["rc"]) <= 5 and 100 <= int(fields["tt"]) <= 15000
    assert 100 <= int(fields["ct"]) <= 10000 and 100 <= int(fields["rt"]) <= 15000
