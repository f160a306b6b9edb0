"""Answering machines: Twilio's AMD verdicts and what callbridge does with each (pure).

Twilio's asynchronous Answering Machine Detection (protocols.md §2.4; research notes
§4) posts one verdict per call, ``AnsweredBy``:

* with ``MachineDetection=Enable``: ``human``, ``machine_start``, ``fax``, ``unknown``;
* with ``MachineDetection=DetectMessageEnd``: ``human``, ``machine_end_beep``,
  ``machine_end_silence``, ``machine_end_other``, ``fax``, ``unknown`` — for a
  machine only once its greeting has ended (so a message starts after the beep).

``CALLBRIDGE_VOICEMAIL`` says what a machine gets: ``hangup`` (end at once; AMD runs
in ``Enable`` mode, the quicker verdict), ``message`` (the default: after the beep, a
short message saying who called, why and how to reach us) or ``agent`` (the agent
leaves the message, with a first message meant for voicemail). Both of those run in
``DetectMessageEnd`` mode. ``fax`` and a ``machine_start`` with no end are always hung
up; ``unknown`` is treated as a person, who must never be hung up on.

Unconfirmed (research notes §4.2, [C3]): the value lists per mode and "one verdict per
call" come from consistent third-party quotes of Twilio's AMD page, not from the
OpenAPI spec. So every value is handled whatever mode was asked for, and a value we
do not know is treated as a person (the safe side).
"""

from __future__ import annotations

import enum
import re


class AnsweredBy(enum.StrEnum):
    """Twilio's ``AnsweredBy`` values."""

    HUMAN = "human"
    UNKNOWN = "unknown"
    MACHINE_START = "machine_start"
    MACHINE_END_BEEP = "machine_end_beep"
    MACHINE_END_SILENCE = "machine_end_silence"
    MACHINE_END_OTHER = "machine_end_other"
    FAX = "fax"


#: Verdicts that say an answering machine's greeting has ended (a message may follow).
MACHINE_END = frozenset(
    {AnsweredBy.MACHINE_END_BEEP, AnsweredBy.MACHINE_END_SILENCE, AnsweredBy.MACHINE_END_OTHER}
)
#: Verdicts after which the call ends as ``voicemail`` (a machine took it).
MACHINE = MACHINE_END | {AnsweredBy.MACHINE_START}


class VoicemailPolicy(enum.StrEnum):
    """``CALLBRIDGE_VOICEMAIL``: what an answering machine gets."""

    HANGUP = "hangup"
    MESSAGE = "message"
    AGENT = "agent"


class MachineAction(enum.StrEnum):
    """What the call does after a verdict."""

    CARRY_ON = "carry_on"  # a person (or nobody knows): nothing changes
    HANG_UP = "hang_up"
    LEAVE_MESSAGE = "leave_message"  # our <Say> after the beep, then hang up
    AGENT_MESSAGE = "agent_message"  # the agent speaks a voicemail first message


#: Twilio's defaults (research notes §4.1, [C OAI]; the timeout range 3-59 is [C3]).
DEFAULT_TIMEOUT_S = 30
DEFAULT_SPEECH_THRESHOLD_MS = 2400
DEFAULT_SPEECH_END_THRESHOLD_MS = 1200
DEFAULT_SILENCE_TIMEOUT_MS = 5000


def parse_answered_by(raw: str | None) -> AnsweredBy | None:
    """The verdict, or None for a value Twilio did not document (treated as a person)."""
    try:
        return AnsweredBy(raw or "")
    except ValueError:
        return None


def detection_mode(policy: VoicemailPolicy) -> str:
    """``MachineDetection`` to ask for: wait for the beep only when a message is left."""
    return "Enable" if policy is VoicemailPolicy.HANGUP else "DetectMessageEnd"


def action_for(answered_by: AnsweredBy | None, policy: VoicemailPolicy) -> MachineAction:
    """What to do about one verdict under ``policy``."""
    if answered_by is None or answered_by in (AnsweredBy.HUMAN, AnsweredBy.UNKNOWN):
        return MachineAction.CARRY_ON
    if answered_by not in MACHINE_END:
        return MachineAction.HANG_UP  # fax, or a machine_start that will not be followed
    if policy is VoicemailPolicy.MESSAGE:
        return MachineAction.LEAVE_MESSAGE
    if policy is VoicemailPolicy.AGENT:
        return MachineAction.AGENT_MESSAGE
    return MachineAction.HANG_UP


def is_machine(answered_by: str | None) -> bool:
    """Whether a stored verdict says an answering machine took the call."""
    return parse_answered_by(answered_by) in MACHINE


#: The visitor's reason is read out on a stranger's machine if the number was not
#: theirs: it is cut short and kept to plain words, so the message cannot be turned
#: into a broadcast of arbitrary text.
MAX_REASON_CHARS = 100
_PLAIN = re.compile(r"[^\w\s,.'?!-]", re.UNICODE)


def voicemail_message(template: str, *, site_name: str, reason: str | None) -> str:
    """The message left on a machine: who called, why, and how to reach us.

    ``template`` (``CALLBRIDGE_VOICEMAIL_MESSAGE``) may use ``{site_name}`` and
    ``{reason}``: the visitor's reason as a clause (" about …"), empty when none was
    given. The visitor's words are data: a ``<Say>`` only speaks them.
    """
    plain = " ".join(_PLAIN.sub(" ", reason or "").split())[:MAX_REASON_CHARS]
    why = f" about {plain.rstrip('.,!?- ')}" if plain.strip(".,!?- ") else ""
    text = template.format(site_name=site_name, reason=why)
    return " ".join(text.split())
