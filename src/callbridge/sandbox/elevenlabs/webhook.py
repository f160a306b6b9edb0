"""The body of the emulator's ``post_call_transcription`` webhook.

Shape per https://elevenlabs.io/docs/agents-platform/workflows/post-call-webhooks
(protocols.md §4.10): ``{"type", "event_timestamp", "data": {…}}``. The docs say
``data`` "matches the GET Conversation response format exactly", so it is
elevenlabs-python's ``GetConversationResponseModel`` (SDK 2.78), every required
field included (``has_audio``, ``has_user_audio``, ``has_response_audio``,
``has_auxiliary_audio``), with the optional ``agent_name`` and message counts that
the Conversations API returns. Whether live webhooks carry ``has_auxiliary_audio``,
``agent_name`` and the counts is [unconfirmed] (the field is newer than the 2025
OpenAPI); our receiver must not depend on them either way.
"""

from __future__ import annotations

import json
from typing import Any

from callbridge.sandbox.elevenlabs.agent import ConversationRecord, TranscriptTurn

__all__ = ["AGENT_NAME", "history_turn", "post_call_transcription"]

#: The emulated agent's name (``agent_name``).
AGENT_NAME = "callbridge demo agent"

_TERMINATION = {
    1000: "Call ended by the agent",
    1002: "Operational error",
    1008: "Invalid message",
    1011: "Internal error",
}


def post_call_transcription(record: ConversationRecord, *, now: int) -> dict[str, Any]:
    """Build the webhook envelope for one finished conversation.

    Args:
        record: the conversation, as the emulator recorded it.
        now: unix seconds for ``event_timestamp``.
    """
    duration = int((record.ended_at or now) - record.started_at)
    init = record.init_data or {}
    variables = {
        **record.dynamic_variables,
        "system__agent_id": record.agent_id,
        "system__conversation_id": record.conversation_id,
        "system__call_duration_secs": duration,
    }
    if record.closed_by == "client":
        termination = "Client disconnected"
    else:
        termination = record.close_reason or _TERMINATION.get(record.close_code or 0, "ended")
    user_turns = sum(1 for turn in record.transcript if turn.role == "user")
    spoken = [turn for turn in record.transcript if turn.message]
    summary = (
        f"The demo agent greeted the caller and the conversation lasted {duration} s "
        f"with {len(record.responses)} agent response(s), {user_turns} user turn(s), "
        f"{len(record.interruptions)} interruption(s) and {len(record.tool_calls)} tool call(s)."
    )
    return {
        "type": "post_call_transcription",
        "event_timestamp": now,
        "data": {
            "agent_id": record.agent_id,
            "agent_name": AGENT_NAME,
            "conversation_id": record.conversation_id,
            "status": "done",
            "user_id": init.get("user_id"),
            "transcript": [history_turn(turn, record) for turn in record.transcript],
            "metadata": {
                "start_time_unix_secs": int(record.started_at),
                "call_duration_secs": duration,
                "cost": 0,
                "deletion_settings": {},
                "feedback": {"overall_score": None, "likes": 0, "dislikes": 0},
                "authorization_method": record.authorization_method,
                "charging": {"dev_discount": False},
                "termination_reason": termination,
            },
            "analysis": {
                "evaluation_criteria_results": {},
                "data_collection_results": {},
                "call_successful": "success" if record.responses else "unknown",
                "transcript_summary": summary,
            },
            "conversation_initiation_client_data": {
                "conversation_config_override": record.overrides,
                "custom_llm_extra_body": init.get("custom_llm_extra_body") or {},
                "dynamic_variables": variables,
            },
            "has_audio": False,
            "has_user_audio": False,
            "has_response_audio": False,
            "has_auxiliary_audio": False,
            "user_message_count": sum(1 for turn in spoken if turn.role == "user"),
            "agent_message_count": sum(1 for turn in spoken if turn.role == "agent"),
        },
    }


def history_turn(turn: TranscriptTurn, record: ConversationRecord) -> dict[str, Any]:
    """A transcript turn as ``ConversationHistoryTranscriptResponseModel``: the shape of
    the webhook's and the Conversations API's ``transcript`` (tool calls by ``request_id``)."""
    names = {
        str(call.get("tool_call_id")): str(call.get("tool_name")) for call in record.tool_calls
    }
    return {
        "role": turn.role,
        "message": turn.message,
        "tool_calls": [
            {
                "type": "client",
                "request_id": str(call.get("tool_call_id")),
                "tool_name": str(call.get("tool_name")),
                "params_as_json": json.dumps(call.get("parameters") or {}),
                "tool_has_been_called": True,
                "tool_details": {
                    "type": "client",
                    "parameters": json.dumps(call.get("parameters") or {}),
                },
            }
            for call in turn.tool_calls
        ],
        "tool_results": [
            {
                "type": "client",
                "request_id": str(result.get("tool_call_id")),
                "tool_name": names.get(str(result.get("tool_call_id")), "unknown"),
                "result_value": str(result.get("result", "")),
                "is_error": bool(result.get("is_error")),
                "tool_has_been_called": True,
            }
            for result in turn.tool_results
        ],
        "feedback": None,
        "time_in_call_secs": turn.time_in_call_secs,
        "conversation_turn_metrics": None,
        "interrupted": False,
    }
