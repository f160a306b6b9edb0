"""A call and its status state machine (pure).

Statuses move forward only::

    scheduled ─► requested (claimed by the scheduler when due)
        └──────► canceled, missed (not placed within the grace window), failed

    requested ─► queued ─► initiated ─► ringing ─► in-progress ─► completed
        │           │          │           │            │         voicemail
        │           │          │           │            │         agent_failed
        └───────────┴──────────┴───────────┴────────────┴───────► busy, no-answer,
                                                                  canceled, failed

``voicemail`` is a call that an answering machine took (Twilio's AMD said so):
Twilio reports it ``completed`` and the status service records it as ``voicemail``.

Twilio's status callbacks may arrive late, twice or out of order: a callback that
would move a call backwards (``ringing`` after ``in-progress``) or out of a
terminal status is an :class:`~callbridge.errors.InvalidTransition`, which the
status service records as an event and otherwise ignores.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

import structlog

from callbridge.errors import InvalidTransition

_log = structlog.get_logger(__name__)

#: What a call id looks like: ``call_`` and 20 hex digits when callbridge makes it;
#: letters, digits, ``_`` and ``-`` (at most 64) for the ids operators' tools and
#: older versions wrote. Anything else (control characters, ``%00``, spaces) names no call.
_CALL_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def is_call_id(text: str) -> bool:
    """Whether ``text`` has the shape of a call id (so it is worth looking up)."""
    return _CALL_ID.fullmatch(text) is not None


class CallStatus(StrEnum):
    """Where a call is in its life."""

    SCHEDULED = "scheduled"
    REQUESTED = "requested"
    QUEUED = "queued"
    INITIATED = "initiated"
    RINGING = "ringing"
    IN_PROGRESS = "in-progress"
    COMPLETED = "completed"
    VOICEMAIL = "voicemail"
    BUSY = "busy"
    NO_ANSWER = "no-answer"
    CANCELED = "canceled"
    FAILED = "failed"
    AGENT_FAILED = "agent_failed"
    MISSED = "missed"

    @property
    def is_terminal(self) -> bool:
        """Whether the call has ended (a terminal status never changes)."""
        return self in TERMINAL

    @property
    def rank(self) -> int:
        """Position in the forward order; every terminal status shares the last rank."""
        return _RANK.get(self, len(_ORDER))


_ORDER = (
    CallStatus.SCHEDULED,
    CallStatus.REQUESTED,
    CallStatus.QUEUED,
    CallStatus.INITIATED,
    CallStatus.RINGING,
    CallStatus.IN_PROGRESS,
)
_RANK = {status: i for i, status in enumerate(_ORDER)}

TERMINAL = frozenset(
    {
        CallStatus.COMPLETED,
        CallStatus.VOICEMAIL,
        CallStatus.BUSY,
        CallStatus.NO_ANSWER,
        CallStatus.CANCELED,
        CallStatus.FAILED,
        CallStatus.AGENT_FAILED,
        CallStatus.MISSED,
    }
)

#: Twilio ``CallStatus`` values (protocols.md 2.2) that map to ours one to one.
TWILIO_STATUSES = frozenset(
    {
        "queued",
        "initiated",
        "ringing",
        "in-progress",
        "completed",
        "busy",
        "no-answer",
        "canceled",
        "failed",
    }
)


def transition(current: CallStatus, target: CallStatus) -> CallStatus:
    """Check that a call may move from ``current`` to ``target``.

    Returns:
        ``target``.

    Raises:
        InvalidTransition: when ``current`` is terminal, or ``target`` is not later.
    """
    if current.is_terminal or target.rank <= current.rank:
        raise InvalidTransition("call", current.value, target.value)
    _log.debug("call_status_changed", previous=current.value, status=target.value)
    return target


class CallMode(StrEnum):
    """How the call is connected once answered."""

    AGENT = "agent"
    OWNER = "owner"


@dataclass(frozen=True, slots=True)
class ChatContext:
    """What the visitor told the web agent; passed to the phone agent as dynamic variables.

    These are visitor-typed fields: they are data for the agent, never instructions,
    and never go into a prompt override.
    """

    visitor_name: str | None = None
    reason: str | None = None
    summary: str | None = None
    conversation_id: str | None = None


@dataclass(frozen=True, slots=True)
class CallFailure:
    """Why a call ended badly: our code (and the provider's, if any) and a sentence."""

    code: str
    message: str
    provider_code: int | None = None


@dataclass(frozen=True, slots=True)
class Call:
    """A call as the services see it (the store maps rows to this)."""

    id: str
    to_number: str
    mode: CallMode
    status: CallStatus
    created_at: datetime
    context: ChatContext
    dialled_number: str
    call_sid: str | None = None
    failure_code: str | None = None
    failure_reason: str | None = None
    provider_error_code: int | None = None
    answered_at: datetime | None = None
    ended_at: datetime | None = None
    duration_s: int | None = None
    price: str | None = None
    price_unit: str | None = None
    answered_by: str | None = None
    amd_duration_ms: int | None = None
    message_left: bool | None = None
    stream_sid: str | None = None
    agent_conversation_id: str | None = None
    consent: str | None = None
    analysis: str | None = None
    is_test: bool = False
    scheduled_for: datetime | None = None
    retry_on_no_answer: bool = False
    retry_of: str | None = None
    attempt: int = 1
    client_ip_hash: str | None = None


#: Outcomes the operator sees for calls Twilio reports ``completed`` whose callee did not
#: go on to talk (DESIGN.md): ``opted_out`` (pressed 9: now on the do-not-call list) and
#: ``no_consent`` (asked to press 1, pressed another key or nothing).
OPTED_OUT = "opted_out"
NO_CONSENT = "no_consent"
OUTCOMES = (OPTED_OUT, NO_CONSENT)
#: The stored ``consent`` values that mean the callee was asked and never said yes.
CONSENT_NOT_GIVEN = frozenset({"asked", "declined"})
#: Every value the operator may filter calls by: the statuses, then the outcomes.
LISTED_STATUSES = (*(s.value for s in CallStatus), *OUTCOMES)


def outcome_of(status: CallStatus, consent: str | None) -> str:
    """What became of a call, for the operator: its status, or an outcome for a completed
    call whose callee opted out or gave no consent (read from the stored ``consent``)."""
    if status is CallStatus.COMPLETED:
        if consent == "opted_out":
            return OPTED_OUT
        if consent in CONSENT_NOT_GIVEN:
            return NO_CONSENT
    return status.value
