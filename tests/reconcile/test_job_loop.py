"""A background job's loop outlives every error it meets, and only cancellation stops it."""

from __future__ import annotations

import asyncio
from collections import Counter

from callbridge.errors import StoreError
from callbridge.tasks import backoff_delay, cancel_and_wait, run_forever
from tests.support.wait import wait_until


class _Errors:
    def __init__(self) -> None:
        self.counted: Counter[str] = Counter()

    def job_failed(self, job: str) -> None:
        self.counted[job] += 1


async def test_the_loop_survives_any_exception_and_counts_it() -> None:
    """Errors of every kind (ours, a driver's, a bug's) are counted and the job runs on."""
    failures: list[BaseException] = [
        StoreError("the database failed: OperationalError"),
        ConnectionRefusedError(111, "refused"),
        KeyError("bug"),
    ]
    runs: list[int] = []

    async def once() -> None:
        runs.append(len(runs))
        if failures:
            raise failures.pop(0)

    errors = _Errors()
    task = asyncio.create_task(
        run_forever("job", once, interval_s=0.001, backoff_cap_s=0.01, errors=errors)
    )
    try:
        await wait_until(lambda: len(runs) >= 6, timeout=10)
        assert not task.done()
        assert errors.counted["job"] == 3
    finally:
        assert await cancel_and_wait(task) is None
    assert task.cancelled()


def test_the_wait_doubles_after_each_failure_up_to_the_cap() -> None:
    """Back-off: the interval, then doubled per failure in a row, never above the cap;
    a job whose interval is longer than the cap retries after the cap."""
    assert [backoff_delay(15, n, 120) for n in range(6)] == [15, 15, 30, 60, 120, 120]
    assert backoff_delay(86400, 1, 600) == 600
    assert backoff_delay(1, 10_000, 60) == 60


async def _cancel_during_a_run(once_on_cancel: str) -> asyncio.Task[None]:
    started = asyncio.Event()

    async def once() -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            if once_on_cancel == "raises":
                raise ConnectionRefusedError(111, "refused") from None
            return  # swallowed

    task = asyncio.create_task(run_forever("job", once, interval_s=3600, backoff_cap_s=3600))
    await started.wait()
    # A deadline against hanging, not a timing assertion: the loop never wakes again.
    await asyncio.wait_for(cancel_and_wait(task), timeout=10)
    return task


async def test_a_cancellation_turned_into_an_error_still_ends_the_loop() -> None:
    """Cancelled mid-run, the loop stops even when the run turns the cancellation into an
    ordinary error (Python 3.11's ``wait_for`` does when the awaited future is already
    done): it is not counted as a failure and slept on, which hung shutdown."""
    task = await _cancel_during_a_run("raises")
    assert task.cancelled()


async def test_a_cancellation_swallowed_by_the_run_still_ends_the_loop() -> None:
    """Cancelled mid-run, the loop stops even when the run swallows the cancellation and
    returns as if it had succeeded."""
    task = await _cancel_during_a_run("returns")
    assert task.cancelled()
