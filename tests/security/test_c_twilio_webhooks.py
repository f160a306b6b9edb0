"""security.md C: Twilio's webhook doors (signatures, replays, order, identity, fail closed)."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
import websockets
from twilio.request_validator import RequestValidator

from callbridge.bootstrap import build
from callbridge.web.app import create_app
from tests.security.helpers import BUSY, NUMBERS, count_rows, ended, signed_post, twilio_signature
from tests.support.app import running_sandbox, settings_from
from tests.support.server import free_port, serve


async def _busy_call(sb: Any) -> tuple[str, str]:
    response = await sb.request_call(NUMBERS[0])
    assert response.status_code == 200
    body = response.json()
    await ended(sb, body["call_id"])
    return body["call_id"], body["call_sid"]


def _status(call_sid: str, status: str, seq: str) -> dict[str, str]:
    return {
        "CallSid": call_sid,
        "CallStatus": status,
        "SequenceNumber": seq,
        "AccountSid": "AC" + "0" * 32,
    }


async def test_c21_missing_or_forged_signatures_are_403_and_write_nothing() -> None:
    """TwiML and status webhooks without X-Twilio-Signature, or with a forged one, get 403
    and add no event and change no call. (Without the check they would be applied.)"""
    async with running_sandbox(BUSY) as sb:
        call_id, sid = await _busy_call(sb)
        before = await count_rows(sb, "call_events")
        params = _status(sid, "ringing", "9")
        for signature in (None, "", "bm90IGEgc2lnbmF0dXJl", twilio_signature(sb, "http://x/")):
            for path in ("/api/call/status", "/api/call/twiml"):
                response = await signed_post(sb, path, params, signature=signature)
                assert response.status_code == 403, (path, signature)
        assert await count_rows(sb, "call_events") == before
        call = await sb.container.store.get_call(call_id)
        assert call is not None and call.status.value == "busy"


async def test_c22_a_validly_signed_request_with_one_altered_parameter_is_403() -> None:
    """A signature computed for CallStatus=ringing does not cover CallStatus=completed."""
    async with running_sandbox(BUSY) as sb:
        _call_id, sid = await _busy_call(sb)
        before = await count_rows(sb, "call_events")
        url = f"{sb.container.public_base_url}/api/call/status"
        genuine = _status(sid, "ringing", "9")
        signature = twilio_signature(sb, url, genuine)
        altered = {**genuine, "CallStatus": "completed"}
        response = await signed_post(sb, "/api/call/status", altered, signature=signature)
        assert response.status_code == 403
        assert await count_rows(sb, "call_events") == before


async def test_c23_signatures_are_checked_against_the_public_url_not_forwarded_headers() -> None:
    """Behind a TLS proxy (PUBLIC_BASE_URL https), a request signed for the public https URL
    validates (here: 404, an unknown CallSid, past the signature); one signed for the
    internal URL, or for a host/proto spoofed with X-Forwarded-*, is 403. (Rebuilding the
    URL from the Host or X-Forwarded-* headers would accept the spoof.)"""
    env = {"PUBLIC_BASE_URL": "https://calls.example.com"}
    async with running_sandbox(env) as sb:
        params = _status("CA" + "1" * 32, "ringing", "1")
        public = await signed_post(sb, "/api/call/status", params)
        assert public.status_code == 404
        validator = RequestValidator(sb.container.auth_token)
        for url, headers in (
            (f"{sb.base_url}/api/call/status", {}),
            (
                "https://evil.example.com/api/call/status",
                {"X-Forwarded-Host": "evil.example.com", "X-Forwarded-Proto": "https"},
            ),
            ("http://calls.example.com/api/call/status", {"X-Forwarded-Proto": "http"}),
        ):
            signature = validator.compute_signature(url, params)
            response = await signed_post(
                sb, "/api/call/status", params, signature=signature, headers=headers
            )
            assert response.status_code == 403, url


async def test_c24_without_an_auth_token_every_webhook_is_403_and_readyz_fails() -> None:
    """A production build whose TWILIO_AUTH_TOKEN is empty refuses the TwiML, status,
    usage-trigger and media-stream doors and reports not ready. (A checker that skips
    validation when no token is set would accept them.)"""
    env = {
        "CALLBRIDGE_SANDBOX": "false",
        "TWILIO_ACCOUNT_SID": "AC" + "a" * 32,
        "TWILIO_AUTH_TOKEN": "",
        "TWILIO_PHONE_NUMBER": "+12025550100",
        "ELEVENLABS_AGENT_ID": "agent_x",
        "PUBLIC_BASE_URL": "https://calls.example.com",
        "TWILIO_API_BASE_URL": "http://127.0.0.1:9",
    }
    settings = settings_from(env)
    import tempfile

    settings = settings.model_copy(
        update={"database_url": f"sqlite+aiosqlite:///{tempfile.mkdtemp()}/cb.db"}
    )
    port = free_port()
    container = build(settings, host="127.0.0.1", port=port)
    assert container.sandbox is None and container.auth_token is None
    app = create_app(container)
    async with serve(app, port=port) as base, httpx.AsyncClient(base_url=base) as http:
        form = {"CallSid": "CA" + "1" * 32, "CallStatus": "ringing", "AccountSid": "AC" + "a" * 32}
        for path in ("/api/call/twiml", "/api/call/status", "/api/webhooks/twilio/usage-trigger"):
            response = await http.post(path, data=form, headers={"X-Twilio-Signature": "abc="})
            assert response.status_code == 403, path
        with pytest.raises(websockets.InvalidStatus):
            async with websockets.connect(
                f"ws://127.0.0.1:{port}/api/call/media-stream",
                additional_headers={"X-Twilio-Signature": "abc="},
            ):
                pass
        ready = await http.get("/readyz")
        assert ready.status_code == 503
        assert "TWILIO_AUTH_TOKEN" in " ".join(ready.json()["problems"])


async def test_c25_a_replayed_status_callback_changes_nothing() -> None:
    """Replaying a callback Twilio already delivered (same CallSid, status and
    SequenceNumber) is acknowledged and records no second event."""
    async with running_sandbox(BUSY) as sb:
        call_id, sid = await _busy_call(sb)
        delivered = sb.twilio.calls[sid].callbacks[-1]
        before = await count_rows(sb, "call_events")
        response = await signed_post(sb, "/api/call/status", delivered)
        assert response.status_code in (200, 204)
        assert await count_rows(sb, "call_events") == before
        call = await sb.container.store.get_call(call_id)
        assert call is not None and call.status.value == "busy"


async def test_c26_late_callbacks_never_move_a_terminal_call_back() -> None:
    """A ``ringing`` callback arriving after ``busy`` leaves the call ``busy``."""
    async with running_sandbox(BUSY) as sb:
        call_id, sid = await _busy_call(sb)
        response = await signed_post(sb, "/api/call/status", _status(sid, "ringing", "7"))
        assert response.status_code in (200, 204)
        call = await sb.container.store.get_call(call_id)
        assert call is not None and call.status.value == "busy"


async def test_c27_callbacks_for_a_call_sid_we_did_not_create_are_404_and_write_nothing() -> None:
    """A correctly signed callback or TwiML fetch for an unknown CallSid is 404, no write."""
    async with running_sandbox() as sb:
        unknown = _status("CA" + "2" * 32, "completed", "0")
        for path in ("/api/call/status", "/api/call/twiml"):
            assert (await signed_post(sb, path, unknown)).status_code == 404
        assert await count_rows(sb, "call_events") == 0 and await count_rows(sb, "calls") == 0


async def test_c28_twiml_is_fast_and_the_fallback_apologises_and_hangs_up() -> None:
    """The fallback URL returns an apology and <Hangup/>; 50 TwiML requests are each answered
    within 500 ms (no third-party call on that path)."""
    async with running_sandbox() as sb:
        fallback = await signed_post(sb, "/api/call/twiml?step=fallback", {"CallSid": "CA1"})
        assert fallback.status_code == 200
        assert "<Say" in fallback.text and "<Hangup" in fallback.text
        assert "sorry" in fallback.text.lower()
        worst = 0.0
        for _ in range(50):
            started = time.perf_counter()
            response = await signed_post(sb, "/api/call/twiml?step=fallback", {"CallSid": "CA1"})
            worst = max(worst, time.perf_counter() - started)
            assert response.status_code == 200
        assert worst < 0.5
