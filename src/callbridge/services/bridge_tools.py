"""What the bridge does for the agent and when the agent goes away, for one call.

Client tools over the agent socket (``client_tool_call`` → ``client_tool_result``,
protocols.md §4.3/4.8): ``end_call`` lets the last words play out (per marks) and
hangs up through the REST API; ``transfer_to_human`` says a line and redirects the
call to ``<Dial>`` ``TARGET_PHONE_NUMBER`` (the only number a tool can reach); any
other tool gets an error result, never silence.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import structlog

from callbridge.domain.call import Call, CallStatus, transition
from callbridge.domain.phrases import TRANSFER
from callbridge.errors import InvalidTransition, ProviderError
from callbridge.media.frames import ToolCall
from callbridge.ports import (
    CallEvent,
    CallStore,
    Clock,
    EventBus,
    StatusUpdate,
    TelephonyProvider,
    TwimlWriter,
)
from callbridge.services.agent_session import AgentSession
from callbridge.services.lifecycle import public_event
from callbridge.services.turns import TurnTracker
from callbridge.services.writer import BackgroundWriter

_log = structlog.get_logger(__name__)


class BridgeTools:
    """Tool calls and endings for one bridged call."""

    def __init__(
        self,
        *,
        call: Call,
        telephony: TelephonyProvider,
        store: CallStore,
        twiml: TwimlWriter,
        events: EventBus,
        clock: Clock,
        target_number: str | None,
        transfer_on_failure: bool,
        writer: BackgroundWriter,
        drain_marks_s: float = 10.0,
    ) -> None:
        self._call = call
        self._writer = writer
        self._telephony = telephony
        self._store = store
        self._twiml = twiml
        self._events = events
        self._clock = clock
        self._target = target_number
        self._transfer_on_failure = transfer_on_failure
        self._drain_marks_s = drain_marks_s

    async def run(self, tool: ToolCall, session: AgentSession, tracker: TurnTracker) -> str | None:
        """Run one tool call; return why the bridge should end, or None to carry on."""
        self._record("tool_call", {"tool": tool.tool_name[:64]})
        if tool.tool_name == "end_call":
            await self._result(session, tool, "The call will end now.", error=False)
            await self._played_out(tracker)
            await self.hang_up()
            return "agent_ended_call"
        if tool.tool_name == "transfer_to_human":
            if not self._target:
                await self._result(
                    session, tool, "No person is available to take the call.", error=True
                )
                return None
            await self._result(session, tool, "Transferring the caller to a person.", error=False)
            await self._played_out(tracker)
            await self._transfer()
            return "transferred"
        await self._result(
            session,
            tool,
            f"Unknown tool {tool.tool_name[:64]!r}: this client cannot run it.",
            error=True,
        )
        return None

    async def agent_ended(self, tracker: TurnTracker) -> str:
        """The agent closed the conversation normally: let it finish, then hang up."""
        await self._played_out(tracker)
        await self.hang_up()
        return "agent_ended"

    async def agent_failed(self, call: Call, reason: str) -> None:
        """Record ``agent_failed``; with the transfer policy, put the callee through to a person."""
        current = await self._store.get_call(call.id) or call
        try:
            status: CallStatus | None = transition(current.status, CallStatus.AGENT_FAILED)
        except InvalidTransition:
            status = None
        if status is not None:
            updated = await self._store.update_call(
                call.id,
                StatusUpdate(
                    status=status,
                    failure_code="agent_failed",
                    failure_reason=f"Our assistant was not available. ({reason})",
                ),
            )
            await self._events.publish(call.id, public_event(updated, self._clock.now()))
        self._record("agent_failed", {"reason": reason})
        _log.warning("agent_failed", reason=reason)
        if self._transfer_on_failure and self._target:
            await self._transfer()

    async def _transfer(self) -> None:
        assert self._target is not None
        self._record("transfer", {})
        try:
            await self._telephony.redirect(
                self._call.call_sid or "",
                twiml=self._twiml.dial(self._target, greet=False, line=TRANSFER),
            )
        except ProviderError as exc:
            _log.error("transfer_failed", error=exc.message)

    async def hang_up(self) -> None:
        """End the call through the REST API (a failure is logged, not raised)."""
        try:
            await self._telephony.hang_up(self._call.call_sid or "")
        except ProviderError as exc:
            _log.error("hang_up_failed", error=exc.message)

    async def _played_out(self, tracker: TurnTracker) -> None:
        """Wait until every mark sent has come back (the last words were heard)."""
        deadline = self._clock.monotonic() + self._drain_marks_s
        # Echoes arrive on the caller pump's task; a 20 ms poll keeps the tracker pure.
        while not tracker.all_heard and self._clock.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.02)

    @staticmethod
    async def _result(session: AgentSession, tool: ToolCall, text: str, *, error: bool) -> None:
        try:
            await session.link.send(session.codec.tool_result(tool.tool_call_id, text, error))
        except ProviderError:
            return

    def _record(self, status: str, detail: Mapping[str, Any]) -> None:
        # Queued: a tool call arrives on the agent pump, which must not wait on the
        # database (nor be cancelled in the middle of a transaction).
        self._writer.event(
            CallEvent(
                call_id=self._call.id,
                source="bridge",
                status=status,
                at=self._clock.now(),
                detail=detail,
            ),
            critical=True,
        )
