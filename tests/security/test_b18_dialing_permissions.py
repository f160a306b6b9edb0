"""security.md B18: Twilio's Voice Dialing Permissions must not exceed ALLOWED_COUNTRIES.

The pure check is tested exhaustively; the guard's three modes with a scripted provider;
``callbridge doctor --online`` (the CI check) and ``callbridge serve`` start-up end to end,
against the Twilio emulator on a real loopback server.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import sys
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount
from structlog.testing import capture_logs
from typer.testing import CliRunner

from callbridge.bootstrap import build
from callbridge.cli import app
from callbridge.domain.dialing_permissions import (
    CountryPermission,
    Finding,
    FindingKind,
    check_dialing_permissions,
)
from callbridge.errors import ConfigError, ErrorCategory, ProviderError
from callbridge.metrics import Metrics
from callbridge.sandbox.twilio.emulator import TwilioEmulator
from callbridge.services.dialing_permissions import CheckMode, DialingPermissionsGuard
from callbridge.settings import load_settings
from tests.sandbox_twilio.conftest import ACCOUNT_SID, AUTH_TOKEN
from tests.support.server import free_port, serve

CALLBRIDGE = str(Path(sys.executable).parent / "callbridge")
FRANCE_OUTSIDE = (
    "Twilio lets this account call France (FR), which is not in CALLBRIDGE_ALLOWED_COUNTRIES"
)


def country(
    iso: str, low: bool = False, special: bool = False, fraud: bool = False, name: str | None = None
) -> CountryPermission:
    return CountryPermission(iso, name or f"Land {iso}", ("+99",), low, special, fraud)


def kinds(findings: Iterable[Finding]) -> list[tuple[FindingKind, str]]:
    return [(f.kind, f.iso_code) for f in findings]


def flat(text: str) -> str:
    """Console output with rich's line wrapping undone."""
    return " ".join(text.split())


# ----- the pure check ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("low", "special", "fraud", "allowed"), list(itertools.product([False, True], repeat=4))
)
def test_every_combination_of_groups_and_allowlist_membership(
    low: bool, special: bool, fraud: bool, allowed: bool
) -> None:
    """Low risk on outside the allowlist, and either high-risk group on anywhere, are
    violations; an allowed country with low risk off is a warning; nothing else is reported."""
    countries = [country("US", low=True), country("FR", low, special, fraud)]
    report = check_dialing_permissions(countries, ["US", "FR"] if allowed else ["US"])
    expected = []
    if low and not allowed:
        expected.append((FindingKind.OUTSIDE_ALLOWLIST, "FR"))
    if special:
        expected.append((FindingKind.HIGH_RISK_SPECIAL, "FR"))
    if fraud:
        expected.append((FindingKind.HIGH_RISK_TOLLFRAUD, "FR"))
    assert kinds(report.violations) == expected
    assert report.ok is (not expected)
    warned = [(FindingKind.ALLOWED_NOT_ENABLED, "FR")] if allowed and not low else []
    assert kinds(report.warnings) == warned


def test_high_risk_groups_are_violations_inside_the_allowlist_too() -> None:
    """An allowed country with a high-risk group on still fails the check."""
    report = check_dialing_permissions([country("US", True, True, True)], ["US"])
    assert kinds(report.violations) == [
        (FindingKind.HIGH_RISK_SPECIAL, "US"),
        (FindingKind.HIGH_RISK_TOLLFRAUD, "US"),
    ]


def test_canada_is_twilios_us_entry() -> None:
    """Twilio keeps Canada under US ("United States/Canada"): allowing CA alone makes the US
    entry allowed, and CA is warned about when that entry is off."""
    us_on = [country("US", low=True, name="United States/Canada")]
    assert check_dialing_permissions(us_on, ["CA"]) == check_dialing_permissions(us_on, ["US"])
    assert check_dialing_permissions(us_on, ["CA"]).violations == ()
    us_off = [country("US", name="United States/Canada")]
    report = check_dialing_permissions(us_off, ["US", "CA"])
    assert kinds(report.warnings) == [
        (FindingKind.ALLOWED_NOT_ENABLED, "CA"),
        (FindingKind.ALLOWED_NOT_ENABLED, "US"),
    ]
    assert report.warnings[1].sentence.startswith("United States/Canada (US) is in")
    assert report.warnings[0].sentence.startswith("CA is in")


def test_an_allowed_country_twilio_does_not_list_is_a_warning() -> None:
    """An allowlisted code with no Twilio entry is warned about by its code."""
    report = check_dialing_permissions([country("US", low=True)], ["US", "XX"])
    assert report.ok and kinds(report.warnings) == [(FindingKind.ALLOWED_NOT_ENABLED, "XX")]
    assert "21215" in report.warnings[0].sentence


