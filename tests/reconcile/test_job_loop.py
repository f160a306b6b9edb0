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
