"""Small helpers for the background tasks callbridge owns."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import structlog

from callbridge.errors import CallbridgeError

_log = structlog.get_logger(__name__)


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


class ErrorCounter(Protocol):
    """Where a job's failures are counted (``Metrics.job_failed``)."""

    def job_failed(self, job: str) -> None:
        """Count one failed run of ``job``."""
        ...


def backoff_delay(interval_s: float, failures: int, cap_s: float) -> float:
    """Seconds to wait after ``failures`` failed runs in a row (0: the run succeeded).

    The interval doubles with each failure in a row and never exceeds ``cap_s``; a job
    whose interval is longer than the cap (the daily purge) retries after ``cap_s``.
    """
    if failures <= 0:
        return interval_s
    return min(cap_s, interval_s * float(2 ** min(failures - 1, 32)))


async def run_forever(
    job: str,
    once: Callable[[], Awaitable[object]],
    *,
    interval_s: float,
    backoff_cap_s: float = 300.0,
    first_delay_s: float = 0.0,
    errors: ErrorCounter | None = None,
) -> None:
    """Run ``once`` every ``interval_s`` until cancelled, whatever it raises.

    A background job is a safety net (the reconcilers, the retention purge): dying
    on the first outage would leave nobody to clean up after it. So every exception
    is logged with its type, counted (``callbridge_job_errors_total{job}``), and the
    next run waits longer, doubling up to ``backoff_cap_s``; the first success
    resets the wait. Only cancellation ends the loop.

    The log line carries the message of our own errors (one sentence, written to be
    safe to log) but only the *type* of anything else: a driver's message may hold
    SQL parameters, so personal data.

    A cancellation that arrives while ``once`` runs ends the loop even when a library
    under ``once`` swallows it, or turns it into an ordinary error (Python 3.11's
    ``asyncio.wait_for`` does when the awaited future is already done, gh-86296; SQL
    and Redis clients clean up on cancellation): the task still counts the request
    (:meth:`asyncio.Task.cancelling`), and the loop checks it after each run instead
    of sleeping on as if nothing had been asked, which left shutdown waiting forever.
    """
    failures = 0
    delay = first_delay_s
    while True:
        if delay > 0:
            await asyncio.sleep(delay)
        try:
            await once()
        except Exception as exc:  # the point: the loop outlives every error
            _raise_if_cancelled(exc)
            failures += 1
            message = exc.message if isinstance(exc, CallbridgeError) else None
            _log.warning(
                "job_failed",
                job=job,
                error_type=type(exc).__name__,
                error=message,
                failures=failures,
            )
            if errors is not None:
                errors.job_failed(job)
        else:
            _raise_if_cancelled(None)
            if failures:
                _log.info("job_recovered", job=job, after_failures=failures)
            failures = 0
        delay = backoff_delay(interval_s, failures, backoff_cap_s)


def _raise_if_cancelled(cause: BaseException | None) -> None:
    """Raise :class:`asyncio.CancelledError` if this task was asked to stop and the
    request has not been honoured (something under it swallowed the cancellation)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError from cause