def test_findings_are_ordered_and_codes_are_case_insensitive() -> None:
    """Violations come out by ISO code whatever the input order; ``fr`` allows FR."""
    countries = [
        country("ZA", fraud=True),
        country("de", low=True),
        country("FR", low=True),
        country("US", low=True),
    ]
    report = check_dialing_permissions(countries, ["us", "fr"])
    assert kinds(report.violations) == [
        (FindingKind.OUTSIDE_ALLOWLIST, "DE"),
        (FindingKind.HIGH_RISK_TOLLFRAUD, "ZA"),
    ]
    assert report.warnings == ()


def test_nothing_listed_and_nothing_allowed_is_clean() -> None:
    """No countries and an empty allowlist: nothing to report."""
    report = check_dialing_permissions([], [])
    assert report.ok and report.violations == () and report.warnings == ()


@pytest.mark.parametrize("kind", list(FindingKind))
def test_each_finding_is_one_sentence_naming_the_country(kind: FindingKind) -> None:
    """Every finding reads as one sentence with the country's name and code."""
    sentence = Finding(kind, "FR", "France").sentence
    assert "France (FR)" in sentence
    assert sentence.endswith(".") and sentence.count(". ") == 0 and "\n" not in sentence


# ----- the guard's modes --------------------------------------------------------------


class ScriptedProvider:
    """A DialingPermissionsProvider that answers a fixed list or raises."""

    def __init__(
        self, countries: list[CountryPermission] | None = None, error: ProviderError | None = None
    ) -> None:
        self.countries = countries or []
        self.error = error
        self.reads = 0

    async def list_countries(self) -> list[CountryPermission]:
        self.reads += 1
        if self.error is not None:
            raise self.error
        return self.countries


BAD = [country("US", low=True), country("FR", low=True, special=True, name="France")]
UNREACHABLE = ProviderError(
    "could not reach Twilio to list the voice dialing permissions: ConnectError",
    provider="twilio",
    category=ErrorCategory.NETWORK,
)


def guard(
    mode: CheckMode, provider: ScriptedProvider, metrics: Metrics | None = None
) -> DialingPermissionsGuard:
    return DialingPermissionsGuard(
        provider=provider, allowed_countries=["US", "CA"], mode=mode, metrics=metrics
    )


def gauge(metrics: Metrics, name: str) -> float | None:
    return metrics.registry.get_sample_value(name)


async def test_off_does_not_ask_twilio() -> None:
    """``off`` reads nothing and reports nothing."""
    provider = ScriptedProvider(BAD)
    assert await guard(CheckMode.OFF, provider).at_startup() is None
    assert provider.reads == 0


async def test_warn_logs_each_violation_sets_the_gauge_and_carries_on() -> None:
    """``warn`` logs one structured warning per violation and exports their number."""
    metrics = Metrics()
    with capture_logs() as logs:
        report = await guard(CheckMode.WARN, ScriptedProvider(BAD), metrics).at_startup()
    assert report is not None and len(report.violations) == 2
    events = [e for e in logs if e["event"] == "dialing_permission_violation"]
    assert [(e["kind"], e["iso_code"], e["log_level"]) for e in events] == [
        ("outside_allowlist", "FR", "warning"),
        ("high_risk_special", "FR", "warning"),
    ]
    assert events[0]["message"].startswith(FRANCE_OUTSIDE)
    assert gauge(metrics, "callbridge_dialing_permission_violations") == 2
    assert gauge(metrics, "callbridge_dialing_permissions_unreadable") == 0


async def test_warn_raises_one_operator_alert_for_the_violations() -> None:
    """``warn`` raises one ``dialing_permissions`` alert (log line and metric) naming the
    first violation and counting them all; a clean account raises none."""
    from callbridge.services.alerts import Alerts

    metrics = Metrics()
    alerts = Alerts(sink=None, metrics=metrics)
    clean = DialingPermissionsGuard(
        provider=ScriptedProvider([country("US", low=True)]),
        allowed_countries=["US", "CA"],
        mode=CheckMode.WARN,
        alerts=alerts,
    )
    await clean.at_startup()
    assert (
        metrics.registry.get_sample_value(
            "callbridge_alerts_total", {"kind": "dialing_permissions"}
        )
        is None
    )
    noisy = DialingPermissionsGuard(
        provider=ScriptedProvider(BAD),
        allowed_countries=["US", "CA"],
        mode=CheckMode.WARN,
        alerts=alerts,
    )
    with capture_logs() as logs:
        await noisy.at_startup()
    alert = next(e for e in logs if e["event"] == "alert")
    assert (alert["kind"], alert["violations"]) == ("dialing_permissions", 2)
    assert FRANCE_OUTSIDE in alert["summary"]
    assert (
        metrics.registry.get_sample_value(
            "callbridge_alerts_total", {"kind": "dialing_permissions"}
        )
        == 1
    )


