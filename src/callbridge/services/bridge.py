"""The voice bridge: Twilio's media stream ⇄ the ElevenLabs agent, for one call.

One :class:`asyncio.TaskGroup` runs the two pumps; when one side ends, the other is
cancelled and both sockets are closed. The stream's ``start`` is checked (a live
call of ours and its unused per-call token) before any agent session is touched.
Audio passes through untouched when both sides speak μ-law/8000 and is transcoded
otherwise; it goes to Twilio in fixed 20 ms frames (:mod:`.outbound_audio`). The
agent's ``interruption`` becomes Twilio's ``clear`` at once and stale audio of the
interrupted response is dropped; a ``mark`` after each chunk tells what the callee
really heard.

Endings: the callee hangs up → the agent session is closed at once. The agent
ends the conversation → the last words play out (per marks), then the call is hung
up through the REST API. The agent drops → one reconnect; if that fails the call is
recorded ``agent_failed`` and the callee hears the TwiML's apology (or is put
through to a person with ``CALLBRIDGE_AGENT_FAILURE=transfer``).

The agent's voicemail (``CALLBRIDGE_VOICEMAIL=agent``): a second stream after a
machine's beep opens a fresh session with the voicemail first message (the
first-message override), sends the machine's audio nowhere, and hangs up once the
agent has said its message, every mark has come back and it has been quiet for
:data:`VOICEMAIL_QUIET_S`. If no agent can be had for it, our own message is left.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol

import structlog

from callbridge.domain.call import Call
from callbridge.errors import (
    AuthRejected,
    InvalidTransition,
    ProtocolError,
    ProviderError,
)
from callbridge.media.frames import (
    AgentAudio,
    AgentErrorEvent,
    AgentEvent,
    AgentInterrupted,
    AgentPing,
    AgentResponse,
    AgentResponseCorrected,
    CallerAudio,
    CallerDtmf,
    MarkPlayed,
    StreamStarted,
    StreamStopped,
    ToolCall,
    TwilioEvent,
    UserTranscript,
)
from callbridge.media.transcode import Transcoder, parse_format
from callbridge.media.twilio_stream import TwilioStreamCodec
from callbridge.metrics import FrameTally, Metrics
from callbridge.ports import CallEvent, CallStore, Clock, MediaSocket, TranscriptTurn
from callbridge.services.agent_session import AgentSession
from callbridge.services.bridge_tools import BridgeTools
from callbridge.services.lifecycle import CallLifecycle
from callbridge.services.live_feed import TurnFeed
from callbridge.services.outbound_audio import OutboundAudio
from callbridge.services.turns import TurnTracker
from callbridge.services.writer import BackgroundWriter

_log = structlog.get_logger(__name__)

#: Twilio never sends more than a few hundred bytes; anything this large is an attack.
MAX_STREAM_MESSAGE = 64 * 1024
_ULAW = parse_format("ulaw_8000")
#: Seconds of agent silence, after everything it said was heard, that end its voicemail.
VOICEMAIL_QUIET_S = 1.0


_AGENT_FAILURES = {
    "agent_unreachable": "the agent could not be reached",
    "agent_failed": "the agent dropped and one reconnect failed",
}


class BridgeState(StrEnum):
    """Where one bridge is in its life."""

    WAITING_START = "waiting_start"
    OPENING_AGENT = "opening_agent"
    BRIDGING = "bridging"
    ENDING = "ending"
    ENDED = "ended"


_NEXT = {
    BridgeState.WAITING_START: {BridgeState.OPENING_AGENT, BridgeState.ENDED},
    BridgeState.OPENING_AGENT: {BridgeState.BRIDGING, BridgeState.ENDING, BridgeState.ENDED},
    BridgeState.BRIDGING: {BridgeState.ENDING, BridgeState.ENDED},
    BridgeState.ENDING: {BridgeState.ENDED},
    BridgeState.ENDED: set(),
}


class _Ended(Exception):
    """A pump saw its side end; carries why."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


