"""``callbridge sandbox``: the Twilio and ElevenLabs emulators alone, for another server.

Serves the Twilio REST root at ``/sandbox/twilio`` and the ElevenLabs API root at
``/sandbox/elevenlabs``, exactly as ``callbridge demo`` mounts them, and prints the
settings another callbridge (or any server reading the same base URLs) needs.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from rich.console import Console
from starlette.applications import Starlette
from starlette.routing import Mount

from callbridge.sandbox import SANDBOX_AGENT_ID
from callbridge.sandbox.elevenlabs.emulator import ElevenLabsEmulator
from callbridge.sandbox.twilio.emulator import TwilioEmulator
from callbridge.sandbox.twilio.numbers import SANDBOX_NUMBER
from callbridge.settings import Settings


def make_emulators(
    settings: Settings, *, account_sid: str, auth_token: str, server_base_url: str | None
) -> tuple[TwilioEmulator, ElevenLabsEmulator]:
    """Both emulators for ``settings``; the agent's post-call webhook goes to the callbridge
    at ``server_base_url`` when ``ELEVENLABS_WEBHOOK_SECRET`` is set, and its turns to the
    sandbox phone that carries the call (as captions)."""
    twilio = TwilioEmulator(
        account_sid=account_sid,
        auth_token=auth_token,
        callee_script=settings.sandbox_callee,
        callees=settings.sandbox_callees,
        allowed_countries=settings.allowed_countries,
        owned_numbers=[settings.twilio_phone_number or SANDBOX_NUMBER],
    )
    secret = settings.elevenlabs_webhook_secret
    elevenlabs = ElevenLabsEmulator(
        agent_id=settings.elevenlabs_agent_id or SANDBOX_AGENT_ID,
        api_key=settings.elevenlabs_api_key.get_secret_value()
        if settings.elevenlabs_api_key
        else None,
        webhook_url=f"{server_base_url}/api/webhooks/elevenlabs"
        if secret and server_base_url
        else None,
        webhook_secret=secret.get_secret_value() if secret else None,
        on_turn=twilio.show_turn,
    )
    return twilio, elevenlabs


def build_standalone(settings: Settings) -> tuple[Starlette, TwilioEmulator, ElevenLabsEmulator]:
    """The emulators and an app serving both, with the settings' credentials (or new ones)."""
    twilio, elevenlabs = make_emulators(
        settings,
        account_sid=settings.twilio_account_sid or "AC" + secrets.token_hex(16),
        auth_token=settings.twilio_auth_token.get_secret_value()
        if settings.twilio_auth_token
        else secrets.token_hex(16),
        server_base_url=settings.public_base_url,
    )

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await twilio.start()
        try:
            yield
        finally:
            await twilio.aclose()

    app = Starlette(
        routes=[
            Mount("/sandbox/twilio", app=twilio.asgi_app),
            Mount("/sandbox/elevenlabs", app=elevenlabs.asgi_app),
        ],
        lifespan=lifespan,
    )
    return app, twilio, elevenlabs


def run_sandbox(settings: Settings, host: str, port: int, console: Console) -> None:
    """Serve the emulators until interrupted."""
    import uvicorn

    app, twilio, elevenlabs = build_standalone(settings)
    base = f"http://{host}:{port}"
    console.print(
        "[bold green]callbridge sandbox emulators[/]\n"
        f"  TWILIO_API_BASE_URL={base}/sandbox/twilio\n"
        f"  ELEVENLABS_API_BASE_URL={base}/sandbox/elevenlabs\n"
        f"  TWILIO_ACCOUNT_SID={twilio.account_sid}\n"
        f"  ELEVENLABS_AGENT_ID={elevenlabs.agent_id}"
    )
    if settings.twilio_auth_token is None:
        # A made-up sandbox credential, printed so another server can sign with it.
        console.print(f"  TWILIO_AUTH_TOKEN={twilio.auth_token}  (sandbox only)")
    else:
        console.print("  TWILIO_AUTH_TOKEN=(the one you set)")
    uvicorn.run(app, host=host, port=port, log_level="warning")
