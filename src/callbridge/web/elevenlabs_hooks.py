"""ElevenLabs' door: ``POST /api/webhooks/elevenlabs``, the post-call webhook.

The route translates and nothing more: refuse when no secret is configured
(before reading the body), read the raw body under a limit, let
:class:`~callbridge.services.postcall.PostCallService` verify and claim it, hand
the job to the service's background processing and answer 200 at once.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from callbridge.adapters.elevenlabs.webhook_signature import HEADER
from callbridge.bootstrap import Container
from callbridge.services.postcall import PostCallService
from callbridge.web.deps import container_of
from callbridge.web.requests import read_body

#: Transcripts of long calls are large; audio deliveries (much larger) are not wanted.
MAX_WEBHOOK_BODY = 2 * 1024 * 1024


def _service(c: Container) -> PostCallService:
    service = c.postcall
    service.ensure_configured()
    return service


def build_webhook_router() -> APIRouter:
    """The router of ``POST /api/webhooks/elevenlabs``."""
    router = APIRouter(prefix="/api/webhooks", tags=["webhooks"])

    @router.post(
        "/elevenlabs",
        summary="ElevenLabs post-call webhook (HMAC-signed)",
        responses={403: {"description": "bad, missing or stale ElevenLabs-Signature"}},
    )
    async def elevenlabs_postcall(
        request: Request, c: Annotated[Container, Depends(container_of)]
    ) -> JSONResponse:
        """Verify the signature, claim the conversation once, answer 200, process later."""
        service = _service(c)
        raw = await read_body(request, MAX_WEBHOOK_BODY)
        job = await service.receive(raw, request.headers.get(HEADER))
        if job is not None:
            service.submit(job)
        return JSONResponse({"received": True})

    return router
