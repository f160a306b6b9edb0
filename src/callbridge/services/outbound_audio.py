"""The agent's speech on its way to the callee: fixed 20 ms μ-law frames, marks and ``clear``.

Twilio plays outbound ``media`` of any length (protocols.md §3.3), but security.md
D34 has the bridge send fixed frames of 160 μ-law bytes (20 ms at 8 kHz), as
Twilio itself sends them (§3.2). Each agent ``audio`` chunk, once in μ-law, is cut
by a :class:`~callbridge.media.pacing.FrameSplitter`: its whole frames go out at
once, then the chunk's ``mark``, in one write where the server can
(:meth:`~callbridge.ports.MediaSocket.send_many`). The tracker still counts the
chunk's μ-law bytes, so what the callee heard stays exact to the chunk. The
remainder, under one frame, waits for the next chunk, so no silence is inserted
into continuous speech. When the agent goes quiet, the remainder goes out as one
frame padded with μ-law silence: after :data:`FLUSH_IDLE_S` without an agent
message (:meth:`OutboundAudio.receive`), or at once when the bridge is about to
stop reading the agent (a tool call, the agent's goodbye, a dropped link). An
interruption drops the remainder before ``clear``; at the end of the call it is
simply left unsent.

Waiting for the agent with the short timeout cancels ``recv`` when it expires,
which is safe: :meth:`~callbridge.adapters.elevenlabs.agent_socket.AgentLink.recv`
takes a message off its queue only in the step that returns it, so a cancelled
``recv`` leaves the message for the next one.
"""

from __future__ import annotations

import asyncio
from binascii import b2a_base64
from collections.abc import Awaitable, Callable
from typing import TypeVar

from prometheus_client import Counter

from callbridge.media.pacing import FRAME_BYTES, FrameSplitter
from callbridge.media.twilio_stream import TwilioStreamCodec
from callbridge.ports import MediaSocket
from callbridge.services.turns import TurnTracker

__all__ = ["FLUSH_IDLE_S", "OutboundAudio"]

#: How long a remainder waits for the agent's next message before it goes out padded.
#: Agents stream faster than real time, so inside speech the next chunk comes well
#: before this; three frames' worth keeps the tail of a sentence from being late.
FLUSH_IDLE_S = 0.06

_T = TypeVar("_T")


class OutboundAudio:
    """Frames, marks and ``clear`` toward Twilio, for one stream.

    Args:
        socket: the Twilio side of the stream.
        codec: the stream's codec (its ``media``, ``mark`` and ``clear`` encoders).
        tracker: names the marks and records what was sent and cleared.
        frames: counts the 20 ms frames sent (``callbridge_frames_total``, to the callee).
        on_first_frame: called once, right after the first frame went out.

    Attributes:
        frames_sent: 20 ms frames sent so far, padded ones included.
    """

    def __init__(
        self,
        *,
        socket: MediaSocket,
        codec: TwilioStreamCodec,
        tracker: TurnTracker,
        frames: Counter,
        on_first_frame: Callable[[], None],
    ) -> None:
        self._socket = socket
        self._codec = codec
        self._tracker = tracker
        self._frames = frames
        self._on_first_frame = on_first_frame
        self._splitter = FrameSplitter(FRAME_BYTES)
        self.frames_sent = 0

    @property
    def pending(self) -> bool:
        """Whether a remainder (under one frame) waits to be sent."""
        return self._splitter.pending > 0

    async def play(self, ulaw: bytes, event_id: int) -> None:
        """Send the whole frames ``ulaw`` completes, then its mark; keep the remainder."""
        await self._send(
            self._splitter.push(ulaw),
            self._codec.mark(self._tracker.audio_sent(event_id, len(ulaw))),
        )

    async def flush(self) -> None:
        """Send the remainder as one frame padded with μ-law silence (nothing if none)."""
        if self._splitter.pending:
            await self._send(self._splitter.flush())

    async def interrupt(self, event_id: int | None) -> None:
        """Drop the remainder, send ``clear``, and count what was queued as not heard."""
        self._splitter.clear()
        await self._socket.send(self._codec.clear())
        self._tracker.cleared(event_id)

    async def receive(self, recv: Callable[[], Awaitable[_T]], timeout_s: float) -> _T:
        """Await ``recv()`` for at most ``timeout_s``, flushing the remainder if the agent pauses.

        With a remainder held, ``recv()`` first gets :data:`FLUSH_IDLE_S`; if nothing
        came, the remainder is flushed and ``recv()`` awaited again, up to the same
        overall deadline. ``recv`` must be safe to cancel, and return at once
        (without suspending) when a message is already there, as ``websockets`` does.

        Raises:
            TimeoutError: nothing came within ``timeout_s``.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        if self._splitter.pending:
            try:
                async with asyncio.timeout_at(min(deadline, loop.time() + FLUSH_IDLE_S)):
                    return await recv()
            except TimeoutError:
                pass
            try:
                # After a stalled loop the timer and the next chunk come due together:
                # a message already received still wins (recv does not wait for it).
                async with asyncio.timeout(0):
                    return await recv()
            except TimeoutError:
                await self.flush()
        async with asyncio.timeout_at(deadline):
            return await recv()

    async def _send(self, frames: list[bytes], mark: str | None = None) -> None:
        """``frames`` as ``media`` messages, then ``mark`` if given: one write for them all
        where the server can (:meth:`~callbridge.ports.MediaSocket.send_many`)."""
        media = self._codec.media
        messages = [media(b2a_base64(frame, newline=False).decode("ascii")) for frame in frames]
        if mark is not None:
            messages.append(mark)
        await self._socket.send_many(messages)
        if not frames:
            return
        first = self.frames_sent == 0
        self.frames_sent += len(frames)
        self._frames.inc(len(frames))
        if first:
            self._on_first_frame()