@dataclass(frozen=True, slots=True)
class BridgeConfig:
    """The bridge's knobs."""

    start_timeout_s: float = 10.0
    stall_timeout_s: float = 20.0
    time_limit_s: float = 600.0
    drain_marks_s: float = 10.0


class CallBridge:
    """Bridges one media stream to one agent session."""

    def __init__(
        self,
        *,
        socket: MediaSocket,
        lifecycle: CallLifecycle,
        store: CallStore,
        open_session: AgentOpener,
        tools_factory: Callable[[Call], BridgeTools],
        metrics: Metrics,
        clock: Clock,
        config: BridgeConfig,
        writer: BackgroundWriter,
        turns: TurnFeed | None = None,
    ) -> None:
        self._socket = socket
        self._writer = writer
        self._turns = turns
        self._tasks: asyncio.TaskGroup | None = None
        self._pumps: list[asyncio.Task[None]] = []
        self._keep: asyncio.Task[None] | None = None
        self._why: str | None = None
        self._lifecycle = lifecycle
        self._store = store
        self._open_session = open_session
        self._tools_factory = tools_factory
        self._tools: BridgeTools | None = None
        self._metrics = metrics
        self._clock = clock
        self._config = config
        self._twilio = TwilioStreamCodec()
        self._tracker = TurnTracker()
        self.state = BridgeState.WAITING_START
        self._session: AgentSession | None = None
        self._to_agent: Transcoder | None = None
        self._to_caller: Transcoder | None = None
        self._started_at = 0.0
        self._first_audio_at: datetime | None = None
        self._reconnecting = False
        self.call: Call | None = None
        self._outbound = OutboundAudio(
            socket=socket,
            codec=self._twilio,
            tracker=self._tracker,
            frames=metrics.frames.labels(direction="to_callee"),
            on_first_frame=self._first_frame,
        )
        self._user_turns: list[TranscriptTurn] = []
        self._voicemail: str | None = None  # the voicemail first message, on that stream
        self._last_agent_audio: float | None = None

    def _call_tools(self) -> BridgeTools:
        """The admitted call's tools (transfer, hang-up, endings); bound in :meth:`run`."""
        assert self._tools is not None
        return self._tools

    def _move(self, target: BridgeState) -> None:
        if target not in _NEXT[self.state]:
            raise InvalidTransition("bridge", self.state.value, target.value)
        _log.debug("bridge_state", previous=self.state.value, state=target.value)
        self.state = target

    async def run(self) -> None:
        """Serve the stream until the call or the agent ends."""
        try:
            started = await self._wait_start()
            if started is None:
                return
            call = await self._lifecycle.admit_stream(
                started.custom_parameters.get("call_id"),
                started.custom_parameters.get("token"),
                started.call_sid,
                started.stream_sid,
            )
        except (AuthRejected, ProtocolError) as exc:
            _log.warning("media_stream_refused", reason=str(exc))
            self._metrics.webhook_rejected("media_stream_start")
            self._move(BridgeState.ENDED)
            await self._socket.close(1008)
            return
        self.call = call
        self._voicemail = self._lifecycle.voicemail_first_message(call)
        self._tools = self._tools_factory(call)
        self._started_at = self._clock.monotonic()
        self._metrics.calls_in_progress.inc()
        why = "unknown"
        try:
            self._move(BridgeState.OPENING_AGENT)
            if not await self._connect_agent(call, first=True):
                why = "agent_unreachable"
                return
            self._move(BridgeState.BRIDGING)
            why = await self._pump()
        finally:
            self._metrics.calls_in_progress.dec()
            await self._finish(call, why)

    async def _wait_start(self) -> StreamStarted | None:
        async with asyncio.timeout(self._config.start_timeout_s):
            while True:
                message = await self._socket.recv()
                if message is None:
                    self._move(BridgeState.ENDED)
                    return None
                if len(message) > MAX_STREAM_MESSAGE:
                    raise ProtocolError("stream message too large")
                for event in self._twilio.decode(message):
                    match event:
                        case StreamStarted():
                            return event
                        case StreamStopped():
                            self._move(BridgeState.ENDED)
                            return None

    async def _connect_agent(self, call: Call, *, first: bool) -> bool:
        started = time.monotonic()
        try:
            if self._voicemail is not None:
                self._session = await self._open_session(
                    call, prewarmed=False, first_message=self._voicemail
                )
            else:
                self._session = await self._open_session(call, prewarmed=first)
        except ProviderError as exc:
            _log.warning("agent_connect_failed", error=exc.message, first=first)
            return False
        self._metrics.agent_connect.observe(time.monotonic() - started)
        ready = self._session.ready
        self._to_agent = Transcoder(_ULAW, parse_format(ready.input_format))
        self._to_caller = Transcoder(parse_format(ready.output_format), _ULAW)
        return True

    async def _pump(self) -> str:
        """Run both pumps; the first to end cancels the other. Returns why it ended.

        Each pump records why it ended itself (:meth:`_ended`) and one bound method
        stops the others: no wrapper coroutine, closure or lambda per call (with the
        reassurance task, which is let go once done, they cost ~1.5 KB per call;
        issue 12's memory).
        """
        assert self.call is not None and self._session is not None
        try:
            async with asyncio.timeout(self._config.time_limit_s), asyncio.TaskGroup() as tg:
                self._tasks = tg  # the live turns are published beside the pumps
                pumps = [tg.create_task(self._caller_pump()), tg.create_task(self._agent_pump())]
                if self._voicemail is not None:
                    pumps.append(tg.create_task(self._voicemail_said()))
                self._pumps = pumps
                # Bookkeeping goes to the background writer: the pumps never wait on it.
                self._lifecycle.stream_started(
                    self.call.id,
                    self._twilio.stream_sid or "",
                    self._session.ready.conversation_id,
                )
                for pump in pumps:
                    pump.add_done_callback(self._stop_pumps)
                if self._session.held:  # words spoken before the stream: see agent_session
                    self._keep = tg.create_task(
                        self._session.reassure_until(lambda: self._tracker.all_heard)
                    )
                    self._keep.add_done_callback(self._kept)
        except TimeoutError:
            self._ended("time_limit")
        return self._why or "ended"

    def _ended(self, why: str) -> None:
        """Record why the bridge ends; the first reason given is the one kept."""
        if self._why is None:
            self._why = why

    def _stop_pumps(self, done: asyncio.Task[None]) -> None:
        """One pump ended: cancel the others and the reassurance."""
        for pump in self._pumps:
            if pump is not done:
                pump.cancel()
        if self._keep is not None:
            self._keep.cancel()

    def _kept(self, _done: asyncio.Task[None]) -> None:
        self._keep = None

    async def _voicemail_said(self) -> None:
        """End the agent's voicemail once it has been said and heard, then hang up."""
        try:
            while True:
                last = self._last_agent_audio
                quiet = last is not None and self._clock.monotonic() - last >= VOICEMAIL_QUIET_S
                if quiet and not self._outbound.pending and self._tracker.all_heard:
                    break
                await asyncio.sleep(0.05)
            assert self.call is not None
            await self._lifecycle.voicemail_left(self.call.id)
            await self._call_tools().hang_up()
        except _Ended as ended:
            self._ended(ended.why)
            return
        self._ended("voicemail_left")

    async def _caller_pump(self) -> None:
        try:
            with self._metrics.frame_tally("to_agent") as tally:
                await self._caller_frames(tally)
        except _Ended as ended:
            self._ended(ended.why)

    async def _caller_frames(self, tally: FrameTally) -> None:
        twilio, recv = self._twilio, self._socket.recv
        while True:
            message = await recv()
            if message is None:
                raise _Ended("callee_closed")
            if len(message) > MAX_STREAM_MESSAGE:
                await self._socket.close(1009)
                raise _Ended("message_too_large")
            # 50 times a second a call: the caller's audio, as its bare payload.
            decoded = twilio.decode_hot(message)
            if isinstance(decoded, str):
                payload = decoded
            else:
                found = await self._caller_events(decoded)
                if found is None:
                    continue
                payload = found
            session = self._session
            if session is None or self._reconnecting or self._voicemail:
                continue  # a machine's greeting is for no agent
            assert self._to_agent is not None
            text = session.codec.user_audio(self._to_agent.convert_b64(payload))
            # No frame is held while the next is awaited (~0.7 KB a call, issue 12's memory).
            message = decoded = payload = ""
            try:
                await session.link.send(text)
            except ProviderError:
                continue  # the agent pump sees the drop and reconnects
            text = ""
            tally.count += 1

    async def _caller_events(self, events: list[TwilioEvent]) -> str | None:
        """Act on a message's events other than audio; returns its audio's payload if any.

        The codec decodes one event per message, so there is at most one payload.
        """
        payload = None
        for event in events:
            match event:
                case CallerAudio():
                    payload = event.payload
                case MarkPlayed(name=name):
                    self._tracker.mark_echoed(name)
                case CallerDtmf(digit=digit) if self._voicemail is None:
                    await self._send_agent(f"Caller pressed keypad key: {digit}", contextual=True)
                case StreamStopped():
                    raise _Ended("callee_hung_up")
        return payload

    async def _send_agent(self, text: str, *, contextual: bool) -> None:
        session = self._session
        if session is None:
            return
        message = session.codec.contextual_update(text) if contextual else text
        try:
            await session.link.send(message)
        except ProviderError:
            return

    async def _agent_pump(self) -> None:
        try:
            await self._agent_messages()
        except _Ended as ended:
            self._ended(ended.why)

    async def _agent_messages(self) -> None:
        while True:
            session = self._session
            assert session is not None
            await self._on_held(session)
            try:
                while True:
                    # The message is passed on, never kept in a local: a local would
                    # hold the last one (an audio chunk: ~2 KB, and as much again for
                    # its decoded audio) while the next is awaited, seconds between
                    # responses (issue 12's memory).
                    await self._agent_message(
                        session,
                        await self._outbound.receive(
                            session.link.recv, self._config.stall_timeout_s
                        ),
                    )
            except (ProviderError, TimeoutError, ProtocolError) as exc:
                _log.warning("agent_dropped", error=str(exc) or type(exc).__name__)
            await self._outbound.flush()  # the tail of what it said before it dropped
            # One reconnect; the caller pump drops audio meanwhile.
            self._reconnecting = True
            await session.close(1011)
            assert self.call is not None
            if not await self._connect_agent(self.call, first=False):
                raise _Ended("agent_failed")
            self._reconnecting = False

    async def _on_held(self, session: AgentSession) -> None:
        """Act on what the agent said before the stream started (its last event is not
        kept in the pump's locals for the rest of the call: often ~2 KB of audio)."""
        for event in session.take_held():
            await self._on_agent(event)

    async def _agent_message(self, session: AgentSession, message: str | bytes | None) -> None:
        """Act on one agent message; ``None``: the agent ended the conversation."""
        if message is None:
            await self._outbound.flush()  # the last words' tail
            raise _Ended(await self._call_tools().agent_ended(self._tracker))
        for event in session.codec.decode(message):
            await self._on_agent(event)

    async def _on_agent(self, event: AgentEvent) -> None:
        session = self._session
        assert session is not None
        match event:
            case AgentAudio():
                if session.codec.is_stale(event):
                    return
                assert self._to_caller is not None
                ulaw = self._to_caller.convert_b64_to_bytes(event.audio)
                await self._outbound.play(ulaw, event.event_id)
                self._last_agent_audio = self._clock.monotonic()
            case AgentInterrupted():
                await self._outbound.interrupt(event.event_id)
            case AgentPing():
                await session.link.send(session.codec.pong(event.event_id))
            case AgentResponse():
                self._tracker.response_text(event.event_id, event.text, self._clock.now())
                self._publish_turn("agent", event.text)
            case AgentResponseCorrected():
                self._tracker.correction(event.event_id, event.corrected)
            case UserTranscript():
                assert self.call is not None
                # Kept in memory and written with the agent's turns: no database on the
                # media path.
                self._user_turns.append(
                    TranscriptTurn(
                        call_id=self.call.id,
                        role="user",
                        text=event.text,
                        at=self._clock.now(),
                        event_id=event.event_id,
                    )
                )
                self._publish_turn("user", event.text)
            case ToolCall():
                await self._outbound.flush()  # a tool may wait for the last words to play
                outcome = await self._call_tools().run(event, session, self._tracker)
                if outcome is not None:
                    raise _Ended(outcome)
            case AgentErrorEvent():
                _log.warning("agent_error", code=event.code, error_type=event.error_type)

    def _publish_turn(self, role: str, text: str) -> None:
        """Tell the operator's followers a turn, in a task beside the pumps (no wait here)."""
        if self._turns is not None and self._tasks is not None and self.call is not None:
            self._tasks.create_task(
                self._turns.publish(self.call.id, role, text, self._clock.now())
            )

    def _first_frame(self) -> None:
        self._metrics.first_agent_audio.observe(self._clock.monotonic() - self._started_at)
        if self._first_audio_at is None:
            self._first_audio_at = self._clock.now()  # written at the end, off the media path

    async def _finish(self, call: Call, why: str) -> None:
        if self.state is not BridgeState.ENDED:
            if self.state is not BridgeState.ENDING:
                self._move(BridgeState.ENDING)
            self._move(BridgeState.ENDED)
        session, self._session = self._session, None
        if session is not None:
            await session.close(1000)
        if why in _AGENT_FAILURES and self._voicemail is not None:
            # No agent for the voicemail: the machine gets our own message instead.
            await self._lifecycle.voicemail_without_agent(call, _AGENT_FAILURES[why])
            await self._socket.close(1000)
        elif why in _AGENT_FAILURES:
            await self._call_tools().agent_failed(call, _AGENT_FAILURES[why])
            await self._socket.close(1000)  # Twilio goes on to the TwiML's apology
        elif why == "time_limit":
            await self._call_tools().hang_up()
            await self._socket.close(1000)
        elif why not in ("callee_hung_up", "callee_closed", "transferred", "voicemail_left"):
            await self._socket.close(1000)
        if not self._tracker.all_heard:
            # Audio still queued at Twilio when the stream ended was never heard.
            self._tracker.cleared(None)
        now = self._clock.now()
        agent_turns = [
            TranscriptTurn(
                call_id=call.id,
                role="agent",
                text=turn.text,
                at=turn.at or now,
                heard_text=turn.heard_text(),
                interrupted=turn.interrupted,
                event_id=turn.event_id,
            )
            for turn in self._tracker.ordered()
        ]
        self._writer.turns(sorted([*self._user_turns, *agent_turns], key=lambda turn: turn.at))
        if self._first_audio_at is not None:
            self._writer.event(
                CallEvent(
                    call_id=call.id,
                    source="bridge",
                    status="first_agent_audio",
                    at=self._first_audio_at,
                )
            )
        self._lifecycle.stream_stopped(call.id, why)
        _log.info("bridge_ended", why=why)
        # The stream is over (its pumps too): waiting here keeps no audio waiting, and
        # the transcript is written by the time Twilio reports the call completed.
        await self._writer.flush()


class AgentOpener(Protocol):
    """Opens (or takes the pre-warmed) agent session for a call."""

    async def __call__(
        self, call: Call, *, prewarmed: bool, first_message: str | None = None
    ) -> AgentSession:
        """The session; ``prewarmed`` says a pre-warmed one may be used, and
        ``first_message`` overrides the configured first message."""
        ...
