"""``callbridge call --self-test``: one real call to the owner's phone, stage by stage.

:func:`place_self_test` places it through the same :class:`PlacingService` as a
visitor's call, so the abuse policy, the quotas and the kill switch all apply; the call
is recorded with ``is_test`` so the call list marks it. :func:`stages` reads the stage
times off the call's timeline for the CLI's report.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from callbridge.errors import Conflict
from callbridge.services.placing import CallRequest, PlacedCall, PlacingService

__all__ = ["SELF_TEST_REASON", "STAGES", "Stage", "place_self_test", "stages"]

SELF_TEST_REASON = "callbridge self-test"

#: Each stage's name and the timeline statuses that mark it (the first one found wins).
STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("create", ("queued",)),
    ("ringing", ("ringing",)),
    ("answer", ("in-progress", "answered")),
    ("consent", ("consent_given", "consent_declined")),
    ("stream start", ("stream_started",)),
    ("first agent audio", ("first_agent_audio",)),
    ("hang-up", ("completed", "busy", "no-answer", "failed", "canceled", "stream_stopped")),
)


class NoTarget(Conflict):
    """The self-test needs ``TARGET_PHONE_NUMBER``."""

    code = "no_target_number"


async def place_self_test(placing: PlacingService, target_number: str | None) -> PlacedCall:
    """Place the self-test call to ``target_number``, marked as a test.

    Raises:
        NoTarget: ``TARGET_PHONE_NUMBER`` is not set.
        PolicyRejected, InvalidNumber, CallFailed: as for any call.
    """
    if not target_number:
        raise NoTarget("TARGET_PHONE_NUMBER is not set: the self-test calls the owner's phone.")
    return await placing.request_call(
        CallRequest(to_number=target_number, reason=SELF_TEST_REASON, test=True)
    )


@dataclass(frozen=True, slots=True)
class Stage:
    """One stage: its name, when it happened (ISO 8601) and what marked it, or None."""

    name: str
    at: str | None
    status: str | None


def stages(timeline: Sequence[Mapping[str, Any]]) -> list[Stage]:
    """The stages of a call from its timeline (``event_view`` dicts, oldest first)."""
    found: list[Stage] = []
    for name, statuses in STAGES:
        hit = next((e for s in statuses for e in timeline if e.get("status") == s), None)
        found.append(
            Stage(name, str(hit["at"]) if hit else None, str(hit["status"]) if hit else None)
        )
    return found
