"""The quota store port: check every quota and record the attempt, atomically.

(To move to ``callbridge/ports.py`` with the other ports.)
"""

from __future__ import annotations

from typing import Protocol

from callbridge.domain.quotas import QuotaLimits, QuotaRequest, Reservation


class QuotaStore(Protocol):
    """Counters for the quotas of security.md 6-12, shared by every process.

    Times are seconds since the epoch passed in as ``now`` (never read from a
    clock inside), so sliding windows can be tested by moving ``now``.
    """

    async def reserve(self, request: QuotaRequest, limits: QuotaLimits, now: float) -> Reservation:
        """Check all quotas and, only if all pass, record the attempt, atomically.

        Records: the attempt in the per-number, per-IP and per-block windows, the
        number among the IP's distinct numbers, an in-flight slot for the number and
        for the service, and ``limits.reservation_cents`` of today's spend.

        Raises:
            PolicyRejected: from :func:`callbridge.domain.policy.quota_error` for the
                first failing rule (429 for requester and number rules, 503 for
                ``capacity`` and ``spend_cap``). A ``distinct_numbers`` refusal also
                blocks the IP for ``limits.ip_block_escalation_s``.
        """
        ...

    async def release(
        self, reservation: Reservation, *, actual_cost_cents: int | None, now: float
    ) -> None:
        """Free the call's in-flight slots and settle its spend; idempotent.

        Args:
            reservation: what :meth:`reserve` returned.
            actual_cost_cents: what the call cost, replacing the reserved amount;
                ``None`` keeps the reservation booked (cost unknown).
            now: the current time.
        """
        ...

    async def flag_ip(self, ip: str, seconds: int, *, now: float) -> None:
        """Block an IP for ``seconds`` from ``now`` (never shortening a longer block)."""
        ...
