"""Twilio's doors: the TwiML webhook, status and AMD callbacks and the media-stream WebSocket.

Each checks ``X-Twilio-Signature`` over the *public* URL (``PUBLIC_BASE_URL`` plus
the path and query Twilio requested) before anything is read from the store or
written to it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated
from urllib.parse import parse_qsl

import structlog
from fastapi import APIRouter, Depends, Request, WebSocket
from fastapi.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from callbridge.bootstrap import Container
from callbridge.errors import WebhookRejected
from callbridge.ports import MediaSocket
from callbridge.services.placing import STATUS_CALLBACK_OVERRIDES, STATUS_HOLD_S
from callbridge.services.ride_out import ride_out
from callbridge.web.deps import container_of, ws_container_of
from callbridge.web.last_resort import WS_TRY_AGAIN_LATER, LastResort, store_error_in
from callbridge.web.media_socket import AsgiMediaSocket, StarletteMediaSocket
from callbridge.web.requests import MAX_FORM_BODY, read_body
from callbridge.web.stream_protocol import SEND_MANY

router = APIRouter(prefix="/api/call", tags=["twilio"])
#: The media stream alone: what a ``--role media`` process serves.
media_router = APIRouter(prefix="/api/call", tags=["twilio"])
_log = structlog.get_logger(__name__)

_XML = "application/xml"


def public_url(c: Container, path: str, query: str, *, websocket: bool = False) -> str:
    """The URL Twilio requested, rebuilt from ``PUBLIC_BASE_URL`` (never from Host headers);
    a media stream's from ``CALLBRIDGE_MEDIA_BASE_URL`` when it is set."""
    base = c.public_base_url
    if websocket:
        base = c.media_base_url
        base = "wss://" + base[8:] if base.startswith("https://") else "ws://" + base[7:]
    return f"{base}{path}" + (f"?{query}" if query else "")


async def _signed_params(
    request: Request, c: Container, *, fragments: tuple[str, ...] = ()
) -> dict[str, str]:
    """Verify the signature and return the request's parameters.

    ``fragments`` are the ``#…`` connection overrides we put on this door's URL: the
    request never carries them, and whether Twilio signs the URL with or without
    them is unconfirmed, so both are accepted (see ``TwilioSignatureChecker.check``).
    """
    query = request.url.query
    url = public_url(c, request.url.path, query)
    signature = request.headers.get("x-twilio-signature")
    if request.method == "POST":
        raw = await read_body(request, MAX_FORM_BODY)
        pairs = parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True)
        c.signatures.check(url, pairs, signature, fragments=fragments)
        return dict(pairs)
    c.signatures.check(url, [], signature, fragments=fragments)
    return dict(parse_qsl(query, keep_blank_values=True))


async def _twiml(request: Request, c: Container) -> Response:
    params = await _signed_params(request, c)
    step = request.query_params.get("step")
    document = await c.lifecycle.twiml_for(params, step, request.query_params.get("call_id"))
    return Response(document, media_type=_XML)


@router.post(
    "/twiml",
    summary="TwiML for a call (Twilio webhook, POST)",
    operation_id="twiml_post",
    response_class=Response,
    responses={200: {"content": {_XML: {}}}},
)
async def twiml_post(request: Request, c: Annotated[Container, Depends(container_of)]) -> Response:
    """Greeting, consent and the stream (agent mode) or a ``<Dial>`` (owner mode)."""
    return await _twiml(request, c)


@router.get(
    "/twiml",
    summary="TwiML for a call (Twilio webhook, GET)",
    operation_id="twiml_get",
    response_class=Response,
    responses={200: {"content": {_XML: {}}}},
)
async def twiml_get(request: Request, c: Annotated[Container, Depends(container_of)]) -> Response:
    """The same document for ``Method=GET`` (parameters in the signed query string)."""
    return await _twiml(request, c)


