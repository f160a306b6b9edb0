"""The visitor's pages: the contact page, the embeddable ``/widget.js`` and the sandbox phone.

Routes (built by :func:`build_pages_router`):

- ``GET /`` — the contact page: the ElevenLabs widget (or, in the sandbox, the local
  stand-in element), the call-request form and the live status panel.
- ``GET /widget.js`` — ``static/callbridge.js`` with this server's public origin baked in,
  for ``<script src="https://calls.example.com/widget.js">`` on any allowed site (in the
  sandbox, preceded by the widget stand-in, so the README's embed snippet works as printed).
- ``GET /sandbox/phone`` — the sandbox phone page (404 outside the sandbox).

Static files (``static/``) are served by :func:`static_app`, which the application mounts
at ``/static``. Every page carries a strict Content-Security-Policy (no inline script, no
inline style attribute); outside the sandbox it also allows the hosts the ElevenLabs
embed needs (https://elevenlabs.io/docs/agents-platform/customization/widget) and, when
Turnstile is on, Cloudflare's challenge host. Nothing secret is rendered: the page knows
only the public agent id, the public base URL and the Turnstile *site* key.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import jinja2
from fastapi import APIRouter, HTTPException
from fastapi.responses import HTMLResponse, Response
from starlette.staticfiles import StaticFiles

from callbridge.domain.phone import number_hint

_HERE = Path(__file__).resolve().parent
STATIC_DIR = _HERE / "static"
TEMPLATES_DIR = _HERE / "templates"

#: Where the official embed script lives (used outside the sandbox only).
ELEVENLABS_EMBED_URL = "https://unpkg.com/@elevenlabs/convai-widget-embed"
_TURNSTILE_ORIGIN = "https://challenges.cloudflare.com"
#: The placeholder in ``callbridge.js`` that ``/widget.js`` replaces with its settings.
_CONFIG_PLACEHOLDER = "/*CALLBRIDGE_CONFIG*/null/*END*/"


@dataclass(frozen=True)
class PageConfig:
    """What the visitor's pages need to know; all of it is public.

    Attributes:
        agent_id: the ElevenLabs agent id put on ``<elevenlabs-convai agent-id=…>``.
        sandbox: serve the local widget stand-in and the sandbox phone page.
        public_base_url: this server's public origin, baked into ``/widget.js``.
        site_name: the product name shown in the header and title.
        owner_name: who the visitor is asking to talk to ("" for a generic page).
        turnstile_site_key: Cloudflare Turnstile's public site key, if the check is on.
        default_region: the country assumed for numbers typed without ``+`` (the hint says so).
    """

    agent_id: str | None
    sandbox: bool
    public_base_url: str
    site_name: str = "callbridge"
    owner_name: str = ""
    turnstile_site_key: str | None = None
    default_region: str = "US"


def static_app() -> StaticFiles:
    """Return the ASGI app serving ``web/static``; the application mounts it at ``/static``."""
    return StaticFiles(directory=STATIC_DIR)


@cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _origin(url: str) -> str:
    return url.rstrip("/")


def content_security_policy(config: PageConfig) -> str:
    """Build the page CSP: same-origin everything, plus the vendor hosts the live widget needs."""
    script = ["'self'"]
    style = ["'self'"]
    connect = ["'self'", "ws:", "wss:"]
    img = ["'self'", "data:"]
    frame = ["'none'"]
    if not config.sandbox:
        # The embed is a Preact custom element that injects its own <style> and loads its
        # audio worklets from blob: URLs (worklets are governed by script-src).
        script += ["https://unpkg.com", "blob:"]
        style += ["'unsafe-inline'"]
        connect += ["https://api.elevenlabs.io", "wss://api.elevenlabs.io"]
        img += ["https:"]
        if config.turnstile_site_key:
            script.append(_TURNSTILE_ORIGIN)
            connect.append(_TURNSTILE_ORIGIN)
            frame = [_TURNSTILE_ORIGIN]
    directives = {
        "default-src": ["'self'"],
        "script-src": script,
        "style-src": style,
        "img-src": img,
        "connect-src": connect,
        "media-src": ["'self'", "blob:"],
        "worker-src": ["'self'", "blob:"],
        "frame-src": frame,
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
    return "; ".join(f"{name} {' '.join(values)}" for name, values in directives.items())


def _page_headers(config: PageConfig) -> dict[str, str]:
    return {
        "Content-Security-Policy": content_security_policy(config),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "strict-origin-when-cross-origin",
        "X-Frame-Options": "DENY",
        "Cross-Origin-Opener-Policy": "same-origin",
        "Permissions-Policy": "microphone=(self), camera=(), geolocation=(), payment=()",
        "Cache-Control": "no-store",
    }


def _render(config: PageConfig, template: str, **context: object) -> HTMLResponse:
    html = (
        _environment()
        .get_template(template)
        .render(
            site_name=config.site_name,
            owner_name=config.owner_name,
            sandbox=config.sandbox,
            **context,
        )
    )
    return HTMLResponse(html, headers=_page_headers(config))


def widget_script(config: PageConfig) -> str:
    """Return ``callbridge.js`` with the public base URL and Turnstile site key baked in.

    In the sandbox the stand-in widget (``sandbox-widget.js``) comes first: the official
    embed script that the README's snippet also loads lives on a CDN the sandbox may not
    reach, and the sandbox agent exists only here. The stand-in defines
    ``<elevenlabs-convai>`` only if nothing did yet.

    The JSON is written with ``<`` escaped so the text is also safe inside an HTML page.
    """
    settings = {
        "baseUrl": _origin(config.public_base_url),
        "turnstileSiteKey": config.turnstile_site_key,
    }
    baked = json.dumps(settings).replace("<", "\\u003c")
    source = (STATIC_DIR / "callbridge.js").read_text(encoding="utf-8")
    if _CONFIG_PLACEHOLDER not in source:  # pragma: no cover - guards a broken edit
        raise RuntimeError("callbridge.js lost its configuration placeholder")
    script = source.replace(_CONFIG_PLACEHOLDER, baked, 1)
    if config.sandbox:
        stand_in = (STATIC_DIR / "sandbox-widget.js").read_text(encoding="utf-8")
        script = stand_in + "\n" + script
    return script


def build_pages_router(config: PageConfig) -> APIRouter:
    """Build the router for ``/``, ``/widget.js`` and ``/sandbox/phone``."""
    router = APIRouter(include_in_schema=False)

    @router.get("/", response_class=HTMLResponse)
    async def index() -> HTMLResponse:
        agent_id = config.agent_id or ("sandbox-agent" if config.sandbox else None)
        return _render(
            config,
            "index.html",
            agent_id=agent_id,
            embed_url=None if config.sandbox else ELEVENLABS_EMBED_URL,
            turnstile_site_key=config.turnstile_site_key,
            phone_hint=number_hint(config.default_region),
        )

    @router.get("/widget.js")
    async def widget_js() -> Response:
        return Response(
            widget_script(config),
            media_type="application/javascript; charset=utf-8",
            headers={
                "Cache-Control": "public, max-age=300",
                "X-Content-Type-Options": "nosniff",
                "Cross-Origin-Resource-Policy": "cross-origin",
            },
        )

    @router.get("/sandbox/phone", response_class=HTMLResponse)
    async def sandbox_phone() -> HTMLResponse:
        if not config.sandbox:
            raise HTTPException(status_code=404, detail="Not Found")
        return _render(config, "phone.html")

    return router
