"""Agent sessions: open, initialise, and pre-warm them while the callee hears the greeting.

A session is opened and sent ``conversation_initiation_client_data`` (the web
chat's context as dynamic variables); it is ready once
``conversation_initiation_metadata`` arrives. Pre-warming does this when Twilio
fetches the TwiML that connects the stream, and keeps reading (answering pings,
holding the first words) until the stream claims it, so the agent's first audio
goes out the moment the stream starts. A pre-warmed session that is not claimed
in time is closed.

The agent believes it spoke those first words when it sent them, so its turn
timeout (7 s by default, protocols.md §4.7) would start while the callee has not
heard them yet, and it would ask "are you still there?" right after its own
greeting. While it is held, and until the callee has heard what was held, the
session sends ``user_activity`` every :data:`USER_ACTIVITY_EVERY_S` seconds, which
resets that timer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

import structlog

from callbridge.errors import ErrorCategory, ProtocolError, ProviderError
from callbridge.media.agent_protocol import AgentCodec, DynamicValue
from callbridge.media.frames import AgentEvent, AgentPing, AgentReady
from callbridge.ports import AgentConnector, AgentLink
from callbridge.tasks import cancel_and_wait

_log = structlog.get_logger(__name__)

#: At most this many agent messages are held for a stream that has not started yet.
MAX_HELD_EVENTS = 2000
#: How often a held session tells the agent the user is still there. Well under the
#: 7 s default turn timeout, and under the 2 s an owner may set for a snappy agent: a
#: period equal to the timeout loses the race to the agent's timer whenever a send is
#: a little late. One small message a second, only while words are held.
USER_ACTIVITY_EVERY_S = 1.0


class AgentSession:
    """An initialised agent conversation: its socket, its codec and events not yet handled."""

    def __init__(self, link: AgentLink, codec: AgentCodec, ready: AgentReady) -> None:
        self.link = link
        self.codec = codec
        self.ready = ready
        # A list, not a deque (whose first block alone is 528 bytes): it is emptied
        # once, when the stream claims the session, and kept for the whole call.
        self.held: list[AgentEvent] = []
        self._keeper: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls,
        connector: AgentConnector,
        dynamic_variables: Mapping[str, DynamicValue],
        *,
        first_message: str | None,
        deadline_s: float,
    ) -> AgentSession:
        """Open, initialise, and wait for the metadata.

        Raises:
            ProviderError: not connected and initialised within ``deadline_s``.
        """
        try:
            async with asyncio.timeout(deadline_s):
                link = await connector.open()
                codec = AgentCodec()
                held: list[AgentEvent] = []
                try:
                    await link.send(codec.initiation(dynamic_variables, first_message))
                    while True:
                        message = await link.recv()
                        if message is None:
                            raise ProviderError(
                                "the agent closed before it was ready",
                                provider="elevenlabs",
                                category=ErrorCategory.SERVER,
                            )
                        for event in codec.decode(message):
                            if isinstance(event, AgentReady):
                                session = cls(link, codec, event)
                                session.held = held
                                return session
                            held.append(event)
                except BaseException:
                    await link.close(1011)
                    raise
        except TimeoutError as exc:
            raise ProviderError(
                "the agent was not ready in time",
                provider="elevenlabs",
                category=ErrorCategory.TIMEOUT,
            ) from exc
        except ProtocolError as exc:
            raise ProviderError(
                f"the agent spoke an unexpected protocol: {exc}",
                provider="elevenlabs",
                category=ErrorCategory.SERVER,
            ) from exc

    def take_held(self) -> list[AgentEvent]:
        """The events held for a stream that had not started yet, in order; none are kept."""
        held, self.held = self.held, []
        return held

    def keep_warm(self) -> None:
        """Read and hold messages (answering pings) until :meth:`claim`."""
        self._keeper = asyncio.get_running_loop().create_task(self._keep())

    async def _keep(self) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            if loop.time() >= due:
                await self.link.send(self.codec.user_activity())
                due = loop.time() + USER_ACTIVITY_EVERY_S
            try:
                # Cancelling AgentLink.recv is safe: no message is lost.
                async with asyncio.timeout_at(due):
                    message = await self.link.recv()
            except TimeoutError:
                continue
            if message is None:
                return
            for event in self.codec.decode(message):
                if isinstance(event, AgentPing):
                    await self.link.send(self.codec.pong(event.event_id))
                elif len(self.held) < MAX_HELD_EVENTS:
                    self.held.append(event)

    async def claim(self) -> AgentSession:
        """Stop holding; the caller reads the link from now on.

        Raises:
            ProviderError: the session died while it was being kept warm.
        """
        keeper, self._keeper = self._keeper, None
        if keeper is not None:
            if keeper.done():
                exc = keeper.exception()
                raise ProviderError(
                    f"the pre-warmed agent session ended: {exc or 'closed'}",
                    provider="elevenlabs",
                    category=ErrorCategory.NETWORK,
                )
            await cancel_and_wait(keeper)
        return self

    async def reassure_until(self, heard: Callable[[], bool]) -> None:
        """Send ``user_activity`` now and every :data:`USER_ACTIVITY_EVERY_S` seconds until
        ``heard()`` (the callee has heard the words held for the stream)."""
        while True:
            try:
                await self.link.send(self.codec.user_activity())
            except ProviderError:
                return  # the link dropped: the agent pump reconnects or ends the call
            await asyncio.sleep(USER_ACTIVITY_EVERY_S)
            if heard():
                return

    async def close(self, code: int = 1000) -> None:
        """Close the session (and stop holding)."""
        keeper, self._keeper = self._keeper, None
        await cancel_and_wait(keeper)  # a keeper that died of a dropped link is expected
        await self.link.close(code)


class PrewarmPool:
    """Pre-warmed sessions by call id, each closed if not claimed within ``ttl_s``.

    The deadline is a timer handle, cancelled when the session is taken: a sleeping
    task per call would keep itself, its coroutine and the finished opening task
    (~1.5 KB) for ``ttl_s`` after the stream claimed the session (issue 12's memory).
    """

    def __init__(self, ttl_s: float = 60.0) -> None:
        self._ttl_s = ttl_s
        self._pending: dict[str, tuple[asyncio.Task[AgentSession], asyncio.TimerHandle]] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def start(self, call_id: str, opener: Coroutine[Any, Any, AgentSession]) -> None:
        """Open the session for ``call_id`` in the background and hold it."""
        if call_id in self._pending:
            opener.close()
            return
        loop = asyncio.get_running_loop()
        task = loop.create_task(opener)
        deadline = loop.call_later(self._ttl_s, self._expire, call_id, task)
        self._pending[call_id] = (task, deadline)

    def _expire(self, call_id: str, task: asyncio.Task[AgentSession]) -> None:
        entry = self._pending.get(call_id)
        if entry is None or entry[0] is not task:
            return
        del self._pending[call_id]
        closing = asyncio.get_running_loop().create_task(self._close_expired(call_id, task))
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)

    @staticmethod
    async def _close_expired(call_id: str, task: asyncio.Task[AgentSession]) -> None:
        await _close_quietly(task)
        _log.info("prewarmed_session_expired", call_id=call_id)

    def _pop(self, call_id: str) -> asyncio.Task[AgentSession] | None:
        entry = self._pending.pop(call_id, None)
        if entry is None:
            return None
        task, deadline = entry
        deadline.cancel()
        return task

    async def take(self, call_id: str) -> AgentSession | None:
        """The pre-warmed session for ``call_id``, or None (none started, or it failed fast).

        Raises:
            ProviderError: the pre-warmed attempt timed out (the budget is spent).
        """
        task = self._pop(call_id)
        if task is None:
            return None
        try:
            session = await task
            return await session.claim()
        except ProviderError as exc:
            _log.warning("prewarmed_session_unusable", error=exc.message)
            if exc.category is ErrorCategory.TIMEOUT:
                raise  # it already spent the connect budget: no second wait
            return None

    async def discard(self, call_id: str) -> bool:
        """Close the session held for ``call_id`` (or stop its opening); True if there was one."""
        task = self._pop(call_id)
        if task is None:
            return False
        await _close_quietly(task)
        return True

    async def aclose(self) -> None:
        """Close every session still held."""
        for closing in list(self._closing):
            closing.cancel()
        pending, self._pending = self._pending, {}
        for task, deadline in pending.values():
            deadline.cancel()
            await _close_quietly(task)


async def _close_quietly(task: asyncio.Task[AgentSession]) -> None:
    if await cancel_and_wait(task) is None and not task.cancelled():
        await task.result().close()  # it finished opening before the cancel took
