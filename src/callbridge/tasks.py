"""Small helpers for the background tasks callbridge owns."""

from __future__ import annotations

import asyncio
from typing import Any


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> BaseException | None:
    """Cancel ``task`` (if any) and wait until it has finished unwinding.

    Its cancellation is swallowed, and an exception it ended with is returned (so it
    is never reported as unretrieved); the caller's own cancellation still propagates.
    """
    if task is None:
        return None
    if not task.done():
        task.cancel()
        await asyncio.wait({task})
    return None if task.cancelled() else task.exception()
