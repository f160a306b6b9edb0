"""TwiML documents for each step of a call, built with twilio-python's ``VoiceResponse``.

https://www.twilio.com/docs/voice/twiml — ``VoiceResponse`` escapes every
attribute, so visitor-typed text can never break out of a ``<Parameter>``; and the
``<Parameter>``s we send carry only the call id and the per-call token, never a
prompt or anything the visitor typed.
"""

from __future__ import annotations

from dataclasses import dataclass

from twilio.twiml.voice_response import Connect, Gather, VoiceResponse

from callbridge.domain.phrases import APOLOGY, DRAINING, NO_INPUT, OPTED_OUT, TRANSFER

__all__ = [
    "APOLOGY",
    "DRAINING",
    "NO_INPUT",
    "OPTED_OUT",
    "TRANSFER",
    "TwimlBuilder",
    "TwimlConfig",
]


@dataclass(frozen=True, slots=True)
class TwimlConfig:
    """What the TwiML says and where it points.

    Attributes:
        greeting: the opening sentence (who calls, that it is an automated AI call,
            that it may be recorded).
        voice: the ``<Say>`` voice.
        stream_url: the ``wss://`` media-stream URL.
        consent: whether the callee must press 1 before the agent joins.
        consent_timeout: seconds to wait for that key.
        caller_id: our Twilio number (caller id on ``<Dial>``).
        ring_timeout: seconds a ``<Dial>`` rings.
    """

    greeting: str
    voice: str
    stream_url: str
    consent: bool
    consent_timeout: int
    caller_id: str
    ring_timeout: int = 30


class TwimlBuilder:
    """Builds every TwiML document callbridge serves."""

    def __init__(self, config: TwimlConfig) -> None:
        self._config = config

    def _say(self, response: VoiceResponse | Gather, text: str) -> None:
        response.say(text, voice=self._config.voice)

    def consent_prompt(self, action_url: str) -> str:
        """Greeting and disclosure, then "press 1" (or 9 to opt out); hang up on silence."""
        response = VoiceResponse()
        gather = Gather(
            num_digits=1,
            timeout=self._config.consent_timeout,
            action=action_url,
            method="POST",
            action_on_empty_result=False,
        )
        self._say(
            gather,
            f"{self._config.greeting} To talk with our assistant now, press 1. "
            "If you never want to receive these calls, press 9.",
        )
        response.append(gather)
        self._say(response, NO_INPUT)
        response.hangup()
        return str(response)

    def connect_agent(self, call_id: str, token: str, *, greet: bool) -> str:
        """Connect the call's audio to our media stream; apologise and hang up after it."""
        response = VoiceResponse()
        if greet:
            self._say(response, self._config.greeting)
        connect = Connect()
        stream = connect.stream(url=self._config.stream_url)
        stream.parameter(name="call_id", value=call_id)
        stream.parameter(name="token", value=token)
        response.append(connect)
        self._say(response, APOLOGY)
        response.hangup()
        return str(response)

    def dial(self, number: str, *, greet: bool, line: str | None = None) -> str:
        """Say a line, then ``<Dial>`` ``number`` with our number as caller id."""
        response = VoiceResponse()
        if greet:
            self._say(response, self._config.greeting)
        if line:
            self._say(response, line)
        response.dial(number, caller_id=self._config.caller_id, timeout=self._config.ring_timeout)
        return str(response)

    def say_and_hang_up(self, text: str) -> str:
        """Say ``text`` and end the call."""
        response = VoiceResponse()
        self._say(response, text)
        response.hangup()
        return str(response)

    def hang_up(self) -> str:
        """End the call, saying nothing."""
        response = VoiceResponse()
        response.hangup()
        return str(response)

    def leave_message(self, text: str, done_url: str) -> str:
        """Say ``text`` after a machine's beep, then ``<Redirect>`` to ``done_url``.

        Twilio reaches the ``<Redirect>`` only once the ``<Say>`` has played to its end,
        so the request to ``done_url`` is the proof that the whole message was left.
        """
        response = VoiceResponse()
        self._say(response, text)
        response.redirect(done_url, method="POST")
        return str(response)

    def connect_voicemail_agent(self, call_id: str, token: str) -> str:
        """Connect the stream for the agent's voicemail; hang up when it ends."""
        response = VoiceResponse()
        connect = Connect()
        stream = connect.stream(url=self._config.stream_url)
        stream.parameter(name="call_id", value=call_id)
        stream.parameter(name="token", value=token)
        response.append(connect)
        response.hangup()
        return str(response)

    @staticmethod
    def empty() -> str:
        """An empty response (acknowledges a webhook)."""
        return str(VoiceResponse())