async def test_warn_carries_on_when_twilio_cannot_be_reached() -> None:
    """``warn`` logs an unreadable check and sets its gauge, without raising."""
    metrics = Metrics()
    with capture_logs() as logs:
        assert (
            await guard(CheckMode.WARN, ScriptedProvider(error=UNREACHABLE), metrics).at_startup()
            is None
        )
    assert [e["category"] for e in logs if e["event"] == "dialing_permissions_unreadable"] == [
        "network"
    ]
    assert gauge(metrics, "callbridge_dialing_permissions_unreadable") == 1


async def test_enforce_refuses_with_one_sentence_per_failure() -> None:
    """``enforce`` raises ConfigError naming the first violation and counting the rest, and
    also when Twilio cannot be reached; a clean account passes."""
    with pytest.raises(ConfigError) as raised:
        await guard(CheckMode.ENFORCE, ScriptedProvider(BAD)).at_startup()
    message = str(raised.value)
    assert message.startswith(f"Refusing to start because {FRANCE_OUTSIDE}")
    assert message.endswith("(1 more: see `callbridge doctor --online`).")
    with pytest.raises(ConfigError, match="could not be read"):
        await guard(CheckMode.ENFORCE, ScriptedProvider(error=UNREACHABLE)).at_startup()
    clean = await guard(CheckMode.ENFORCE, ScriptedProvider([country("US", low=True)])).at_startup()
    assert clean is not None and clean.ok


async def test_the_composition_root_reads_the_in_process_emulator(tmp_path: Path) -> None:
    """In the sandbox, ``build`` wires the check to the in-process emulator (no server
    needed) with the mode of CALLBRIDGE_DIALING_PERMISSIONS_CHECK."""
    settings = load_settings(
        _env_file=None,
        sandbox=True,
        allowed_countries="US",
        dialing_permissions_check="enforce",
        database_url=f"sqlite+aiosqlite:///{tmp_path}/cb.db",
    )
    container = build(settings)
    try:
        checker = container.safety.dialing_permissions
        assert checker.mode is CheckMode.ENFORCE
        assert (await checker.check()).ok
        assert container.sandbox is not None
        container.sandbox.twilio.set_dialing_permission("FR", low_risk=True)
        assert kinds((await checker.check()).violations) == [(FindingKind.OUTSIDE_ALLOWLIST, "FR")]
    finally:
        await container.store.aclose()
        await container.http.aclose()


def test_an_unknown_check_mode_is_a_settings_error() -> None:
    """CALLBRIDGE_DIALING_PERMISSIONS_CHECK accepts only off, warn and enforce."""
    with pytest.raises(ConfigError, match="DIALING_PERMISSIONS_CHECK"):
        load_settings(_env_file=None, dialing_permissions_check="sometimes")


# ----- end to end: doctor --online and serve ------------------------------------------


@pytest.fixture
async def twilio() -> AsyncIterator[tuple[TwilioEmulator, str]]:
    """The Twilio emulator alone on loopback; yields it and its REST root."""
    emulator = TwilioEmulator(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN)
    async with serve(Starlette(routes=[Mount("/sandbox/twilio", app=emulator.asgi_app)])) as url:
        yield emulator, f"{url}/sandbox/twilio"


