"""The kill switch: stop new calls at once, in this process and (with Redis) in all of them.

Two ways to trip it (security.md 13, layer 7 "circuit breaker"):

* ``CALLBRIDGE_CALLS_ENABLED=false`` at start-up (the switch starts tripped);
* a Twilio Usage Trigger (e.g. on the day's ``totalprice``) posting to
  ``/api/webhooks/twilio/usage-trigger``, which calls :meth:`KillSwitch.trip`.

With a :class:`SharedFlag` (Redis), a trip is written there too, and every
process re-reads the flag at most :attr:`KillSwitch.refresh_s` seconds after its
last look (1 s by default), so all processes stop placing calls well within the
5 s the criterion allows. Once tripped, a process stays tripped until restarted
or :meth:`KillSwitch.reset` (an operator's decision, never a webhook's).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Protocol

import structlog

from callbridge.errors import PolicyRejected
from callbridge.services.alerts import Alerts

_log = structlog.get_logger(__name__)

KILL_SWITCH_MESSAGE = "Calls are switched off right now. Please try again later."
KILL_SWITCH_RETRY_AFTER_S = 300


class SharedFlag(Protocol):
    """A flag every process can see (Redis), holding why calls were stopped."""

    async def get(self) -> str | None:
        """The reason the switch was tripped, or None when it is not."""
        ...

    async def set(self, reason: str) -> None:
        """Trip the switch for every process."""
        ...

    async def clear(self) -> None:
        """Reset the switch for every process."""
        ...


class KillSwitch:
    """Whether new calls may be placed.

    Args:
        enabled: False starts the switch tripped (``CALLBRIDGE_CALLS_ENABLED=false``).
        shared: the flag shared by every process, or None for this process only.
        refresh_s: how long a look at the shared flag is trusted.
        monotonic: the clock for ``refresh_s`` (tests pass a fake).
        alerts: told when this process trips the switch.
    """

    def __init__(
        self,
        *,
        enabled: bool = True,
        shared: SharedFlag | None = None,
        refresh_s: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
        alerts: Alerts | None = None,
    ) -> None:
        self._alerts = alerts
        self._reason: str | None = None if enabled else "CALLBRIDGE_CALLS_ENABLED=false"
        self._shared = shared
        self.refresh_s = refresh_s
        self._monotonic = monotonic
        self._looked_at: float | None = None

    @property
    def reason(self) -> str | None:
        """Why this process stopped calls (None while calls are enabled)."""
        return self._reason

    async def calls_enabled(self) -> bool:
        """Whether a new call may be placed now (reads the shared flag if stale)."""
        if self._reason is not None:
            return False
        if self._shared is None:
            return True
        now = self._monotonic()
        if self._looked_at is None or now - self._looked_at >= self.refresh_s:
            self._looked_at = now
            reason = await self._shared.get()
            if reason is not None:
                self._reason = reason
                _log.error("kill_switch_tripped", reason=reason, source="shared")
        return self._reason is None

    async def check(self) -> None:
        """Raise unless calls are enabled.

        Raises:
            PolicyRejected: 503 with ``reason="kill_switch"`` and a Retry-After.
        """
        if not await self.calls_enabled():
            raise PolicyRejected(
                KILL_SWITCH_MESSAGE,
                reason="kill_switch",
                http_status=503,
                retry_after=KILL_SWITCH_RETRY_AFTER_S,
            )

    async def trip(self, reason: str) -> None:
        """Stop new calls here and, with a shared flag, everywhere."""
        first = self._reason is None
        self._reason = self._reason or reason
        if first:
            _log.error("kill_switch_tripped", reason=reason, source="local")
            if self._alerts is not None:
                self._alerts.raise_alert(
                    "kill_switch",
                    "New calls are switched off until an operator resets the switch.",
                    reason=reason,
                )
        if self._shared is not None:
            # Last: if Redis is away this raises (503, so the trigger is sent again),
            # but this process has stopped new calls and the operator was alerted.
            await self._shared.set(reason)

    async def reset(self) -> None:
        """Allow calls again (the operator's decision)."""
        self._reason = None
        self._looked_at = None
        if self._shared is not None:
            await self._shared.clear()
        _log.warning("kill_switch_reset")

    async def usage_triggered(self, params: Mapping[str, str], *, account_sid: str) -> bool:
        """Trip the switch for a Twilio Usage Trigger callback.

        The request's signature has been checked already; this checks that the
        trigger belongs to our account.
        (https://www.twilio.com/docs/usage/api/usage-trigger#callback-parameters)

        Returns:
            True when the switch was tripped; False for another account's trigger.
        """
        if params.get("AccountSid") != account_sid:
            _log.warning("usage_trigger_other_account")
            return False
        detail = " ".join(
            f"{name}={params[name]}"
            for name in ("UsageTriggerSid", "UsageCategory", "TriggerValue", "CurrentValue")
            if params.get(name)
        )
        await self.trip(f"twilio usage trigger: {detail}"[:200])
        return True
