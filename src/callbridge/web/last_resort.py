"""The last resort: an exception that escapes every handler still gets a clean answer.

Pure ASGI (style.md habit 8), for HTTP and WebSocket scopes. The exception handlers
of :mod:`callbridge.web.errors` answer every project error; this catches what they
cannot see: an exception wrapped in an ``ExceptionGroup`` by a task group, one raised
by a WebSocket route, or a plain bug. HTTP gets the JSON error body (503
``unavailable`` with ``Retry-After`` when the database or Redis is the cause, 500
``internal_error`` otherwise), never Starlette's plain-text "Internal Server Error"
and never the exception's text. A WebSocket is closed with 1013 (try again later)
for an outage or 1011 (internal error) for anything else. An outage is logged as a
warning; anything else as an error naming the exception's type and its innermost
frames, never its message or locals (they may hold personal data).
"""

from __future__ import annotations

import traceback
from typing import Any

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from callbridge.errors import StoreError
from callbridge.web.errors import error_response, unavailable_response

__all__ = ["LastResort", "store_error_in"]

_log = structlog.get_logger(__name__)

#: RFC 6455 §7.4.1 close codes (1013 from the IANA registry: "Try Again Later").
WS_INTERNAL_ERROR = 1011
WS_TRY_AGAIN_LATER = 1013


def store_error_in(exc: BaseException) -> StoreError | None:
    """The :class:`StoreError` that ``exc`` is, or that every leaf of its group is."""
    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        leaves = [store_error_in(inner) for inner in exc.exceptions]
        if leaves and all(leaf is not None for leaf in leaves):
            return leaves[0]
    return None


class LastResort:
    """Turns an escaped exception into a JSON error (HTTP) or a close code (WebSocket).

    Args:
        app: the application it wraps.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        state = {"started": False, "closed": False}

        async def watched(message: Message) -> None:
            kind = message["type"]
            if kind in ("http.response.start", "websocket.accept", "websocket.http.response.start"):
                state["started"] = True
            elif kind == "websocket.close":
                state["closed"] = True
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except Exception as exc:  # noqa: BLE001 - the one place that must catch everything
            outage = store_error_in(exc)
            _log_escape(scope, exc, outage)
            if scope["type"] == "http":
                if state["started"]:
                    return  # the body was under way: ending the response is all we can do
                response = (
                    unavailable_response(outage)
                    if outage is not None
                    else error_response("internal_error", "Something went wrong on our side.", 500)
                )
                await response(scope, receive, send)
                return
            if not state["closed"]:
                code = WS_TRY_AGAIN_LATER if outage is not None else WS_INTERNAL_ERROR
                try:
                    await send({"type": "websocket.close", "code": code})
                except (OSError, RuntimeError):
                    return  # the peer is already gone


def _log_escape(scope: Scope, exc: Exception, outage: StoreError | None) -> None:
    where: dict[str, Any] = {"scope": scope["type"], "path": scope.get("path", "")}
    if outage is not None:
        _log.warning(
            "store_unavailable", dependency=outage.dependency, error=outage.message, **where
        )
    else:
        # Where it happened, without the message or the frames' locals: either may hold
        # a phone number, a token or SQL parameters (security.md: none in the logs).
        _log.error("unhandled_exception", error=_kinds(exc), frames=_frames(exc), **where)


def _kinds(exc: BaseException) -> str:
    """The exception's type name, or its group's leaves' (``ExceptionGroup[ValueError]``)."""
    if isinstance(exc, BaseExceptionGroup):
        return f"{type(exc).__name__}[{', '.join(_kinds(e) for e in exc.exceptions)}]"
    return type(exc).__name__


def _frames(exc: BaseException, keep: int = 8) -> list[str]:
    """The innermost ``keep`` frames as ``file:line in function``."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    stack = traceback.extract_tb(exc.__traceback__)[-keep:]
    return [
        f"{frame.filename.rsplit('/', 2)[-1]}:{frame.lineno} in {frame.name}" for frame in stack
    ]
