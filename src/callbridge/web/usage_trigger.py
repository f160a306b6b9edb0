"""Twilio's Usage Trigger door: ``POST /api/webhooks/twilio/usage-trigger`` trips the kill switch.

Point a Usage Trigger (e.g. ``UsageCategory=totalprice``, ``TriggerBy=price``,
``Recurring=daily``) at this URL
(https://www.twilio.com/docs/usage/api/usage-trigger). The request must carry a
valid ``X-Twilio-Signature`` over the public URL, like every Twilio webhook, and
name our account; then the kill switch stops new calls in this process and, with
Redis, in every process within seconds (security.md 13).
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from callbridge.bootstrap import Container
from callbridge.errors import WebhookRejected
from callbridge.web.deps import container_of
from callbridge.web.requests import MAX_FORM_BODY, read_body
from callbridge.web.twilio_hooks import public_url

router = APIRouter(prefix="/api/webhooks/twilio", tags=["twilio"])


@router.post("/usage-trigger", summary="Twilio Usage Trigger callback (stops new calls)")
async def usage_trigger(
    request: Request, c: Annotated[Container, Depends(container_of)]
) -> JSONResponse:
    """Check the signature and the account, then trip the kill switch."""
    raw = await read_body(request, MAX_FORM_BODY)
    pairs = parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True)
    url = public_url(c, request.url.path, request.url.query)
    c.signatures.check(url, pairs, request.headers.get("x-twilio-signature"))
    if not await c.safety.killswitch.usage_triggered(dict(pairs), account_sid=c.account_sid):
        raise WebhookRejected("the usage trigger names another account")
    return JSONResponse({"calls_enabled": False})


def build_usage_trigger_router() -> APIRouter:
    """The router of ``POST /api/webhooks/twilio/usage-trigger``."""
    return router
