"""Readiness: is every store this process needs answering right now?

``/readyz`` asks each dependency (``database``, and ``redis`` when configured) in
parallel, each under its own short timeout, so a store that hangs rather than
refuses still gives a quick, clear answer: the names of the dependencies that are
down. A load balancer then stops sending requests here until they are back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import structlog

from callbridge.errors import StoreError

_log = structlog.get_logger(__name__)

Probe = Callable[[], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Readiness:
    """The dependencies to probe, by name.

    Args:
        probes: name (``"database"``, ``"redis"``) → a coroutine function that raises
            :class:`~callbridge.errors.StoreError` unless the store answers.
        timeout_s: how long one probe may take before its store counts as down.
    """

    probes: Mapping[str, Probe]
    timeout_s: float = 1.0

    async def down(self) -> list[str]:
        """The names of the dependencies that did not answer in time, in probe order."""
        names = list(self.probes)
        results = await asyncio.gather(*(self._probe(name) for name in names))
        return [name for name, ok in zip(names, results, strict=True) if not ok]

    async def _probe(self, name: str) -> bool:
        try:
            async with asyncio.timeout(self.timeout_s):
                await self.probes[name]()
        except TimeoutError:
            _log.warning("readiness_probe_timed_out", dependency=name, after_s=self.timeout_s)
            return False
        except StoreError as exc:
            _log.warning("readiness_probe_failed", dependency=name, error=exc.message)
            return False
        return True
