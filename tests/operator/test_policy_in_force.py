"""The settings page's values in force come from what admission enforces (pure)."""

from __future__ import annotations

from callbridge.domain.policy import QuietHours
from callbridge.services.admission import limits_in_force
from callbridge.services.operator import PolicyInForce, settings_view
from callbridge.settings import Settings

_REAL = {"twilio_account_sid": "AC" + "0" * 32, "twilio_auth_token": "x" * 32}


def _shown(settings: Settings, sandbox: bool) -> dict[str, str]:
    window = settings.quiet_window()
    policy = PolicyInForce(
        limits=limits_in_force(settings, sandbox=sandbox),
        quiet_hours=QuietHours(start=window[0], end=window[1]) if window else None,
        sandbox=sandbox,
    )
    return {s.env: s.value for s in settings_view(settings, policy)}


def test_production_shows_the_default_calling_window_rather_than_not_set() -> None:
    """Outside the sandbox, with CALLBRIDGE_QUIET_HOURS unset, the default window is in
    force and shown as such; the limits are the settings' own."""
    shown = _shown(Settings(_env_file=None, **_REAL), sandbox=False)  # type: ignore[call-arg]
    assert shown["CALLBRIDGE_QUIET_HOURS"] == "08:00–21:00 callee's time"
    assert shown["CALLBRIDGE_PER_NUMBER_HOURLY"] == "3"


def test_a_limit_the_operator_set_is_not_relaxed_in_the_sandbox() -> None:
    """Setting one per-number limit keeps every limit as set, even in the sandbox, and the
    page says so by showing the plain values."""
    settings = Settings(_env_file=None, per_number_hourly=4)  # type: ignore[call-arg]
    shown = _shown(settings, sandbox=True)
    assert shown["CALLBRIDGE_PER_NUMBER_HOURLY"] == "4"
    assert shown["CALLBRIDGE_PER_IP_HOURLY"] == "10"
    assert shown["CALLBRIDGE_QUIET_HOURS"] == "off (sandbox)"
