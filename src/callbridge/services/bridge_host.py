"""Runs a bridge per media stream and pre-warms agent sessions; the bridge's composition.

The web layer hands each accepted media-stream socket to :meth:`BridgeHost.serve`.
:class:`AgentSessions` opens the agent sessions: the lifecycle tells it (as its
:class:`~callbridge.ports.CallAnsweredObserver`) when the TwiML that connects the
stream is served, so the agent is ready before Twilio opens the stream, and the host
takes the pre-warmed session from it. It is built before both, so neither the lifecycle
nor the host needs the other to exist first.

While it bridges streams, the host renews a heartbeat for each of their calls
(:class:`~callbridge.ports.Heartbeats`) every ``heartbeat_s``; the beat lasts three
periods, so a process that dies (``kill -9``, a lost machine) stops vouching for its
calls within ``3 × heartbeat_s`` and the reconciler fetches them from Twilio.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import structlog

from callbridge.domain.call import Call
from callbridge.domain.text import strip_controls
from callbridge.metrics import Metrics
from callbridge.ports import (
    AgentConnector,
    CallStore,
    Clock,
    EventBus,
    Heartbeats,
    MediaSocket,
    TelephonyProvider,
    TwimlWriter,
)
from callbridge.services.agent_session import AgentSession, PrewarmPool
from callbridge.services.bridge import BridgeConfig, CallBridge
from callbridge.services.bridge_tools import BridgeTools
from callbridge.services.lifecycle import CallLifecycle
from callbridge.services.live_feed import TurnFeed
from callbridge.services.writer import BackgroundWriter
from callbridge.tasks import cancel_and_wait, run_forever

_log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """How agent sessions are opened."""

    agent_connect_timeout_s: float
    first_message: str | None
    prewarm: bool


@dataclass(frozen=True, slots=True)
class HostConfig:
    """Settings of the bridge host."""

    target_number: str | None
    transfer_on_failure: bool
    bridge: BridgeConfig
    heartbeat_s: float = 10.0


def dynamic_variables(call: Call) -> dict[str, str]:
    """The web chat's context for the agent's ``{{variables}}`` (data, never instructions)."""
    ctx = call.context
    return {
        # Cleaned again: rows stored before callbridge cleaned them on the way in.
        "visitor_name": strip_controls(ctx.visitor_name or ""),
        "reason": strip_controls(ctx.reason or ""),
        "web_chat_summary": strip_controls(ctx.summary or ""),
        "web_conversation_id": ctx.conversation_id or "",
        "call_id": call.id,
    }


class AgentSessions:
    """Opens agent sessions, pre-warmed when a call is answered (if ``prewarm`` is on)."""

    def __init__(self, *, config: SessionConfig, connector: AgentConnector) -> None:
        self._config = config
        self._connector = connector
        self._pool = PrewarmPool()

    async def aclose(self) -> None:
        """Close pre-warmed sessions that no stream claimed."""
        await self._pool.aclose()

    async def _open(self, call: Call, first_message: str | None = None) -> AgentSession:
        return await AgentSession.open(
            self._connector,
            dynamic_variables(call),
            first_message=first_message or self._config.first_message,
            deadline_s=self._config.agent_connect_timeout_s,
        )

    async def call_answered(self, call: Call) -> None:
        """Start opening the agent session for ``call`` (does not wait for it)."""
        if not self._config.prewarm:
            return

        async def opener() -> AgentSession:
            session = await self._open(call)
            session.keep_warm()
            return session

        self._pool.start(call.id, opener())

    async def open_for(
        self, call: Call, *, prewarmed: bool, first_message: str | None = None
    ) -> AgentSession:
        """The pre-warmed session if there is a good one, else a fresh one (with
        ``first_message`` instead of the configured one, if given)."""
        if prewarmed and first_message is None:
            session = await self._pool.take(call.id)
            if session is not None:
                return session
        return await self._open(call, first_message)

    async def machine_answered(self, call: Call) -> None:
        """A machine took ``call``: close its pre-warmed session, if this process holds one."""
        if await self._pool.discard(call.id):
            _log.info("prewarmed_session_closed", reason="machine")


class BridgeHost:
    """Starts a :class:`CallBridge` per stream, with its session from :class:`AgentSessions`."""

    def __init__(
        self,
        *,
        config: HostConfig,
        sessions: AgentSessions,
        lifecycle: CallLifecycle,
        store: CallStore,
        telephony: TelephonyProvider,
        twiml: TwimlWriter,
        events: EventBus,
        metrics: Metrics,
        clock: Clock,
        writer: BackgroundWriter,
        heartbeats: Heartbeats | None = None,
        turns: TurnFeed | None = None,
    ) -> None:
        self._config = config
        self._writer = writer
        self._heartbeats = heartbeats
        self._beating: asyncio.Task[None] | None = None
        self._turns = turns
        self._sessions = sessions
        self._lifecycle = lifecycle
        self._store = store
        self._telephony = telephony
        self._twiml = twiml
        self._events = events
        self._metrics = metrics
        self._clock = clock
        self._bridges: set[CallBridge] = set()
        self.active = 0

    async def start(self) -> None:
        """Start renewing the heartbeats of the bridged calls (sessions open on demand)."""
        if self._heartbeats is not None and self._beating is None:
            self._beating = asyncio.get_running_loop().create_task(
                run_forever(
                    "stream_heartbeat",
                    self.beat,
                    interval_s=self._config.heartbeat_s,
                    backoff_cap_s=self._config.heartbeat_s,  # keep trying at the same pace
                    errors=self._metrics,
                ),
                name="callbridge-stream-heartbeat",
            )

    async def beat(self) -> None:
        """Vouch for every call this process bridges, for three heartbeat periods.

        Raises:
            StoreError: the heartbeats' store failed.
        """
        calls = self.bridged_call_ids()
        if self._heartbeats is not None and calls:
            await self._heartbeats.beat(calls, ttl_s=3 * self._config.heartbeat_s)

    async def aclose(self) -> None:
        """Stop the heartbeats; close pre-warmed sessions that no stream claimed."""
        beating, self._beating = self._beating, None
        await cancel_and_wait(beating)
        await self._sessions.aclose()

    def bridged_call_ids(self) -> set[str]:
        """The calls whose media this process is bridging right now."""
        return {bridge.call.id for bridge in self._bridges if bridge.call is not None}

    async def serve(self, socket: MediaSocket) -> None:
        """Bridge one accepted media stream until it ends."""
        self.active += 1
        bridge: CallBridge | None = None
        try:
            bridge = CallBridge(
                socket=socket,
                lifecycle=self._lifecycle,
                store=self._store,
                open_session=self._sessions.open_for,
                tools_factory=self._tools_for,
                metrics=self._metrics,
                clock=self._clock,
                config=self._config.bridge,
                writer=self._writer,
                turns=self._turns,
            )
            self._bridges.add(bridge)
            await bridge.run()
        finally:
            self.active -= 1
            if bridge is not None:
                self._bridges.discard(bridge)

    def _tools_for(self, call: Call) -> BridgeTools:
        return BridgeTools(
            call=call,
            telephony=self._telephony,
            store=self._store,
            twiml=self._twiml,
            events=self._events,
            clock=self._clock,
            target_number=self._config.target_number,
            transfer_on_failure=self._config.transfer_on_failure,
            drain_marks_s=self._config.bridge.drain_marks_s,
            writer=self._writer,
        )
