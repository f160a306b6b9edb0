"""/metrics after a sandbox call, and refusals counted both live and in the database."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.operator.conftest import VISITOR, admin_sandbox, finished_call, signed_in


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


async def test_metrics_after_a_sandbox_call(tmp_path: Path) -> None:
    """One completed call shows as calls_total{status="completed"}, nothing in progress,
    frames both ways, an agent connect time and a first-audio time; no number appears."""
    async with admin_sandbox(tmp_path) as sb:
        await finished_call(sb)
        text = (await sb.http.get("/metrics")).text
        s = _samples(text)
        assert s[("callbridge_calls_total", (("status", "completed"),))] == 1.0
        assert s[("callbridge_calls_in_progress", ())] == 0.0
        assert s[("callbridge_frames_total", (("direction", "to_agent"),))] > 0
        assert s[("callbridge_frames_total", (("direction", "to_callee"),))] > 0
        assert s[("callbridge_agent_connect_seconds_count", ())] >= 1
        assert s[("callbridge_first_agent_audio_seconds_count", ())] >= 1
        assert VISITOR not in text and VISITOR[1:] not in text


async def test_refusals_are_counted_live_and_kept_for_the_overview(tmp_path: Path) -> None:
    """A refused request raises the Prometheus counter and is stored, so the overview's chart
    of refusals by reason shows it."""
    async with admin_sandbox(tmp_path) as sb:
        refused = await sb.request_call("+44 20 7946 0958")
        assert refused.status_code in (403, 422)
        s = _samples((await sb.http.get("/metrics")).text)
        assert s[("callbridge_policy_refusals_total", (("reason", "country"),))] == 1.0
        overview = await sb.container.operator.service.overview()
        assert overview.refusals == {"country": 1}
        async with signed_in(sb) as client:
            page = await client.get("/admin/overview")
        assert page.status_code == 200 and 'data-testid="chart-refusals"' in page.text
        assert ">country<" in page.text
