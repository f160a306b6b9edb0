"""Reading requests safely: bounded bodies, strict JSON, the client's address, origins."""

from __future__ import annotations

import ipaddress
from datetime import datetime
from typing import Any

import orjson
from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from callbridge.errors import CallbridgeError, ValidationFailed

MAX_JSON_BODY = 16 * 1024
MAX_FORM_BODY = 64 * 1024


class TooLarge(CallbridgeError):
    """The request body is larger than this endpoint accepts."""

    code = "too_large"
    http_status = 413


class UnsupportedMediaType(CallbridgeError):
    """The body is not in the media type this endpoint reads."""

    code = "unsupported_media_type"
    http_status = 415


def require_json(request: Request) -> None:
    """Refuse (415) a body not declared as ``application/json`` (UTF-8 if a charset is given).

    A JSON endpoint that parsed ``text/plain`` would take "simple" cross-site requests
    a browser sends without a CORS preflight; declaring the type is the client's job.

    Raises:
        UnsupportedMediaType: another or no ``Content-Type``.
    """
    media, *params = request.headers.get("content-type", "").split(";")
    charsets = [
        value.strip().strip('"').lower()
        for name, _, value in (p.partition("=") for p in params)
        if name.strip().lower() == "charset"
    ]
    if media.strip().lower() != "application/json" or any(
        c not in ("utf-8", "utf8") for c in charsets
    ):
        raise UnsupportedMediaType("The request body must be sent as application/json.")


class OutboundCallBody(BaseModel):
    """``POST /api/call/outbound``: the number and the fields the visitor consented to share."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    to_number: str = Field(min_length=1, max_length=64, description="The number to call.")
    name: str | None = Field(None, max_length=100, description="The visitor's name.")
    reason: str | None = Field(None, max_length=500, description="Why they want a call.")
    summary: str | None = Field(None, max_length=2000, description="The web chat's summary.")
    conversation_id: str | None = Field(
        None, max_length=200, description="The web chat's ElevenLabs conversation id."
    )
    at: datetime | None = Field(
        None,
        description="Call me later: an ISO 8601 time with an offset (answered 202 scheduled).",
    )
    retry_on_no_answer: bool = Field(
        False, description="Try again once if the line is busy or nobody answers."
    )


class CancelBody(BaseModel):
    """``POST /api/call/{call_id}/cancel``: the call's capability, from the 202 answer."""

    model_config = ConfigDict(extra="forbid")

    cancel_token: str = Field(min_length=1, max_length=100)


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refusing more than ``limit`` bytes (413) without reading it all."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"The request body is larger than {limit} bytes.")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"The request body is larger than {limit} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_outbound(raw: bytes) -> OutboundCallBody:
    """Strict JSON → :class:`OutboundCallBody`; unknown fields are an error (400)."""
    try:
        data: Any = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ValidationFailed("The request body must be JSON.") from None
    if not isinstance(data, dict):
        raise ValidationFailed("The request body must be a JSON object.")
    try:
        return OutboundCallBody.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "body"
        if err["type"] == "extra_forbidden":
            raise ValidationFailed(
                f"Unknown field {field!r}: only to_number, name, reason, summary, "
                "conversation_id, at and retry_on_no_answer may be sent.",
                code="unknown_field",
            ) from None
        raise ValidationFailed(f"{field}: {err['msg']}") from None


def parse_cancel(raw: bytes) -> CancelBody:
    """Strict JSON → :class:`CancelBody` (400 otherwise)."""
    try:
        return CancelBody.model_validate_json(raw or b"{}")
    except ValidationError:
        raise ValidationFailed("Send the call's cancel_token as JSON.") from None


def client_ip(request: Request, trusted_proxies: list[str]) -> str | None:
    """The client's address; ``X-Forwarded-For`` counts only from a trusted proxy."""
    peer = request.client.host if request.client else None
    if not peer or not trusted_proxies or not _in_networks(peer, trusted_proxies):
        return peer
    forwarded = request.headers.get("x-forwarded-for", "")
    hops = [h.strip() for h in forwarded.split(",") if h.strip()]
    for hop in reversed(hops):
        if not _in_networks(hop, trusted_proxies):
            return hop
    return peer


def _in_networks(address: str, networks: list[str]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    for net in networks:
        try:
            if ip in ipaddress.ip_network(net, strict=False):
                return True
        except ValueError:
            continue
    return False