def env_for(base: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    """A sandbox callbridge whose Twilio is the emulator at ``base``."""
    return {
        "CALLBRIDGE_SANDBOX": "true",
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "TWILIO_API_BASE_URL": base,
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/cb.db",
        "CALLBRIDGE_ADMIN_TOKEN": "operator-token-" + "x" * 20,
        **extra,
    }


async def doctor(env: dict[str, str]) -> tuple[int, str]:
    result = await asyncio.to_thread(CliRunner().invoke, app, ["doctor", "--online"], env=env)
    return result.exit_code, flat(result.output)


async def test_doctor_online_passes_a_clean_account_and_fails_each_violation(
    twilio: tuple[TwilioEmulator, str], tmp_path: Path
) -> None:
    """``callbridge doctor --online`` exits 0 when Twilio allows only the allowed countries,
    and 1 with one sentence per violation otherwise; an allowed country that Twilio will
    not call is a warning that does not fail it."""
    emulator, base = twilio
    code, out = await doctor(env_for(base, tmp_path))
    assert code == 0, out
    assert "dialing permissions stay within CALLBRIDGE_ALLOWED_COUNTRIES" in out
    emulator.set_dialing_permission("FR", low_risk=True)
    emulator.set_dialing_permission("US", high_risk_tollfraud=True)
    code, out = await doctor(env_for(base, tmp_path))
    assert code == 1
    assert FRANCE_OUTSIDE in out
    assert "high-risk toll-fraud numbers in United States/Canada (US)" in out
    emulator.set_dialing_permission("FR", low_risk=False)
    emulator.set_dialing_permission("US", low_risk=False, high_risk_tollfraud=False)
    code, out = await doctor(env_for(base, tmp_path))
    assert code == 0, out
    assert "United States/Canada (US) is in CALLBRIDGE_ALLOWED_COUNTRIES but" in out
    assert AUTH_TOKEN not in out


async def test_doctor_online_fails_when_twilio_cannot_be_read(
    twilio: tuple[TwilioEmulator, str], tmp_path: Path
) -> None:
    """A wrong token, or nobody listening, makes ``doctor --online`` exit 1 and say so."""
    _, base = twilio
    code, out = await doctor(env_for(base, tmp_path, TWILIO_AUTH_TOKEN="not-the-token"))
    assert code == 1
    assert "dialing permissions could not be read: Twilio refused" in out and "20003" in out
    code, out = await doctor(env_for(f"http://127.0.0.1:{free_port()}", tmp_path))
    assert code == 1 and "could not be read" in out


async def run_serve(env: dict[str, str], tmp_path: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        CALLBRIDGE,
        "serve",
        "--port",
        env["PORT"],
        cwd=tmp_path,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def test_enforce_refuses_to_start_with_one_sentence(
    twilio: tuple[TwilioEmulator, str], tmp_path: Path
) -> None:
    """``serve`` with CALLBRIDGE_DIALING_PERMISSIONS_CHECK=enforce exits 2 before listening,
    printing the violation as one sentence and no traceback; unreachable Twilio too."""
    emulator, base = twilio
    emulator.set_dialing_permission("FR", low_risk=True)
    env = env_for(
        base, tmp_path, CALLBRIDGE_DIALING_PERMISSIONS_CHECK="enforce", PORT=str(free_port())
    )
    process = await run_serve(env, tmp_path)
    out, err = await asyncio.wait_for(process.communicate(), 60)
    text = flat(err.decode() + out.decode())
    assert process.returncode == 2, text
    assert f"callbridge: Refusing to start because {FRANCE_OUTSIDE}" in text
    assert "Traceback" not in text and AUTH_TOKEN not in text
    env["TWILIO_API_BASE_URL"] = f"http://127.0.0.1:{free_port()}"
    process = await run_serve(env, tmp_path)
    out, err = await asyncio.wait_for(process.communicate(), 60)
    text = flat(err.decode() + out.decode())
    assert process.returncode == 2, text
    assert "Twilio's dialing permissions could not be read" in text
    assert "Traceback" not in text


async def test_warn_starts_logs_each_violation_and_exports_the_gauge(
    twilio: tuple[TwilioEmulator, str], tmp_path: Path
) -> None:
    """``serve`` in the default ``warn`` mode starts despite violations, logs a JSON warning
    per violation (no secret in the logs) and exports their number at /metrics."""
    emulator, base = twilio
    emulator.set_dialing_permission("FR", low_risk=True, high_risk_special=True)
    port = free_port()
    env = env_for(
        base, tmp_path, CALLBRIDGE_LOG_FORMAT="json", CALLBRIDGE_DRAIN_SECONDS="0", PORT=str(port)
    )
    process = await run_serve(env, tmp_path)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            async with asyncio.timeout(60):
                while True:
                    assert process.returncode is None, "callbridge serve exited"
                    try:
                        if (await http.get("/healthz")).status_code == 200:
                            break
                    except httpx.TransportError:
                        await asyncio.sleep(0.1)
            metrics = (await http.get("/metrics")).text
        assert "callbridge_dialing_permission_violations 2.0" in metrics
        assert "callbridge_dialing_permissions_unreadable 0.0" in metrics
    finally:
        process.terminate()
        _, err = await asyncio.wait_for(process.communicate(), 60)
    lines = [json.loads(line) for line in err.decode().splitlines() if line.startswith("{")]
    violations = [e for e in lines if e.get("event") == "dialing_permission_violation"]
    assert [(e["kind"], e["iso_code"], e["level"]) for e in violations] == [
        ("outside_allowlist", "FR", "warning"),
        ("high_risk_special", "FR", "warning"),
    ]
    assert AUTH_TOKEN not in err.decode()
