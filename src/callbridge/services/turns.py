"""What the callee actually heard, turn by turn, from Twilio's mark echoes (pure).

After each chunk of agent audio the bridge sends a ``mark``; Twilio echoes it when
the audio before it has been played — or dropped by a ``clear`` (protocols.md §3.4).
Marks outstanding when we send ``clear`` are therefore remembered as *cleared*, and
their echoes do not count as heard. Each agent turn keeps its text, the bytes sent
and the bytes heard, so the stored transcript is honest about cut-off speech.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(slots=True)
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
    """Marks out, echoes in, and the turns they belong to.

    Outstanding marks are one list in the order sent. A ``clear`` leaves every one of
    them unheard and later marks are sent after it, so the cleared marks are always
    the list's first ``_cleared`` entries: no set of names is needed (two sets and a
    deque cost ~2 KB per call, issue 12's memory).
    """

    turns: dict[int, AgentTurn] = field(default_factory=dict)
    #: (mark name, event id, μ-law bytes) of each mark not yet echoed, in order sent
    _outstanding: list[tuple[str, int, int]] = field(default_factory=list)
    #: how many of the first outstanding marks were cleared (their audio not heard)
    _cleared: int = 0
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
        return name

    def mark_echoed(self, name: str) -> None:
        """Twilio echoed ``name``: that audio was heard, unless it was cleared.

        A name we never sent (or already settled) changes nothing.
        """
        outstanding = self._outstanding
        at = next((i for i, (sent, _, _) in enumerate(outstanding) if sent == name), None)
        if at is None:
            return
        if at < self._cleared:
            del outstanding[at]  # cleared before it played: not heard
            self._cleared -= 1
            return
        # Marks come back in order: every earlier one was played too, but for the
        # cleared ones before them, which were not heard.
        for _, event_id, size in outstanding[self._cleared : at + 1]:
            self._turn(event_id).bytes_heard += size
        del outstanding[: at + 1]
        self._cleared = 0

    def cleared(self, event_id: int | None) -> None:
        """We sent ``clear``: outstanding audio will not be heard."""
        for _, turn_id, _ in self._outstanding:
            self._turn(turn_id).interrupted = True
        self._cleared = len(self._outstanding)
        if event_id is not None and event_id in self.turns:
            self.turns[event_id].interrupted = True

    @property
    def all_heard(self) -> bool:
        """Whether every mark sent has come back (the callee heard everything sent)."""
        return not self._outstanding

    def ordered(self) -> list[AgentTurn]:
        """The turns with text, in event order."""
        return [t for _, t in sorted(self.turns.items()) if t.text or t.bytes_sent]
