"""What the callee actually heard, turn by turn, from Twilio's mark echoes (pure).

After each chunk of agent audio the bridge sends a ``mark``; Twilio echoes it when
the audio before it has been played — or dropped by a ``clear`` (protocols.md §3.4).
Marks outstanding when we send ``clear`` are therefore remembered as *cleared*, and
their echoes do not count as heard. Each agent turn keeps its text, the bytes sent
and the bytes heard, so the stored transcript is honest about cut-off speech.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import datetime


@dataclass
class AgentTurn:
    """One agent response (one ``event_id``)."""

    event_id: int
    text: str = ""
    corrected: str | None = None
    bytes_sent: int = 0
    bytes_heard: int = 0
    interrupted: bool = False
    at: datetime | None = None

    def heard_text(self) -> str:
        """The part of the text the callee heard (the agent's correction when it sent one)."""
        if self.corrected is not None:
            return self.corrected
        if not self.interrupted or self.bytes_sent == 0:
            return self.text
        words = self.text.split()
        share = self.bytes_heard / self.bytes_sent
        return " ".join(words[: round(len(words) * share)])


@dataclass
class TurnTracker:
    """Marks out, echoes in, and the turns they belong to."""

    turns: dict[int, AgentTurn] = field(default_factory=dict)
    _outstanding: deque[tuple[str, int, int]] = field(default_factory=deque)
    _cleared: set[str] = field(default_factory=set)
    _pending: set[str] = field(default_factory=set)
    _counter: int = 0

    def _turn(self, event_id: int) -> AgentTurn:
        turn = self.turns.get(event_id)
        if turn is None:
            turn = self.turns[event_id] = AgentTurn(event_id)
        return turn

    def response_text(self, event_id: int | None, text: str, at: datetime | None = None) -> None:
        """The agent's text for a response (``agent_response``), and when it began."""
        if event_id is not None:
            turn = self._turn(event_id)
            turn.text = text
            turn.at = turn.at or at

    def correction(self, event_id: int | None, corrected: str) -> None:
        """The agent's own account of what was heard (``agent_response_correction``)."""
        if event_id is not None:
            turn = self._turn(event_id)
            turn.corrected = corrected
            turn.interrupted = True

    def audio_sent(self, event_id: int, size: int) -> str:
        """Record ``size`` bytes of μ-law sent for ``event_id``; return the mark to send."""
        self._turn(event_id).bytes_sent += size
        self._counter += 1
        name = f"a{event_id}.{self._counter}"
        self._outstanding.append((name, event_id, size))
        self._pending.add(name)
        return name

    def mark_echoed(self, name: str) -> None:
        """Twilio echoed ``name``: that audio was heard, unless it was cleared.

        A name we never sent (or already settled) changes nothing.
        """
        if name not in self._pending:
            return
        self._pending.discard(name)
        if name in self._cleared:
            self._cleared.discard(name)
            self._drop(name)
            return
        while self._outstanding:
            sent, event_id, size = self._outstanding.popleft()
            self._pending.discard(sent)
            if sent in self._cleared:
                self._cleared.discard(sent)  # cleared before it played: not heard
            else:
                self._turn(event_id).bytes_heard += size
            if sent == name:
                return

    def _drop(self, name: str) -> None:
        for i, (sent, _, _) in enumerate(self._outstanding):
            if sent == name:
                del self._outstanding[i]
                return

    def cleared(self, event_id: int | None) -> None:
        """We sent ``clear``: outstanding audio will not be heard."""
        for name, turn_id, _ in self._outstanding:
            self._cleared.add(name)
            self._turn(turn_id).interrupted = True
        if event_id is not None and event_id in self.turns:
            self.turns[event_id].interrupted = True

    @property
    def all_heard(self) -> bool:
        """Whether every mark sent has come back (the callee heard everything sent)."""
        return not self._outstanding

    def ordered(self) -> list[AgentTurn]:
        """The turns with text, in event order."""
        return [t for _, t in sorted(self.turns.items()) if t.text or t.bytes_sent]
