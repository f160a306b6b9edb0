"""The abuse policy's door for call requests: number policy, quiet hours, do-not-call, quotas.

Order matters and is the promise of security.md: the number is screened (E.164,
country, type, short codes, emergency) and checked against quiet hours and the
do-not-call list before any quota is spent; quotas are reserved atomically (in
process, or in Redis shared by every process) before anything is recorded; the
slots are released when the call ends. A do-not-call refusal looks exactly like a
per-number quota refusal, so nobody can learn who opted out: it is decided by the
quota store as a per-number rule, after the requester's own limits, and counts as
a request for that number (security.md 9, 14, 20). A tripped kill switch refuses
every request first (security.md 13).
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Protocol

import structlog

from callbridge.domain.phone import PhoneNumber
from callbridge.domain.policy import NumberPolicy, QuietHours
from callbridge.domain.privacy import mask_number
from callbridge.domain.quotas import (
    QuotaLimits,
    QuotaRequest,
    Reservation,
    hashed,
    number_range,
)
from callbridge.errors import PolicyRejected, StoreError
from callbridge.metrics import Metrics
from callbridge.ports import Clock, QuotaStore, RefusalRecorder
from callbridge.services.alerts import Alerts
from callbridge.services.killswitch import KillSwitch
from callbridge.services.placing import Admitted
from callbridge.services.tokens import keyed_hash

_log = structlog.get_logger(__name__)


class DoNotCallList(Protocol):
    """Numbers (as keyed hashes) that asked never to be called again."""

    async def is_do_not_call(self, number_hash: str) -> bool:
        """Whether the hashed number is on the list."""
        ...

    async def add_do_not_call(self, number_hash: str, masked: str, source: str) -> None:
        """Put the hashed number on the list."""
        ...


class PolicyAdmission:
    """Implements :class:`callbridge.services.placing.Admission`."""

    def __init__(
        self,
        *,
        numbers: NumberPolicy,
        quiet_hours: QuietHours | None,
        limits: QuotaLimits,
        quotas: QuotaStore,
        dnc: DoNotCallList,
        key: bytes,
        default_region: str,
        clock: Clock,
        metrics: Metrics | None = None,
        killswitch: KillSwitch | None = None,
        alerts: Alerts | None = None,
        refusals: RefusalRecorder | None = None,
    ) -> None:
        self._numbers = numbers
        self._quiet = quiet_hours
        self.limits = limits
        self._quotas = quotas
        self._dnc = dnc
        self._key = key
        self._region = default_region
        self._clock = clock
        self.metrics = metrics
        self.killswitch = killswitch
        self.alerts = alerts
        self.refusals = refusals
        self._held: dict[str, Reservation] = {}

    async def admit(self, raw_number: str, client_ip: str | None) -> Admitted:
        """Screen the number and reserve its quotas.

        Raises:
            InvalidNumber: not a valid phone number.
            PolicyRejected: refused by the kill switch, the number policy, quiet hours,
                the do-not-call list or a quota.
        """
        number = None
        try:
            if self.killswitch is not None:
                await self.killswitch.check()
            number = self._numbers.screen(raw_number, self._region)
            if self._quiet is not None:
                self._quiet.check(number, self._clock.now())
            opted_out = await self._dnc.is_do_not_call(hashed(number.e164, self._key))
            reservation = await self._quotas.reserve(
                QuotaRequest.for_number(
                    number, client_ip or "unknown", self._key, do_not_call=opted_out
                ),
                self.limits,
                time.time(),
            )
        except PolicyRejected as exc:
            if self.metrics is not None:
                self.metrics.policy_refusals.labels(reason=exc.reason).inc()
            _log.info("call_refused", reason=exc.reason)
            if self.alerts is not None and number is not None:
                _alert_refusal(self.alerts, exc.reason, number)
            if self.refusals is not None:
                await self.refusals.record_refusal(
                    exc.reason,
                    number_hash=hashed(number.e164, self._key) if number is not None else None,
                )
            raise
        return Admitted(
            e164=number.e164,
            client_ip_hash=keyed_hash(self._key, client_ip) if client_ip else None,
            reservation=reservation,
        )

    def bind(self, admitted: Admitted, call_id: str) -> None:
        """Remember that ``call_id`` holds the admission's quota slots."""
        if isinstance(admitted.reservation, Reservation):
            self._held[call_id] = admitted.reservation

    async def release(self, call_id: str, *, cost_cents: int | None = None) -> None:
        """Free a call's slots (idempotent; unknown ids are ignored)."""
        reservation = self._held.pop(call_id, None)
        if reservation is not None:
            try:
                await self._quotas.release(
                    reservation, actual_cost_cents=cost_cents, now=time.time()
                )
            except StoreError:
                self._held[call_id] = reservation  # still held: a retry releases it
                raise

    async def add_do_not_call(self, e164: str) -> None:
        """Put a number on the do-not-call list (the callee pressed 9, or the operator)."""
        await self._dnc.add_do_not_call(hashed(e164, self._key), mask_number(e164), "callee")


def _alert_refusal(alerts: Alerts, reason: str, number: PhoneNumber) -> None:
    """Alert on the refusals a person should look at: spend and destination spikes."""
    code = f"+{number.country_code}"
    if reason == "spend_cap":
        alerts.raise_alert("spend_cap", "The daily spend cap is reached: calls are refused.")
    elif reason == "country_daily":
        alerts.raise_alert(
            "country_daily", f"Calls to {code} reached their daily limit.", country_code=code
        )
    elif reason == "prefix_daily":
        # The range without its last four digits is shown, never a whole number.
        block = number_range(number.e164) + "xxxx"
        alerts.raise_alert(
            "prefix_daily", f"Calls into {block} reached their daily limit.", number_range=block
        )


def relaxed_for_sandbox(limits: QuotaLimits) -> QuotaLimits:
    """Sandbox defaults: a person trying the demo may call the same number again at once."""
    return replace(
        limits,
        per_number_hourly=max(limits.per_number_hourly, 60),
        per_number_daily=max(limits.per_number_daily, 500),
        per_number_cooldown_s=1,
        per_ip_hourly=max(limits.per_ip_hourly, 600),
        per_ip_block_hourly=max(limits.per_ip_block_hourly, 600),
        distinct_numbers_per_ip_daily=max(limits.distinct_numbers_per_ip_daily, 100),
        per_country_daily=max(limits.per_country_daily, 5000),
        per_prefix_daily=max(limits.per_prefix_daily, 500),
    )
