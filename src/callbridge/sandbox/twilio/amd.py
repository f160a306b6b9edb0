"""Twilio's Answering Machine Detection, emulated: which verdict, and when (pure).

Implements the parameters of POST /Calls (``MachineDetection``, the timeouts and
thresholds, ``AsyncAmd``, ``AsyncAmdStatusCallback[Method]``) and the verdicts of
https://www.twilio.com/docs/voice/answering-machine-detection as the research notes
(§4) record them:

* ``Enable``: ``human``, ``machine_start``, ``fax`` or ``unknown``, as soon as the
  answerer is identified: a machine once its speech has lasted
  ``MachineDetectionSpeechThreshold``.
* ``DetectMessageEnd``: the same for people and faxes, but a machine only at the end
  of its greeting (its beep): ``machine_end_beep``.
* ``unknown`` when no decision came within ``MachineDetectionTimeout``.
* Asynchronous: the verdict is POSTed to ``AsyncAmdStatusCallback`` with exactly
  ``AccountSid``, ``CallSid``, ``AnsweredBy`` and ``MachineDetectionDuration`` (ms);
  synchronous: the TwiML request waits for it and carries ``AnsweredBy`` (and the
  duration).

Emulation choices, marked because Twilio does not document them: a person is judged
after one short word (:data:`HUMAN_WORD_S`) and ``MachineDetectionSpeechEndThreshold``
of silence; a fax after :data:`FAX_TONE_S`; a machine whose greeting is shorter than
the speech threshold sounds like a person and is judged ``human`` (as real AMD tends
to); no verdict is sent for a call that ended before it.
"""

from __future__ import annotations

from dataclasses import dataclass

from callbridge.sandbox.callee import Answerer, CalleeScript

#: Seconds of a person's first word ("Hello?") before AMD hears them stop [emulation choice].
HUMAN_WORD_S = 0.5
#: Seconds for a fax's calling tone to be recognised [emulation choice].
FAX_TONE_S = 1.0
#: Twilio's warning when AMD is asynchronous with no callback URL (research notes §4.1).
NO_AMD_CALLBACK = 21262


@dataclass(frozen=True)
class AmdRequest:
    """The AMD a call was created with (defaults are Twilio's)."""

    mode: str
    asynchronous: bool = False
    callback: str | None = None
    callback_method: str = "POST"
    timeout_s: float = 30.0
    speech_threshold_s: float = 2.4
    speech_end_threshold_s: float = 1.2
    silence_timeout_s: float = 5.0


@dataclass(frozen=True)
class Verdict:
    """What AMD reports and how many seconds after the answer."""

    answered_by: str
    after_s: float

    @property
    def duration_ms(self) -> str:
        """``MachineDetectionDuration`` as Twilio sends it (milliseconds, a string)."""
        return str(round(self.after_s * 1000))


def verdict_for(script: CalleeScript, request: AmdRequest) -> Verdict:
    """The verdict for the answerer of ``script`` under ``request``."""
    end_s = request.speech_end_threshold_s
    if script.answerer is Answerer.FAX:
        verdict = Verdict("fax", FAX_TONE_S)
    elif script.answerer is Answerer.HUMAN:
        verdict = Verdict("human", HUMAN_WORD_S + end_s)
    elif script.greeting_s < request.speech_threshold_s:
        verdict = Verdict("human", script.greeting_s + end_s)  # too short for a machine
    elif request.mode == "DetectMessageEnd":
        verdict = Verdict("machine_end_beep", script.greeting_s)
    else:
        verdict = Verdict("machine_start", request.speech_threshold_s)
    if script.amd is not None:
        verdict = Verdict(script.amd, verdict.after_s)
    if verdict.after_s > request.timeout_s:
        return Verdict("unknown", request.timeout_s)
    return verdict


def callback_params(account_sid: str, call_sid: str, verdict: Verdict) -> dict[str, str]:
    """The asynchronous AMD callback's form fields."""
    return {
        "AccountSid": account_sid,
        "CallSid": call_sid,
        "AnsweredBy": verdict.answered_by,
        "MachineDetectionDuration": verdict.duration_ms,
    }
