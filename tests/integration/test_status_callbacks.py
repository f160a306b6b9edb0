"""``POST /api/call/status`` and ``/api/call/twiml``: signatures, replays, order, strangers."""

from __future__ import annotations

import pytest

from callbridge.adapters.twilio.signature import TwilioSignatureChecker
from callbridge.errors import WebhookRejected
from tests.integration.helpers import (
    finished,
    place,
    ringing_call,
    signed_post,
    wait_until,
)
from tests.support.app import Sandbox, count_rows, running_sandbox, twilio_signature

_RINGING = {"CALLBRIDGE_SANDBOX_CALLEE": "no-answer"}


def _callback(sb: Sandbox, sid: str, status: str, sequence: int, **extra: str) -> dict[str, str]:
    return {
        "AccountSid": sb.container.account_sid,
        "CallSid": sid,
        "CallStatus": status,
        "From": sb.container.from_number,
        "To": "+12025550142",
        "Direction": "outbound-api",
        "ApiVersion": "2010-04-01",
        "CallbackSource": "call-progress-events",
        "SequenceNumber": str(sequence),
        **extra,
    }


async def test_a_replayed_callback_changes_nothing() -> None:
    """The same status and SequenceNumber again gets 2xx and adds no event and no change."""
    async with running_sandbox({"CALLBRIDGE_SANDBOX_CALLEE": "answer=0.2,digits=1,hangup=1"}) as sb:
        body = await place(sb)
        sim = await finished(sb, body)
        before_events = await sb.container.store.events(body["call_id"])
        before_call = await sb.container.store.get_call(body["call_id"])
        for params in sim.callbacks:  # every callback, exactly as Twilio sent it
            response = await signed_post(sb, "/api/call/status", params)
            assert response.status_code in (200, 204)
        assert await sb.container.store.events(body["call_id"]) == before_events
        assert await sb.container.store.get_call(body["call_id"]) == before_call


async def test_out_of_order_callbacks_never_move_a_call_back() -> None:
    """``completed`` then a late ``ringing`` leaves the call completed, with its duration."""
    async with running_sandbox(_RINGING) as sb:
        body = await ringing_call(sb)
        sid = body["call_sid"]
        done = await signed_post(
            sb, "/api/call/status", _callback(sb, sid, "completed", 9, CallDuration="12")
        )
        assert done.status_code in (200, 204)
        late = await signed_post(sb, "/api/call/status", _callback(sb, sid, "ringing", 5))
        assert late.status_code in (200, 204)
        answered = await signed_post(sb, "/api/call/status", _callback(sb, sid, "in-progress", 6))
        assert answered.status_code in (200, 204)
        call = await sb.container.store.get_call(body["call_id"])
        assert call is not None
        assert call.status.value == "completed"
        assert call.duration_s == 12
        view = (await sb.http.get(f"/api/call/{body['call_id']}")).json()
        assert view["status"] == "completed"


async def test_an_unknown_callsid_gets_404_and_nothing_is_written() -> None:
    """A callback for a CallSid we never created is refused with 404; no row is written."""
    async with running_sandbox(_RINGING) as sb:
        body = await ringing_call(sb)
        events, calls = await count_rows(sb, "call_events"), await count_rows(sb, "calls")
        stranger = "CA" + "0" * 32
        for path, params in (
            ("/api/call/status", _callback(sb, stranger, "completed", 3, CallDuration="1")),
            (
                f"/api/call/status?call_id={body['call_id']}",
                _callback(sb, stranger, "completed", 3, CallDuration="1"),
            ),
            ("/api/call/twiml", _callback(sb, stranger, "in-progress", 0)),
            (
                "/api/call/twiml?step=consent",
                {**_callback(sb, stranger, "in-progress", 0), "Digits": "1"},
            ),
        ):
            response = await signed_post(sb, path, params)
            assert response.status_code == 404, (path, response.text)
        assert await count_rows(sb, "call_events") == events
        assert await count_rows(sb, "calls") == calls
        assert sb.elevenlabs.connection_attempts == 0


