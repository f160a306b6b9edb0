"""The emulator's Conversations API: conversation details, the conversation list, deletion.

Serves, beside the conversation socket of :mod:`.emulator` (header
``xi-api-key`` like its other REST routes):

- ``GET /v1/convai/conversations/{conversation_id}`` — conversation details
  (https://elevenlabs.io/docs/api-reference/conversations/get): the post-call webhook's
  ``data`` (``agent_id``, ``conversation_id``, ``status``, ``transcript``, ``metadata``,
  ``analysis``, ``conversation_initiation_client_data``, ``has_audio`` …, with
  ``has_auxiliary_audio``, ``agent_name`` and the message counts), shaped as
  elevenlabs-python's ``GetConversationResponseModel``, with the live status.
- ``GET /v1/convai/conversations`` — one page of ``ConversationSummaryResponseModel``
  items, newest first (``sort_direction=asc`` for oldest first), filtered by
  ``agent_id``, ``user_id``, ``call_start_before_unix`` / ``call_start_after_unix``;
  ``page_size`` 1–100 (default 30) and an opaque ``cursor``
  (https://elevenlabs.io/docs/api-reference/conversations/list). Other filters are ignored.
- ``DELETE /v1/convai/conversations/{conversation_id}`` — forget a conversation (then 404).

``status`` is ``in-progress`` while the socket is open and ``done`` once it closed (the
moment the emulator sends its webhook); :attr:`ConversationsApi.status_overrides` lets a
test report ``initiated``, ``processing`` or ``failed`` instead. The 404 body's
``detail.status`` (``conversation_not_found``) is [U]: only the 404 itself is confirmed.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from callbridge.sandbox.elevenlabs.agent import ConversationRecord
from callbridge.sandbox.elevenlabs.webhook import AGENT_NAME, post_call_transcription

__all__ = ["STATUSES", "ConversationsApi"]

#: ``GetConversationResponseModelStatus``.
STATUSES = ("initiated", "in-progress", "processing", "done", "failed")
_PAGE_DEFAULT = 30
_PAGE_MAX = 100

Authorize = Callable[[Request], JSONResponse | None]


class ConversationsApi:
    """The Conversations REST routes over the emulator's conversation records.

    Args:
        conversations: the emulator's records, by ``conversation_id`` (shared, not copied).
        authorize: the emulator's ``xi-api-key`` check (a refusal response, or None).
        clock: wall-clock unix seconds.

    Attributes:
        routes: the Starlette routes to mount with the emulator's own.
        status_overrides: ``conversation_id`` → status to report instead of the real one.
        requests: the conversation ids asked for with ``GET …/{conversation_id}``.
    """

    def __init__(
        self,
        conversations: dict[str, ConversationRecord],
        *,
        authorize: Authorize,
        clock: Callable[[], float],
    ) -> None:
        self._conversations = conversations
        self._authorize = authorize
        self._clock = clock
        self.status_overrides: dict[str, str] = {}
        self.requests: list[str] = []
        self.routes = [
            Route("/v1/convai/conversations", self._list, methods=["GET"]),
            Route(
                "/v1/convai/conversations/{conversation_id}",
                self._one,
                methods=["GET", "DELETE"],
            ),
        ]

    def status_of(self, record: ConversationRecord) -> str:
        """The conversation's status as the API reports it."""
        override = self.status_overrides.get(record.conversation_id)
        if override is not None:
            return override
        return "in-progress" if record.ended_at is None else "done"

    def details(self, record: ConversationRecord) -> dict[str, Any]:
        """The ``GetConversationResponseModel`` body of one conversation."""
        now = int(self._clock())
        data: dict[str, Any] = dict(post_call_transcription(record, now=now)["data"])
        status = self.status_of(record)
        data["status"] = status
        if status != "done":
            data["analysis"] = None  # analysis is produced while "processing"
        return data

    # --- routes -----------------------------------------------------------------------

    async def _one(self, request: Request) -> JSONResponse:
        refused = self._authorize(request)
        if refused is not None:
            return refused
        conversation_id = request.path_params["conversation_id"]
        record = self._conversations.get(conversation_id)
        if request.method == "GET":
            self.requests.append(conversation_id)
        if record is None:
            return _not_found(conversation_id)
        if request.method == "DELETE":
            del self._conversations[conversation_id]
            return JSONResponse({})
        return JSONResponse(self.details(record))

    async def _list(self, request: Request) -> JSONResponse:
        refused = self._authorize(request)
        if refused is not None:
            return refused
        query = request.query_params
        limits = {
            "page_size": (_PAGE_DEFAULT, 1, _PAGE_MAX),
            "call_start_before_unix": (None, 0, None),
            "call_start_after_unix": (None, 0, None),
        }
        numbers: dict[str, int | None] = {}
        for name, (default, low, high) in limits.items():
            value = _int_param(query, name, default, low, high)
            if isinstance(value, JSONResponse):
                return value
            numbers[name] = value
        page_size = numbers["page_size"] or _PAGE_DEFAULT
        before, after = numbers["call_start_before_unix"], numbers["call_start_after_unix"]
        newest_first = query.get("sort_direction", "desc") != "asc"
        records = sorted(
            (r for r in self._conversations.values() if _matches(r, query, before, after)),
            key=_sort_key,
            reverse=newest_first,
        )
        cursor = query.get("cursor")
        if cursor:
            position = _decode_cursor(cursor)
            if position is None:
                return _invalid("cursor", "Invalid cursor", "value_error")
            records = [
                r
                for r in records
                if (_sort_key(r) < position if newest_first else _sort_key(r) > position)
            ]
        page, more = records[:page_size], len(records) > page_size
        include_summary = query.get("summary_mode") == "include"
        return JSONResponse(
            {
                "conversations": [self._summary(r, include_summary) for r in page],
                "next_cursor": _encode_cursor(page[-1]) if more and page else None,
                "has_more": more,
            }
        )

    def _summary(self, record: ConversationRecord, include_summary: bool) -> dict[str, Any]:
        details = self.details(record)
        analysis = details.get("analysis") or {}
        return {
            "agent_id": record.agent_id,
            "agent_name": AGENT_NAME,
            "conversation_id": record.conversation_id,
            "start_time_unix_secs": details["metadata"]["start_time_unix_secs"],
            "call_duration_secs": details["metadata"]["call_duration_secs"],
            "message_count": len(record.transcript),
            "user_message_count": details["user_message_count"],
            "agent_message_count": details["agent_message_count"],
            "status": details["status"],
            "termination_reason": details["metadata"]["termination_reason"]
            if record.ended_at is not None
            else None,
            "call_successful": analysis.get("call_successful", "unknown"),
            "transcript_summary": analysis.get("transcript_summary") if include_summary else None,
            "call_summary_title": None,
            "direction": None,
            "rating": None,
        }


