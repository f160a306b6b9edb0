"""The start-up and CI check of Twilio's Voice Dialing Permissions (security.md B18).

:class:`DialingPermissionsGuard` reads the account's permissions through a
:class:`~callbridge.ports.DialingPermissionsProvider` and judges them with
:func:`~callbridge.domain.dialing_permissions.check_dialing_permissions`.
``callbridge doctor --online`` calls :meth:`~DialingPermissionsGuard.check`;
``callbridge serve`` and ``demo`` call :meth:`~DialingPermissionsGuard.at_startup`
before the server starts, which, by ``CALLBRIDGE_DIALING_PERMISSIONS_CHECK``:

- ``off``: does nothing;
- ``warn`` (default): logs one ``dialing_permission_violation`` warning per violation,
  sets the ``callbridge_dialing_permission_violations`` gauge, and carries on, also
  when Twilio cannot be reached (``dialing_permissions_unreadable``);
- ``enforce``: raises :class:`~callbridge.errors.ConfigError` (one sentence) on any
  violation, or when the permissions cannot be read.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

import structlog

from callbridge.domain.dialing_permissions import PermissionReport, check_dialing_permissions
from callbridge.errors import ConfigError, ProviderError
from callbridge.metrics import Metrics
from callbridge.ports import DialingPermissionsProvider
from callbridge.services.alerts import Alerts

_log = structlog.get_logger(__name__)


class CheckMode(StrEnum):
    """What a failed check does at start-up."""

    OFF = "off"
    WARN = "warn"
    ENFORCE = "enforce"


class DialingPermissionsGuard:
    """Checks that Twilio lets the account call no more than the number policy does.

    Args:
        provider: where the permissions are read.
        allowed_countries: ``CALLBRIDGE_ALLOWED_COUNTRIES``.
        mode: what :meth:`at_startup` does with a failed check.
        metrics: where the start-up outcome is exported (optional).
        alerts: told, in ``warn`` mode, when the permissions exceed the policy.
    """

    def __init__(
        self,
        *,
        provider: DialingPermissionsProvider,
        allowed_countries: Iterable[str],
        mode: CheckMode = CheckMode.WARN,
        metrics: Metrics | None = None,
        alerts: Alerts | None = None,
    ) -> None:
        self._alerts = alerts
        self.provider = provider
        self.allowed_countries = tuple(allowed_countries)
        self.mode = mode
        self._metrics = metrics

    async def check(self) -> PermissionReport:
        """Read the permissions and judge them.

        Raises:
            ProviderError: Twilio could not be reached or refused.
        """
        countries = await self.provider.list_countries()
        return check_dialing_permissions(countries, self.allowed_countries)

    async def at_startup(self) -> PermissionReport | None:
        """Run the check as :attr:`mode` says; None when it is off or could not run.

        Raises:
            ConfigError: ``enforce``, and a violation was found or nothing could be read.
        """
        if self.mode is CheckMode.OFF:
            _log.info("dialing_permissions_check_off")
            return None
        try:
            report = await self.check()
        except ProviderError as exc:
            if self._metrics is not None:
                self._metrics.dialing_permissions_unreadable.set(1)
            if self.mode is CheckMode.ENFORCE:
                raise ConfigError(
                    "Refusing to start because Twilio's dialing permissions could not be read "
                    f"and CALLBRIDGE_DIALING_PERMISSIONS_CHECK is enforce ({exc})."
                ) from None
            _log.warning(
                "dialing_permissions_unreadable", error=str(exc), category=exc.category.value
            )
            return None
        if self._metrics is not None:
            self._metrics.dialing_permissions_unreadable.set(0)
            self._metrics.dialing_permission_violations.set(len(report.violations))
        for finding in report.violations:
            _log.warning(
                "dialing_permission_violation",
                kind=finding.kind.value,
                iso_code=finding.iso_code,
                message=finding.sentence,
            )
        for finding in report.warnings:
            _log.warning(
                "dialing_permission_not_enabled",
                iso_code=finding.iso_code,
                message=finding.sentence,
            )
        if self.mode is CheckMode.ENFORCE and report.violations:
            raise ConfigError(_refusal(report))
        if report.violations and self._alerts is not None:
            self._alerts.raise_alert(
                "dialing_permissions",
                "Twilio may dial more than CALLBRIDGE_ALLOWED_COUNTRIES: "
                + report.violations[0].sentence,
                violations=len(report.violations),
            )
        _log.info(
            "dialing_permissions_checked",
            violations=len(report.violations),
            warnings=len(report.warnings),
        )
        return report


def _refusal(report: PermissionReport) -> str:
    """One sentence: the first violation, and how many more there are."""
    sentence = report.violations[0].sentence
    more = len(report.violations) - 1
    if more:
        sentence = f"{sentence.removesuffix('.')} ({more} more: see `callbridge doctor --online`)."
    return f"Refusing to start because {sentence}"