@pytest.mark.parametrize(
    "path", ["/api/call/status", "/api/call/twiml", "/api/call/twiml?step=consent"]
)
async def test_missing_or_forged_signatures_get_403_and_nothing_is_written(path: str) -> None:
    """No signature, a forged one, or a signed request with an altered parameter gets 403."""
    async with running_sandbox(_RINGING) as sb:
        body = await ringing_call(sb)
        params = {
            **_callback(sb, body["call_sid"], "completed", 7, CallDuration="3"),
            "Digits": "1",
        }
        events = await count_rows(sb, "call_events")
        before = await sb.container.store.get_call(body["call_id"])
        attempts = [
            await signed_post(sb, path, params, sign=False),
            await signed_post(sb, path, params, forged="L/OH5YylLD5NRKLltdqwSvS0BnU="),
        ]
        # Signed for one parameter set, sent with another.
        good = await signed_post(sb, path, {**params, "CallStatus": "ringing"}, sign=False)
        assert good.status_code == 403
        url = f"{sb.container.public_base_url}{path}"
        altered = dict(params, CallDuration="3000")
        attempts.append(
            await sb.http.post(
                path,
                data=altered,
                headers={"X-Twilio-Signature": twilio_signature(sb, url, params)},
            )
        )
        # Signed over another host (a spoofed Host must not help).
        attempts.append(
            await sb.http.post(
                path,
                data=params,
                headers={
                    "Host": "evil.example",
                    "X-Forwarded-Host": "evil.example",
                    "X-Twilio-Signature": twilio_signature(
                        sb, "http://evil.example" + path, params
                    ),
                },
            )
        )
        for response in attempts:
            assert response.status_code == 403, response.text
            assert response.json()["success"] is False
        assert await count_rows(sb, "call_events") == events
        assert await sb.container.store.get_call(body["call_id"]) == before
        assert sb.elevenlabs.connection_attempts == 0


_VECTOR_PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+14158675310",
    "Digits": "1234",
    "From": "+14158675310",
    "To": "+18005551212",
}
_VECTOR_PARAMS_2 = {**_VECTOR_PARAMS, "Caller": "+14158675309", "From": "+14158675309"}


@pytest.mark.parametrize(
    ("url", "params", "expected"),
    [
        (
            "https://example.com/myapp.php?foo=1&bar=2",
            _VECTOR_PARAMS,
            "L/OH5YylLD5NRKLltdqwSvS0BnU=",
        ),
        (
            "https://mycompany.com/myapp.php?foo=1&bar=2",
            _VECTOR_PARAMS_2,
            "RSOYDt4T1cUTdK1PDd93/VVr8B8=",
        ),
        (
            "https://mycompany.com:443/myapp.php?foo=1&bar=2",
            _VECTOR_PARAMS_2,
            "kvajT1Ptam85bY51eRf/AJRuM3w=",
        ),
        (
            "http://mycompany.com:80/myapp.php?foo=1&bar=2",
            _VECTOR_PARAMS_2,
            "0ZXoZLH/DfblKGATFgpif+LLRf4=",
        ),
        (
            "https://mycompany.com/myapp.php?foo=1&bar=2&bodySHA256="
            "0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620",
            {},
            "a9nBmqA0ju/hNViExpshrM61xv4=",
        ),
    ],
)
def test_our_validator_accepts_twilios_documented_examples(
    url: str, params: dict[str, str], expected: str
) -> None:
    """The documented signature examples (protocols.md 2.5) validate; a changed one does not."""
    checker = TwilioSignatureChecker("12345")
    checker.check(url, params, expected)
    with pytest.raises(WebhookRejected):
        checker.check(url, {**params, "Digits": "9"}, expected)
    with pytest.raises(WebhookRejected):
        TwilioSignatureChecker("54321").check(url, params, expected)


def test_without_an_auth_token_every_webhook_is_refused() -> None:
    """With no auth token configured the checker refuses everything (fail closed)."""
    checker = TwilioSignatureChecker(None)
    assert not checker.configured
    with pytest.raises(WebhookRejected):
        checker.check(
            "https://example.com/myapp.php?foo=1&bar=2",
            _VECTOR_PARAMS,
            "L/OH5YylLD5NRKLltdqwSvS0BnU=",
        )


async def test_callbacks_that_beat_the_create_answer_are_kept() -> None:
    """Calls placed back to back: every callback finds its call, even before the SID is stored."""
    async with running_sandbox(_RINGING) as sb:
        bodies = [await place(sb, f"+120255501{n:02d}") for n in range(11, 19)]
        sims = [sb.twilio.calls[b["call_sid"]] for b in bodies]
        await wait_until(lambda: all(len(s.webhooks) >= 2 for s in sims))
        for body, sim in zip(bodies, sims, strict=True):
            assert [w.status_code for w in sim.webhooks] == [204, 204]
            call = await sb.container.store.get_call(body["call_id"])
            assert call is not None
            assert (call.call_sid, call.status.value) == (body["call_sid"], "ringing")
            events = await sb.container.store.events(body["call_id"])
            assert [e.status for e in events if e.source == "twilio"] == ["initiated", "ringing"]
