"""Fixtures of the reconciler's suite: a fresh PostgreSQL database and a Redis server
(the same ones as the store's and the policy's suites), and a clock a test can move."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.store.conftest import postgres_url

__all__ = ["ManualClock", "manual_clock", "postgres_url"]


class ManualClock:
    """A clock that stands still until the test moves it."""

    def __init__(self) -> None:
        self.at = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)

    def now(self) -> datetime:
        return self.at

    def monotonic(self) -> float:
        return self.at.timestamp()

    def advance(self, seconds: float) -> None:
        self.at += timedelta(seconds=seconds)


@pytest.fixture
def manual_clock() -> ManualClock:
    """A clock that moves only when told."""
    return ManualClock()
