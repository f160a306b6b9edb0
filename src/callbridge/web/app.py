"""The ASGI application factory: routes, middleware, error handlers, the sandbox mounts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response

from callbridge import __version__
from callbridge.bootstrap import Container
from callbridge.errors import OUTAGE_RETRY_AFTER_S
from callbridge.gc_policy import apply_serving_policy
from callbridge.settings import Role
from callbridge.web import api_calls, elevenlabs_hooks, errors, twilio_hooks, usage_trigger
from callbridge.web.admin import build_admin_router
from callbridge.web.last_resort import LastResort
from callbridge.web.pages import PageConfig, build_pages_router, static_app


def create_app(container: Container) -> FastAPI:
    """Build the app around a wired ``container`` (started and closed by its lifespan)."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await container.start()
        # Everything built so far lives as long as the process: keep it out of the
        # collector's way, and collect rarely while calls stream (callbridge.gc_policy).
        apply_serving_policy()
        try:
            yield
        finally:
            await container.aclose()

    app = FastAPI(
        title="callbridge",
        version=__version__,
        summary="A visitor asks for a call; Twilio places it; an AI agent talks.",
        lifespan=lifespan,
    )
    app.state.container = container
    errors.install(app)
    role = container.role
    if role.serves_media:
        app.include_router(twilio_hooks.media_router)
    if role.serves_control:
        app.include_router(twilio_hooks.router)  # before /api/call/{call_id}
        app.include_router(api_calls.router)
        app.include_router(elevenlabs_hooks.build_webhook_router())
        app.include_router(usage_trigger.router)
        app.include_router(build_admin_router(container))

    @app.get("/healthz", tags=["health"], summary="Alive")
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    @app.get("/readyz", tags=["health"], summary="Ready to take calls")
    async def readyz() -> JSONResponse:
        down = await container.readiness.down()
        problems = [f"{name} unreachable" for name in down]
        if not container.signatures.configured:
            problems.append("TWILIO_AUTH_TOKEN is not configured")
        if container.draining:
            problems.append("draining")
        status = 503 if problems else 200
        return JSONResponse(
            {"ready": not problems, "problems": problems, "down": down},
            status_code=status,
            headers={"Retry-After": str(OUTAGE_RETRY_AFTER_S)} if down else None,
        )

    @app.get("/metrics", tags=["health"], summary="Prometheus metrics")
    async def metrics() -> Response:
        return Response(
            container.metrics.render(),
            media_type="text/plain; version=0.0.4; charset=utf-8",
        )

    if role is Role.MEDIA:
        return _with_middleware(app, container)  # the stream and the health doors only
    settings = container.settings
    app.include_router(
        build_pages_router(
            PageConfig(
                agent_id=container.agent_id,
                sandbox=container.sandbox is not None,
                public_base_url=container.public_base_url,
                site_name=settings.site_name,
                owner_name=settings.owner_name,
                turnstile_site_key=settings.turnstile_site_key,
                default_region=settings.default_region,
            )
        )
    )
    app.mount("/static", static_app(), name="static")
    if container.sandbox is not None:
        app.mount("/sandbox/twilio", container.sandbox.twilio.asgi_app)
        app.mount("/sandbox/elevenlabs", container.sandbox.elevenlabs.asgi_app)
    return _with_middleware(app, container)


def _with_middleware(app: FastAPI, container: Container) -> FastAPI:
    app.add_middleware(LastResort)  # inside CORS, so its answers carry CORS headers too
    origins = list(container.settings.allowed_origins)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=origins,
        allow_methods=["GET", "POST"],
        allow_headers=[
            "Content-Type",
            "X-Callbridge-Token",
            "Idempotency-Key",
            "X-Turnstile-Token",
        ],
        expose_headers=["Retry-After"],
        allow_credentials=False,
        max_age=600,
    )
    # Outermost: the media stream's frames pass no middleware (see MediaStreamFastPath).
    app.add_middleware(twilio_hooks.MediaStreamFastPath, container=container)
    return app
