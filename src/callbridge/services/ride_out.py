"""Riding out a short store outage inside one request, for the webhooks Twilio retries.

Twilio re-sends a status callback that met a 5xx only a few times, all within 15 s
(the connection overrides on its URL, see
:func:`~callbridge.services.placing.status_callback_url`), and sends the retries as
soon as the previous attempt fails: Twilio documents no pause between them. A
PostgreSQL restart takes a few seconds, so answering each attempt's
:class:`~callbridge.errors.Unavailable` at once would spend every retry in the
first second. :func:`ride_out` instead tries the operation again for a few seconds
(within Twilio's read timeout) before giving up, so the retries span the outage.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog

from callbridge.errors import Unavailable

_log = structlog.get_logger(__name__)

T = TypeVar("T")

_FIRST_PAUSE_S = 0.2
_MAX_PAUSE_S = 1.0


async def ride_out(operation: Callable[[], Awaitable[T]], *, budget_s: float) -> T:
    """Run ``operation``; while a store is unreachable, try again until ``budget_s`` is spent.

    The operation must be safe to repeat (a status callback is: it is idempotent).

    Raises:
        Unavailable: the store was still unreachable when the budget ran out.
    """
    deadline = time.monotonic() + budget_s
    pause = _FIRST_PAUSE_S
    attempt = 1
    while True:
        try:
            return await operation()
        except Unavailable as exc:
            left = deadline - time.monotonic()
            if left <= pause:
                _log.warning(
                    "store_outage_outlasted_request",
                    dependency=exc.dependency,
                    attempts=attempt,
                )
                raise
        await asyncio.sleep(pause)
        pause = min(pause * 2, _MAX_PAUSE_S)
        attempt += 1
