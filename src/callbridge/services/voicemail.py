"""Answering machines: act on Twilio's asynchronous AMD verdict for a call.

The greeting (or the consent prompt) starts the moment the call is answered, as
always; Twilio listens beside it and posts its verdict to ``/api/call/amd``. A
person (``human``, ``unknown``) changes nothing. A machine, per
``CALLBRIDGE_VOICEMAIL`` (:mod:`callbridge.domain.amd`), is hung up, given our
message after its beep, or given the agent with a first message meant for
voicemail; a fax or a ``machine_start`` is hung up. Whatever the call was doing is
replaced through the REST API (``Twiml``), which also ends a running media stream:
its bridge closes the agent session, so agent minutes stop. A session opened ahead
for the call (the pre-warm) is closed at once through :class:`MachineAnsweredObserver`.

The message step proves itself: the TwiML says the message, then redirects to
``/api/call/twiml?step=voicemail_left``, which Twilio requests only once the
``<Say>`` has played to its end; only then is ``message_left`` recorded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import structlog

from callbridge.domain.amd import (
    AnsweredBy,
    MachineAction,
    VoicemailPolicy,
    action_for,
    is_machine,
    parse_answered_by,
    voicemail_message,
)
from callbridge.domain.call import Call, CallMode
from callbridge.errors import ProviderError
from callbridge.metrics import Metrics
from callbridge.ports import (
    CallEvent,
    CallStore,
    Clock,
    MachineAnsweredObserver,
    StatusUpdate,
    TelephonyProvider,
    TwimlWriter,
)
from callbridge.services.tokens import StreamTokens

_log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class VoicemailConfig:
    """What a machine gets, and the words of the message."""

    policy: VoicemailPolicy
    message_template: str
    site_name: str
    public_base_url: str


def voicemail_stream_token(tokens: StreamTokens, call_id: str) -> str:
    """The token of the second stream (the agent's voicemail): not the first one's."""
    return tokens.token_for(f"{call_id}/voicemail")


class Voicemail:
    """Acts on AMD verdicts: records them, and ends or redirects machine-answered calls."""

    def __init__(
        self,
        *,
        config: VoicemailConfig,
        store: CallStore,
        telephony: TelephonyProvider,
        twiml: TwimlWriter,
        stream_tokens: StreamTokens,
        clock: Clock,
        metrics: Metrics | None = None,
        on_machine: MachineAnsweredObserver | None = None,
    ) -> None:
        self._config = config
        self._store = store
        self._telephony = telephony
        self._twiml = twiml
        self._tokens = stream_tokens
        self._clock = clock
        self._metrics = metrics
        self._on_machine = on_machine

    @property
    def policy(self) -> VoicemailPolicy:
        """``CALLBRIDGE_VOICEMAIL``."""
        return self._config.policy

    def message_for(self, call: Call) -> str:
        """The voicemail message for ``call``: who called, why, how to reach us."""
        return voicemail_message(
            self._config.message_template,
            site_name=self._config.site_name,
            reason=call.context.reason,
        )

    def _action(self, call: Call) -> MachineAction:
        action = action_for(parse_answered_by(call.answered_by), self._config.policy)
        if action is MachineAction.AGENT_MESSAGE and call.mode is CallMode.OWNER:
            return MachineAction.LEAVE_MESSAGE  # no agent in owner mode: our message
        return action

    async def verdict(self, call: Call, params: Mapping[str, str]) -> None:
        """Record Twilio's verdict for ``call`` and act on it (a replay changes nothing)."""
        raw = params.get("AnsweredBy", "")[:40]
        duration = params.get("MachineDetectionDuration", "")
        duration_ms = int(duration) if duration.isdigit() else None
        verdict = parse_answered_by(raw)
        if verdict is None:
            # Not a value Twilio documents: treat as a person, never hang up on one.
            _log.warning("amd_verdict_unknown", answered_by=raw)
        fresh = await self._store.add_event(
            CallEvent(
                call_id=call.id,
                source="amd",  # apart from the status callbacks' "twilio" timeline
                status="verdict",
                at=self._clock.now(),
                sequence_number=0,  # one verdict per call: a retry of it is a replay
                detail={"answered_by": raw, "duration_ms": duration_ms},
            )
        )
        if not fresh:
            _log.info("amd_callback_replayed", answered_by=raw)
            return
        machine = is_machine(raw) or verdict is AnsweredBy.FAX
        call = await self._store.update_call(
            call.id,
            StatusUpdate(
                answered_by=raw or None,
                amd_duration_ms=duration_ms,
                message_left=False if machine else None,
            ),
        )
        if self._metrics is not None and duration_ms is not None:
            label = verdict.value if verdict is not None else "other"
            self._metrics.amd_detection.labels(answered_by=label).observe(duration_ms / 1000)
        _log.info("amd_verdict", answered_by=raw, duration_ms=duration_ms)
        action = self._action(call)
        if action is MachineAction.CARRY_ON:
            return
        if self._on_machine is not None:
            await self._on_machine.machine_answered(call)
        if call.status.is_terminal:
            return  # over already (a late verdict): only the record changes
        await self._act(call, action)

    async def _act(self, call: Call, action: MachineAction) -> None:
        sid = call.call_sid or ""
        try:
            if action is MachineAction.HANG_UP:
                await self._telephony.hang_up(sid)
            else:
                await self._telephony.redirect(sid, twiml=await self._twiml_for(call, action))
        except ProviderError as exc:
            _log.error("amd_action_failed", action=action.value, error=exc.message)
            return
        await self._event(call.id, "voicemail_action", {"action": action.value})

    async def _twiml_for(self, call: Call, action: MachineAction) -> str:
        if action is MachineAction.HANG_UP:
            return self._twiml.hang_up()
        if action is MachineAction.LEAVE_MESSAGE:
            done = (
                f"{self._config.public_base_url}/api/call/twiml"
                f"?step=voicemail_left&call_id={call.id}"
            )
            return self._twiml.leave_message(self.message_for(call), done)
        # The agent's voicemail runs on a second stream, with a fresh single-use token.
        token = voicemail_stream_token(self._tokens, call.id)
        await self._store.renew_stream_token(call.id, self._tokens.digest(token))
        return self._twiml.connect_voicemail_agent(call.id, token)

    async def twiml_instead(self, call: Call) -> str | None:
        """For a TwiML request after a machine verdict: the machine's TwiML, else None.

        A verdict may beat Twilio's TwiML request (or the consent key): the agent
        must not be connected to a machine then.
        """
        action = self._action(call)
        if action is MachineAction.CARRY_ON:
            return None
        await self._event(call.id, "voicemail_action", {"action": action.value})
        return await self._twiml_for(call, action)

    async def agent_unavailable(self, call: Call, reason: str) -> None:
        """No agent for the voicemail (``reason``): our own message is left instead."""
        _log.warning("voicemail_agent_unavailable", reason=reason)
        await self._event(call.id, "voicemail_agent_unavailable", {"reason": reason})
        await self._act(call, MachineAction.LEAVE_MESSAGE)

    def is_voicemail_stream(self, call: Call) -> bool:
        """Whether a stream of ``call`` is the agent's voicemail (not a conversation)."""
        return self._action(call) is MachineAction.AGENT_MESSAGE

    def refuses_stream(self, call: Call) -> bool:
        """Whether a machine took ``call`` and no agent may speak on it."""
        return self._action(call) not in (MachineAction.CARRY_ON, MachineAction.AGENT_MESSAGE)

    async def message_left(self, call: Call) -> None:
        """The whole message was said: record it."""
        await self._store.update_call(call.id, StatusUpdate(message_left=True))
        await self._event(call.id, "voicemail_left", {})
        _log.info("voicemail_left", answered_by=call.answered_by)

    async def _event(self, call_id: str, status: str, detail: Mapping[str, object]) -> None:
        await self._store.add_event(
            CallEvent(
                call_id=call_id,
                source="service",
                status=status,
                at=self._clock.now(),
                detail=detail,
            )
        )
