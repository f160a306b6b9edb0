"""The pages router over HTTP, in process (no browser): routes, headers, what is rendered."""

from __future__ import annotations

import re

import httpx
from fastapi import FastAPI

from callbridge.web.pages import PageConfig, build_pages_router, content_security_policy, static_app


class Client:
    """A tiny in-process client for one app (httpx over ASGI)."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    async def get(self, path: str) -> httpx.Response:
        transport = httpx.ASGITransport(app=self.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            return await c.get(path)


def client(**overrides: object) -> Client:
    values: dict[str, object] = {
        "agent_id": "agent_123",
        "sandbox": False,
        "public_base_url": "https://calls.example.com/",
    }
    values.update(overrides)
    config = PageConfig(**values)  # type: ignore[arg-type]
    app = FastAPI()
    app.include_router(build_pages_router(config))
    app.mount("/static", static_app(), name="static")
    return Client(app)


async def test_live_page_embeds_the_elevenlabs_widget_and_our_script() -> None:
    """Outside the sandbox the page carries the agent id, the official embed and callbridge.js."""
    response = await client(owner_name="Ada").get("/")
    assert response.status_code == 200
    html = response.text
    assert '<elevenlabs-convai agent-id="agent_123">' in html
    assert 'src="https://unpkg.com/@elevenlabs/convai-widget-embed"' in html
    assert 'src="/static/callbridge.js"' in html
    assert "sandbox-widget.js" not in html
    assert "Sandbox mode" not in html
    assert "Talk to Ada" in html


async def test_sandbox_page_uses_the_local_stand_in_and_says_so() -> None:
    """In the sandbox the page loads the stand-in element, no CDN, and says it is the sandbox."""
    html = (await client(sandbox=True, agent_id=None).get("/")).text
    assert 'src="/static/sandbox-widget.js"' in html
    assert "unpkg.com" not in html
    assert "Sandbox mode" in html
    assert "<elevenlabs-convai agent-id=" in html


async def test_pages_have_no_inline_script_or_handlers() -> None:
    """Every script is a same-origin or listed file: a strict CSP holds."""
    for sandbox in (True, False):
        html = (await client(sandbox=sandbox).get("/")).text
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html)
        assert not re.search(r"\son[a-z]+=", html)
        assert " style=" not in html


async def test_sandbox_csp_is_same_origin_only() -> None:
    """The sandbox CSP allows only this origin (plus ws/wss for the phone socket)."""
    csp = (await client(sandbox=True).get("/")).headers["content-security-policy"]
    assert "default-src 'self'" in csp
    assert "script-src 'self';" in csp
    assert "connect-src 'self' ws: wss:" in csp
    assert "frame-ancestors 'none'" in csp
    assert "unpkg" not in csp and "elevenlabs" not in csp


async def test_live_csp_allows_the_widget_hosts_and_turnstile_only_when_on() -> None:
    """Outside the sandbox the CSP admits the ElevenLabs hosts; Cloudflare only with Turnstile."""
    csp = (await client().get("/")).headers["content-security-policy"]
    for host in ("https://unpkg.com", "https://api.elevenlabs.io", "wss://api.elevenlabs.io"):
        assert host in csp
    assert "challenges.cloudflare.com" not in csp
    with_turnstile = content_security_policy(
        PageConfig(
            agent_id="a", sandbox=False, public_base_url="https://x", turnstile_site_key="0x4AAA"
        )
    )
    assert "https://challenges.cloudflare.com" in with_turnstile


async def test_security_headers_on_pages() -> None:
    """Pages are not framable, not sniffed and not cached."""
    headers = (await client(sandbox=True).get("/sandbox/phone")).headers
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    assert headers["cache-control"] == "no-store"
    assert "microphone=(self)" in headers["permissions-policy"]


async def test_sandbox_phone_is_404_outside_the_sandbox() -> None:
    """/sandbox/phone exists only in the sandbox."""
    assert (await client(sandbox=False).get("/sandbox/phone")).status_code == 404
    response = await client(sandbox=True).get("/sandbox/phone")
    assert response.status_code == 200
    assert 'src="/static/phone.js"' in response.text


async def test_widget_js_is_callbridge_js_with_the_origin_baked_in() -> None:
    """/widget.js serves the client script with the public base URL and site key baked in."""
    response = await client(turnstile_site_key="0x4AAA</script>").get("/widget.js")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/javascript")
    assert response.headers["cross-origin-resource-policy"] == "cross-origin"
    body = response.text
    assert '"baseUrl": "https://calls.example.com"' in body
    assert "\\u003c/script>" in body and "</script>" not in body
    assert "initiatePhoneCall" in body


async def test_static_files_are_served() -> None:
    """The static app serves the stylesheet and scripts the pages reference."""
    c = client()
    for name in (
        "callbridge.css",
        "callbridge.js",
        "sandbox-widget.js",
        "phone.js",
        "phone-worklet.js",
    ):
        assert (await c.get(f"/static/{name}")).status_code == 200


async def test_no_secret_shaped_strings_reach_the_page_or_scripts() -> None:
    """Nothing that looks like a Twilio SID/token or an ElevenLabs key is in what we serve."""
    c = client(sandbox=True)
    bodies = [(await c.get(path)).text for path in ("/", "/widget.js", "/sandbox/phone")]
    bodies += [
        (await c.get(f"/static/{n}")).text
        for n in ("callbridge.js", "sandbox-widget.js", "phone.js")
    ]
    for body in bodies:
        assert not re.search(r"\bAC[0-9a-f]{32}\b", body)
        assert not re.search(r"\bsk_[0-9a-f]{20,}", body)
        assert "xi-api-key" not in body.lower()
