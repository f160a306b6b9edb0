"""A call record to store, for tests that put calls in the store directly."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from callbridge.ports import NewCall

#: The documented example number most tests call.
NUMBER = "+12025550142"


def new_call(call_id: str = "call_1", number: str = NUMBER, **fields: Any) -> NewCall:
    """A call to ``number`` (dialled as is) in agent mode, with no web-chat context, no
    idempotency key and no client, made now; ``fields`` set any other of its values."""
    call = NewCall(
        id=call_id,
        to_number=number,
        dialled_number=number,
        mode="agent",
        context_name=None,
        context_reason=None,
        context_summary=None,
        context_conversation_id=None,
        stream_token_hash="0" * 64,
        idempotency_key=None,
        client_ip_hash=None,
        created_at=datetime.now(UTC),
    )
    return replace(call, **fields)
