"""A periodic job's lease: one process works a pass, whichever process that is.

Every process runs the reconcilers (there is no leader to elect); each pass first
takes the job's :class:`~callbridge.ports.Lease`, renews it before each item it works
on, and gives it up at the end, so passes of different processes never overlap and a
process that dies mid-pass blocks the others for one ``ttl_s`` at most.
"""

from __future__ import annotations

import structlog

from callbridge.errors import StoreError
from callbridge.ports import Lease

_log = structlog.get_logger(__name__)


class JobLease:
    """The lease of one job, held by one owner (this process).

    Args:
        lease: where leases are kept (Redis or the database); None: no other process
            shares the work, so the lease is always ours.
        name: the job's name (one lease per job).
        owner: this process's id, unique among the processes sharing the store.
        ttl_s: how long a taken or renewed lease lasts without a renewal.
    """

    def __init__(self, lease: Lease | None, *, name: str, owner: str, ttl_s: float) -> None:
        self._lease = lease
        self.name = name
        self.owner = owner
        self.ttl_s = ttl_s

    async def hold(self) -> bool:
        """Take or renew the lease; whether this process may work now.

        Raises:
            StoreError: the lease's store failed (no work may be done).
        """
        if self._lease is None:
            return True
        return await self._lease.acquire(self.name, self.owner, self.ttl_s)

    async def let_go(self) -> None:
        """Give the lease up after a pass (a failure only delays the next holder)."""
        if self._lease is None:
            return
        try:
            await self._lease.release(self.name, self.owner)
        except StoreError as exc:
            _log.warning("lease_release_failed", job=self.name, error=exc.message)
