"""Project exceptions → JSON error bodies with the right HTTP status.

Every error body is ``{"success": false, "error": {"code": "...", "message": "..."}}``;
the message is the exception's sentence, which never holds a secret.
"""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from callbridge.errors import (
    CallbridgeError,
    Overloaded,
    PolicyRejected,
    StoreError,
    Unavailable,
)

_log = structlog.get_logger(__name__)


def error_response(
    code: str,
    message: str,
    status: int,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    """The standard error body."""
    body: dict[str, Any] = {"success": False, "error": {"code": code, "message": message}}
    body.update(extra)
    return JSONResponse(body, status_code=status, headers=headers)


def unavailable_response(exc: StoreError) -> JSONResponse:
    """503 ``unavailable`` with ``Retry-After``: the database or Redis is away; nothing was
    changed, so the same request may simply be sent again."""
    # An outage is expected and tells its own story; a store refusing a query is a bug.
    log = _log.warning if isinstance(exc, Unavailable) else _log.error
    log("store_unavailable", dependency=exc.dependency, error=exc.message)
    return error_response(
        "unavailable",
        f"The service is briefly unavailable. Try again in {exc.retry_after} seconds.",
        503,
        {"Retry-After": str(exc.retry_after)},
    )


async def _callbridge_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, CallbridgeError)
    headers: dict[str, str] = {}
    if isinstance(exc, PolicyRejected | Overloaded) and exc.retry_after is not None:
        headers["Retry-After"] = str(exc.retry_after)
    if isinstance(exc, StoreError):
        return unavailable_response(exc)
    extra: dict[str, Any] = {}
    call_id = getattr(exc, "call_id", None)
    if call_id:
        extra["call_id"] = call_id
    next_allowed = getattr(exc, "next_allowed", None)
    if next_allowed is not None:
        extra["next_allowed"] = next_allowed
    return error_response(exc.code, exc.message, exc.http_status, headers, **extra)


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(
        exc.status_code, "http_error"
    )
    return error_response(code, str(exc.detail), exc.status_code)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    return error_response(
        "invalid_request", f"{where or 'request'}: {first.get('msg', 'is not valid')}", 400
    )


def install(app: FastAPI) -> None:
    """Register the handlers on ``app``."""
    app.add_exception_handler(CallbridgeError, _callbridge_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
