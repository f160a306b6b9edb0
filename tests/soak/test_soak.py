"""The soak (issue 11, part 7): a compressed day on two servers behind nginx, with faults.

The full run needs nginx, PostgreSQL (initdb/pg_ctl) and redis-server on this
machine; without them it is skipped locally and fails in CI (``CI`` set), since
``.ci/run`` installs them.
"""

from __future__ import annotations

import subprocess
from collections import Counter
from pathlib import Path

import pytest

from callbridge.soak.processes import missing_programs, nginx_binary, nginx_config
from callbridge.soak.profile import ci_profile
from callbridge.soak.report import summary_lines
from callbridge.soak.runner import SoakOptions, run_soak
from callbridge.soak.traffic import callee_book, plan_traffic
from tests.support.need import missing


def test_plan_calls_each_number_once_within_the_configured_limits() -> None:
    """The CI plan: every behaviour present, each number once, no range or the country
    past the limits the soak configures, every callee scripted by its area code."""
    profile = ci_profile()
    plan = plan_traffic(profile)
    limits = profile.limits()
    assert len(plan) == profile.calls
    assert len({p.number for p in plan}) == len(plan)
    assert {p.behaviour.name for p in plan} == {b.name for b in profile.behaviours}
    per_prefix = Counter(p.prefix for p in plan)
    assert max(per_prefix.values()) <= int(limits["CALLBRIDGE_PER_PREFIX_DAILY"])
    assert len(plan) <= int(limits["CALLBRIDGE_PER_COUNTRY_DAILY"])
    assert all(0 <= p.at_s <= profile.duration_s for p in plan)
    book = callee_book(profile)
    assert all(f"+1{p.number[2:5]}555*={p.behaviour.script}" in book for p in plan)


def test_nginx_config_is_accepted_by_nginx(tmp_path: Path) -> None:
    """The generated nginx configuration passes ``nginx -t``."""
    binary = nginx_binary()
    if binary is None:
        missing("nginx is not installed (apt-get install -y nginx-light)")
    for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp_path / name).mkdir()
    conf = tmp_path / "nginx.conf"
    conf.write_text(nginx_config(tmp_path, 18080, [18081, 18082], tmp_path / "access.log"))
    result = subprocess.run(  # noqa: S603 - nginx -t on our own file
        [binary, "-t", "-p", str(tmp_path), "-c", str(conf)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.soak
@pytest.mark.timeout(900)
async def test_a_day_of_operation_keeps_every_invariant() -> None:
    """A few hundred calls of every callee behaviour through nginx to two servers on one
    PostgreSQL and one Redis, with a kill -9, a PostgreSQL outage and a Redis outage:
    every call ends with Twilio's end time, no slot is held, spend is settled, no refusal
    for a limit not reached, no undocumented 5xx, every webhook stored once, every
    bridged call has its transcript."""
    programs = missing_programs(postgres=True, redis=True)
    if programs:
        missing("the soak needs " + ", ".join(programs))
    # Its own directory, not tmp_path: pytest prunes old tmp_paths, and a failed run's
    # logs and evidence.json must outlive the session (the summary prints the path).
    result = await run_soak(SoakOptions(ci_profile()))
    summary = "\n".join(summary_lines(result))
    print(summary)  # noqa: T201 - the one-screen summary belongs in the test's output
    assert result.passed, summary