def _matches(
    record: ConversationRecord, query: Mapping[str, str], before: int | None, after: int | None
) -> bool:
    agent_id, user_id = query.get("agent_id"), query.get("user_id")
    started = int(record.started_at)
    return (
        (not agent_id or record.agent_id == agent_id)
        and (not user_id or (record.init_data or {}).get("user_id") == user_id)
        and (before is None or started < before)
        and (after is None or started > after)
    )


def _sort_key(record: ConversationRecord) -> tuple[float, str]:
    return (record.started_at, record.conversation_id)


def _encode_cursor(record: ConversationRecord) -> str:
    text = f"{record.started_at!r}|{record.conversation_id}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[float, str] | None:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        started, conversation_id = text.split("|", 1)
        return (float(started), conversation_id)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None


def _int_param(
    query: Mapping[str, str], name: str, default: int | None, low: int, high: int | None
) -> int | None | JSONResponse:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        return _invalid(name, "Input should be a valid integer", "int_parsing")
    if value < low:
        return _invalid(
            name, f"Input should be greater than or equal to {low}", "greater_than_equal"
        )
    if high is not None and value > high:
        return _invalid(name, f"Input should be less than or equal to {high}", "less_than_equal")
    return value


def _invalid(name: str, message: str, kind: str) -> JSONResponse:
    """FastAPI's 422 body, as ElevenLabs answers validation errors (protocols.md §4.1)."""
    return JSONResponse(
        {"detail": [{"loc": ["query", name], "msg": message, "type": kind}]}, status_code=422
    )


def _not_found(conversation_id: str) -> JSONResponse:
    return JSONResponse(
        {
            "detail": {
                "status": "conversation_not_found",
                "message": f"Conversation {conversation_id[:64]!r} was not found",
            }
        },
        status_code=404,
    )