@router.post("/status", summary="Call status callback (Twilio webhook)", status_code=204)
async def status(request: Request, c: Annotated[Container, Depends(container_of)]) -> Response:
    """Record the callback; a replay or a late callback changes nothing."""
    params = await _signed_params(request, c, fragments=(STATUS_CALLBACK_OVERRIDES,))
    call_id = request.query_params.get("call_id")
    # An outage of a few seconds is ridden out here; past that the 503 makes Twilio
    # retry (the overrides on the URL), so the callback is applied, never lost.
    await ride_out(lambda: c.lifecycle.apply_status(params, call_id), budget_s=STATUS_HOLD_S)
    return Response(status_code=204)


@router.post("/amd", summary="Answering machine detection result (Twilio webhook)", status_code=204)
async def amd(request: Request, c: Annotated[Container, Depends(container_of)]) -> Response:
    """Twilio's asynchronous AMD verdict: a machine is hung up or given a message."""
    params = await _signed_params(request, c)
    await c.lifecycle.apply_amd(params, request.query_params.get("call_id"))
    return Response(status_code=204)


@media_router.websocket("/media-stream")
async def media_stream(
    websocket: WebSocket, c: Annotated[Container, Depends(ws_container_of)]
) -> None:
    """Twilio's bidirectional Media Stream; refused before accept without a valid signature."""
    await _serve_stream(c, websocket, lambda: StarletteMediaSocket(websocket))


async def _serve_stream(
    c: Container, websocket: WebSocket, accepted: Callable[[], MediaSocket]
) -> None:
    """The stream's door, for the route and the fast path alike.

    ``accepted`` makes the bridge's socket once the WebSocket is accepted.
    """
    url = public_url(c, websocket.url.path, websocket.url.query, websocket=True)
    try:
        c.signatures.check(url, [], websocket.headers.get("x-twilio-signature"))
    except WebhookRejected as exc:
        _log.warning("media_stream_refused", reason=exc.message)
        c.metrics.webhook_rejected("media_stream")
        await websocket.close(code=1008)
        return
    if c.draining:
        await websocket.close(code=1013)
        return
    await websocket.accept()
    socket = accepted()
    try:
        await c.bridge.serve(socket)
    except Exception as exc:
        outage = store_error_in(exc)
        if outage is None:
            raise
        # The store is away: Twilio is told to try later (1013), with no traceback.
        _log.warning("media_stream_unavailable", dependency=outage.dependency)
        await socket.close(WS_TRY_AGAIN_LATER)
    finally:
        # Always end with a close frame: returning with the socket open makes the
        # server drop the connection (1006), which Twilio logs as a stream error.
        await socket.close(1000)


#: The media stream's path, as the route above serves it.
MEDIA_STREAM_PATH = media_router.prefix + "/media-stream"


class MediaStreamFastPath:
    """Pure ASGI in front of the whole app: the media stream skips the middleware stack.

    Every frame of a stream otherwise passes Starlette's ``WebSocket`` and the
    middlewares' ``receive``/``send`` wrappers; here the handshake is checked exactly
    as the route does (:func:`_serve_stream`: signature, draining, the outage's
    1013), and the accepted stream runs on the server's own ``receive``/``send``
    (:class:`~callbridge.web.media_socket.AsgiMediaSocket`). An exception that
    escapes is answered by :class:`~callbridge.web.last_resort.LastResort`, as
    behind the stack. Any other scope, or a process that serves no media, goes to
    ``app`` unchanged.

    Args:
        app: the application (its middleware stack included).
        container: the wired container.
    """

    def __init__(self, app: ASGIApp, container: Container) -> None:
        self.app = app
        self._container = container
        self._serves_media = container.role.serves_media
        self._stream = LastResort(self._asgi_stream)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "websocket"
            and self._serves_media
            and scope["path"] == MEDIA_STREAM_PATH
            and not scope.get("root_path")
        ):
            await self._stream(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _asgi_stream(self, scope: Scope, receive: Receive, send: Send) -> None:
        websocket = WebSocket(scope, receive, send)  # for the handshake only
        many = SEND_MANY in (scope.get("extensions") or {})
        await _serve_stream(
            self._container, websocket, lambda: AsgiMediaSocket(receive, send, send_many=many)
        )
