"""Readiness names each dependency that does not answer, and never waits long for one."""

from __future__ import annotations

import asyncio

from callbridge.errors import Unavailable
from callbridge.services.readiness import Readiness


async def _fine() -> None:
    return None


async def _refused() -> None:
    raise Unavailable("refused", dependency="redis")


async def _hangs() -> None:
    await asyncio.Event().wait()


async def test_a_store_that_hangs_counts_as_down_after_the_probe_timeout() -> None:
    """A database that accepts but never answers is reported down once the probe's own
    timeout passes; the other probes still answer for themselves."""
    readiness = Readiness({"database": _hangs, "redis": _fine}, timeout_s=0.2)
    assert await asyncio.wait_for(readiness.down(), 10) == ["database"]


async def test_every_dependency_down_is_named_in_order() -> None:
    """Both stores down: both are named, database first."""
    readiness = Readiness({"database": _hangs, "redis": _refused}, timeout_s=0.2)
    assert await asyncio.wait_for(readiness.down(), 10) == ["database", "redis"]
    assert await Readiness({"database": _fine}).down() == []
