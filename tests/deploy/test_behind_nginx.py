"""The reference deployment works as shipped: deploy/'s nginx site with TLS in front of
one control and two media processes, on PostgreSQL and Redis, with the standalone sandbox.

The emulated Twilio reaches the server only at the public https URL and opens the
media stream over wss through nginx, so every call that completes proves that
Twilio's signatures validate behind the proxy.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
import websockets
from twilio.request_validator import RequestValidator

from tests.deploy.conftest import Deployment

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.timeout(240)]

_TERMINAL = {"completed", "failed", "busy", "no-answer", "canceled", "voicemail"}
NUMBERS = ("+12345678901", "+12345678902", "+12345678903", "+12345678904")


async def _place(http: httpx.AsyncClient, public: str, number: str) -> str:
    headers = {"Origin": public}
    session = await http.get(f"{public}/api/call/session", headers=headers)
    assert session.status_code == 200, session.text
    response = await http.post(
        f"{public}/api/call/outbound",
        json={"to_number": number, "name": "Deploy test"},
        headers=headers | {"X-Callbridge-Token": session.json()["token"]},
    )
    assert response.status_code in (200, 201, 202), response.text
    return str(response.json()["call_id"])


async def _until_done(http: httpx.AsyncClient, public: str, call_id: str) -> dict[str, object]:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        view = (await http.get(f"{public}/api/call/{call_id}")).json()
        if view.get("status") in _TERMINAL:
            return dict(view)
        await asyncio.sleep(0.5)
    raise AssertionError(f"call {call_id} did not end: {view}")


async def test_calls_complete_over_https_and_wss_through_nginx(deployment: Deployment) -> None:
    """Calls placed at the https origin complete with a transcript; their media streams
    went over wss through nginx to the media processes (both of them), and nothing
    else did."""
    async with httpx.AsyncClient(verify=deployment.ssl_context(), timeout=15) as http:
        call_ids = await asyncio.gather(*(_place(http, deployment.public, n) for n in NUMBERS))
        views = await asyncio.gather(*(_until_done(http, deployment.public, c) for c in call_ids))
        assert [v["status"] for v in views] == ["completed"] * len(NUMBERS), views
        for call_id in call_ids:
            detail = await http.get(
                f"{deployment.public}/api/admin/calls/{call_id}",
                headers={"Authorization": f"Bearer {deployment.admin_token}"},
            )
            assert detail.status_code == 200, detail.text
            assert detail.json()["transcript"], "the agent and callee spoke over the bridge"

    log = deployment.access()
    media = {f"127.0.0.1:{p}" for p in deployment.media_ports}
    streams = [e for e in log if e["uri"] == "/api/call/media-stream"]
    assert len(streams) == len(NUMBERS)
    assert {e["status"] for e in streams} == {101}
    assert {e["scheme"] for e in streams} == {"https"}
    assert {e["upstream"] for e in streams} == media, "least_conn spreads the streams"
    others = [e for e in log if e["uri"] != "/api/call/media-stream" and e["upstream"]]
    assert others and not {e["upstream"] for e in others} & media
    twilio = [e for e in log if e["uri"] in ("/api/call/twiml", "/api/call/status")]
    assert twilio and {e["status"] for e in twilio} == {200, 204}, "every webhook validated"


async def test_plain_http_is_redirected_to_the_public_https_origin(deployment: Deployment) -> None:
    """A request on port 80 gets a permanent redirect to the same path on the https origin."""
    async with httpx.AsyncClient() as http:
        response = await http.get(f"http://127.0.0.1:{deployment.http_port}/api/call/x?y=1")
    assert response.status_code == 301
    assert response.headers["location"] == f"{deployment.public}/api/call/x?y=1"


def _status_body(call_sid: str) -> dict[str, str]:
    return {"CallSid": call_sid, "CallStatus": "completed", "SequenceNumber": "99"}


async def test_a_spoofed_forwarded_host_does_not_validate(deployment: Deployment) -> None:
    """security.md C23: a status callback signed over another origin fails with 403 when it
    claims that origin in X-Forwarded-Host/Proto, whether sent straight to a process from
    an untrusted address or through nginx with that Host; the same body signed over the
    public https URL validates both ways (204)."""
    async with httpx.AsyncClient(verify=deployment.ssl_context(), timeout=15) as http:
        call_id = await _place(http, deployment.public, "+12345678905")
        await _until_done(http, deployment.public, call_id)
        detail = await http.get(
            f"{deployment.public}/api/admin/calls/{call_id}",
            headers={"Authorization": f"Bearer {deployment.admin_token}"},
        )
        call_sid = str(detail.json()["call_sid"])
    body = _status_body(call_sid)
    validator = RequestValidator(deployment.auth_token)
    spoofed_url = "https://evil.example/api/call/status"
    public_url = f"{deployment.public}/api/call/status"
    spoofed = {"X-Twilio-Signature": validator.compute_signature(spoofed_url, body)}
    genuine = {"X-Twilio-Signature": validator.compute_signature(public_url, body)}
    claims = {"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https"}

    # Straight to the control process, from 127.0.0.2: not a trusted proxy.
    direct = f"http://127.0.0.1:{deployment.control_ports[0]}/api/call/status"
    transport = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
    async with httpx.AsyncClient(transport=transport, timeout=15) as http:
        assert (await http.post(direct, data=body, headers=spoofed | claims)).status_code == 403
        assert (await http.post(direct, data=body, headers=genuine | claims)).status_code == 204

    # Through nginx (trusted) with Host: evil.example, so nginx itself forwards it.
    async with httpx.AsyncClient(verify=deployment.ssl_context(), timeout=15) as http:
        lying = spoofed | {"Host": "evil.example"}
        assert (await http.post(public_url, data=body, headers=lying)).status_code == 403
        assert (await http.post(public_url, data=body, headers=genuine)).status_code == 204


async def test_a_media_process_declines_compression(deployment: Deployment) -> None:
    """`callbridge serve` accepts a WebSocket that offers permessage-deflate without it
    (μ-law in base64 hardly compresses; two zlib streams a call would cost more memory
    than the rest of the call): the handshake answers with no extension."""

    url = f"ws://127.0.0.1:{deployment.media_ports[0]}/api/call/media-stream"
    public = deployment.public.replace("https://", "wss://") + "/api/call/media-stream"
    signed = {"X-Twilio-Signature": RequestValidator(deployment.auth_token).compute_signature(
        public, {})}  # fmt: skip
    async with websockets.connect(
        url, compression="deflate", additional_headers=signed, open_timeout=10
    ) as ws:
        assert ws.request is not None and ws.response is not None
        assert "permessage-deflate" in ws.request.headers["Sec-WebSocket-Extensions"]
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
