"""The browser's API: a call token, the call request, a call's status and its live events."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse, StreamingResponse

from callbridge.bootstrap import Container
from callbridge.errors import AuthRejected, CallbridgeError, Conflict
from callbridge.services.drain import refuse_if_draining
from callbridge.services.placing import CallRequest
from callbridge.web.deps import container_of
from callbridge.web.requests import (
    MAX_JSON_BODY,
    OutboundCallBody,
    client_ip,
    parse_cancel,
    parse_outbound,
    read_body,
    require_json,
)

router = APIRouter(prefix="/api/call", tags=["calls"])

_SSE_KEEPALIVE_S = 15.0


class OriginRejected(AuthRejected):
    """The request comes from a site that may not ask for calls."""

    code = "origin_not_allowed"
    http_status = 403


def checked_origin(request: Request, c: Container) -> str:
    """The page's origin if it may ask for calls ("" for non-browser clients).

    Browsers send ``Origin`` on a POST but not on a same-origin GET; for such a GET
    (``Sec-Fetch-Site: same-origin``) the origin is the public scheme and the Host
    the page was loaded from, so the token it gets matches the POST that follows.

    Raises:
        OriginRejected: a browser origin (including ``null``) not on the allowlist.
    """
    origin = request.headers.get("origin")
    if origin is None:
        if request.headers.get("sec-fetch-site") != "same-origin":
            return ""
        scheme = c.public_base_url.split("://", 1)[0]
        origin = f"{scheme}://{request.headers.get('host', '')}"
    if not c.origins.allows(origin):  # logs the refused origin, once in a while
        raise OriginRejected("This site may not request calls.")
    return origin


async def _human_check(request: Request, c: Container) -> None:
    """The request's human check (Turnstile's token header), when one is configured."""
    verifier = c.safety.human_check
    if verifier is not None:
        ip = client_ip(request, c.settings.trusted_proxies)
        await verifier.verify(request.headers.get("x-turnstile-token"), ip)


def allowed_origins(c: Container) -> set[str]:
    """The configured origins, callbridge's own, and (in the sandbox) its loopback aliases."""
    return set(c.origins.allowed)


@router.get("/session", summary="A single-use token for one call request")
async def session(request: Request, c: Annotated[Container, Depends(container_of)]) -> JSONResponse:
    """Issue a short-lived, single-use token bound to the page's origin."""
    origin = checked_origin(request, c)
    token = c.session_tokens.issue(origin)
    return JSONResponse(
        {"token": token, "expires_in": c.session_tokens.ttl_s},
        headers={"Cache-Control": "no-store"},
    )


@router.post(
    "/outbound",
    summary="Ask for a call",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": OutboundCallBody.model_json_schema()}},
        }
    },
)
async def outbound(
    request: Request,
    c: Annotated[Container, Depends(container_of)],
    x_callbridge_token: Annotated[str | None, Header()] = None,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> JSONResponse:
    """Check the request and the number, record the call and place it with Twilio.

    The overload gate decides once the body is read (a slow client holds no place)
    and before the token, the policy or the database: a request the server cannot set
    up in time is answered 503 at once.
    """
    refuse_if_draining(c.draining)
    origin = checked_origin(request, c)
    require_json(request)
    raw = await read_body(request, MAX_JSON_BODY)
    body = parse_outbound(raw)
    async with c.setup_gate.setup():
        await c.session_tokens.redeem(x_callbridge_token, origin)
        await _human_check(request, c)
        placed = await c.placing.request_call(
            CallRequest(
                to_number=body.to_number,
                name=body.name or None,
                reason=body.reason or None,
                summary=body.summary or None,
                conversation_id=body.conversation_id or None,
                idempotency_key=idempotency_key,
                client_ip=client_ip(request, c.settings.trusted_proxies),
                at=body.at,
                retry_on_no_answer=body.retry_on_no_answer,
            )
        )
    return JSONResponse(dict(placed.body), status_code=placed.http_status)


@router.post("/{call_id}/cancel", summary="Cancel a scheduled call (the page that asked)")
async def cancel(
    call_id: str, request: Request, c: Annotated[Container, Depends(container_of)]
) -> JSONResponse:
    """Cancel a call that is still scheduled, and its pending retries.

    Allowed with the call's own capability (the ``cancel_token`` of the 202 answer),
    never with the id alone; a call already placed or ended is 409.
    """
    checked_origin(request, c)
    require_json(request)
    body = parse_cancel(await read_body(request, MAX_JSON_BODY))
    c.cancel_tokens.check(call_id, body.cancel_token)
    cancelled = await c.jobs.scheduler.cancel(call_id, by="visitor")
    if not cancelled:
        raise Conflict("That call is no longer scheduled, so it can't be cancelled.")
    return JSONResponse(
        {
            "success": True,
            "call_id": call_id,
            "status": "canceled",
            "cancelled": [call.id for call in cancelled],
        }
    )


@router.get("/{call_id}", summary="A call's status (nothing private)")
async def call_status(call_id: str, c: Annotated[Container, Depends(container_of)]) -> JSONResponse:
    """The call's status and times, the number masked."""
    return JSONResponse(await c.lifecycle.public_view(call_id))


@router.get("/{call_id}/events", summary="Follow a call's status (Server-Sent Events)")
async def call_events(
    call_id: str, c: Annotated[Container, Depends(container_of)]
) -> StreamingResponse:
    """One ``status`` event per change; the stream ends after a terminal status.

    The call is read and the follower subscribed before the stream starts, so an
    unknown call is a 404 and a store outage a 503, not an empty stream. If the live
    events die later (Redis went away), the stream just ends; the browser reconnects
    after the ``retry`` delay and is told 503 until the store is back.
    """
    changes = c.lifecycle.follow(call_id)
    first = await anext(changes)

    async def stream() -> AsyncIterator[bytes]:
        yield b"retry: 2000\n\n"
        yield b"event: status\ndata: " + orjson.dumps(first) + b"\n\n"
        try:
            async for change in _with_keepalive(changes):
                if change is None:
                    yield b": keep-alive\n\n"
                    continue
                yield b"event: status\ndata: " + orjson.dumps(change) + b"\n\n"
        except CallbridgeError:
            return

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def _with_keepalive(
    source: AsyncIterator[dict[str, object]],
) -> AsyncIterator[dict[str, object] | None]:
    """Yield from ``source``; yield None whenever it is quiet for a while."""
    import asyncio

    iterator = aiter(source)
    pending: asyncio.Task[dict[str, object]] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(iterator))
            done, _ = await asyncio.wait({pending}, timeout=_SSE_KEEPALIVE_S)
            if not done:
                yield None
                continue
            try:
                item = pending.result()
            except StopAsyncIteration:
                return
            pending = None
            yield item
    finally:
        if pending is not None:
            pending.cancel()
            await asyncio.wait({pending})  # let it finish before closing the generator
        closer = getattr(iterator, "aclose", None)
        if closer is not None:
            await closer()
