"""Operator alerts (security.md 8, 12, 13, 19): a log line, a metric and, with
CALLBRIDGE_ALERT_WEBHOOK_URL, a JSON POST to a real webhook receiver on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from callbridge.adapters.alert_webhook import WebhookAlertSink
from callbridge.metrics import Metrics
from callbridge.services.alerts import Alerts
from tests.security.helpers import BUSY, NUMBERS, STRICT, wait_until
from tests.support.app import running_sandbox
from tests.support.server import serve


@dataclass
class Receiver:
    """A webhook endpoint that records what it got and answers with ``statuses`` in turn."""

    url: str = ""
    bodies: list[dict[str, Any]] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    hits: int = 0


@asynccontextmanager
async def receiver(statuses: list[int] | None = None) -> AsyncIterator[Receiver]:
    got = Receiver(statuses=list(statuses or []))

    async def hook(request: Request) -> Response:
        got.hits += 1
        status = got.statuses.pop(0) if got.statuses else 200
        if status == 200:
            got.bodies.append(await request.json())
        return Response(status_code=status)

    async with serve(Starlette(routes=[Route("/hook", hook, methods=["POST"])])) as base:
        got.url = f"{base}/hook"
        yield got


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def test_an_alert_is_posted_as_json_with_a_text_line() -> None:
    """The receiver gets one POST whose ``text`` names the kind and the summary, with the
    details beside it; the metric counts the alert and the delivery."""
    metrics = Metrics()
    async with receiver() as hook, httpx.AsyncClient() as http:
        alerts = Alerts(sink=WebhookAlertSink(http, hook.url), metrics=metrics)
        await alerts.start()
        alerts.raise_alert("kill_switch", "New calls are switched off.", reason="usage trigger")
        await wait_until(lambda: len(hook.bodies) == 1)
        await alerts.stop()
    body = hook.bodies[0]
    assert body["text"] == "callbridge alert (kill_switch): New calls are switched off."
    assert (body["kind"], body["details"], body["held_back"]) == (
        "kill_switch", {"reason": "usage trigger"}, 0,
    )  # fmt: skip
    assert sample(metrics, "callbridge_alerts_total", kind="kill_switch") == 1
    assert sample(metrics, "callbridge_alert_deliveries_total", outcome="sent") == 1


async def test_a_burst_of_one_kind_sends_one_notification_per_repeat_period() -> None:
    """Three alerts of one kind within the repeat period send one notification; another
    kind is not held back; after the period the next one says how many were held back.
    Every alert is still counted."""
    metrics, clock = Metrics(), FakeClock()
    async with receiver() as hook, httpx.AsyncClient() as http:
        sink = WebhookAlertSink(http, hook.url)
        alerts = Alerts(sink=sink, metrics=metrics, repeat_s=300, clock=clock)
        await alerts.start()
        for _ in range(3):
            alerts.raise_alert("spend_cap", "The daily spend cap is reached.")
        alerts.raise_alert("country_daily", "Calls to +1 reached their daily limit.")
        clock.now += 300
        alerts.raise_alert("spend_cap", "The daily spend cap is reached.")
        await alerts.stop()
    assert [(b["kind"], b["held_back"]) for b in hook.bodies] == [
        ("spend_cap", 0), ("country_daily", 0), ("spend_cap", 2),
    ]  # fmt: skip
    assert "2 more of these" in hook.bodies[2]["text"]
    assert sample(metrics, "callbridge_alerts_total", kind="spend_cap") == 4


async def test_a_failed_delivery_is_retried_then_given_up_without_naming_the_url() -> None:
    """A 500 then a 200 delivers on the second try; three 503s give up, count a failure and
    log the status, never the (secret) webhook URL."""
    metrics = Metrics()
    async with receiver([500, 200, 503, 503, 503]) as hook, httpx.AsyncClient() as http:
        alerts = Alerts(
            sink=WebhookAlertSink(http, hook.url), metrics=metrics, repeat_s=0, backoff_s=0.01
        )
        await alerts.start()
        with structlog.testing.capture_logs() as logs:
            alerts.raise_alert("blocked_by_provider", "Twilio refused a destination.")
            await wait_until(lambda: len(hook.bodies) == 1)
            alerts.raise_alert("blocked_by_provider", "Twilio refused a destination.")
            await wait_until(
                lambda: sample(metrics, "callbridge_alert_deliveries_total", outcome="failed") == 1
            )
        await alerts.stop()
    assert hook.hits == 5
    assert sample(metrics, "callbridge_alert_deliveries_total", outcome="sent") == 1
    failures = [entry for entry in logs if entry["event"] == "alert_delivery_failed"]
    assert [entry["error"] for entry in failures] == [
        "the alert webhook answered 500",
        "the alert webhook answered 503",
        "the alert webhook answered 503",
        "the alert webhook answered 503",
    ]
    assert hook.url not in repr(logs)


async def test_an_unreachable_webhook_never_delays_a_request() -> None:
    """raise_alert returns at once even when the receiver does not answer; a full queue
    drops notifications (counted), never the alert's log line or count."""
    metrics = Metrics()
    never = asyncio.Event()

    async def slow(request: Request) -> Response:
        await never.wait()
        return Response()

    app = Starlette(routes=[Route("/hook", slow, methods=["POST"])])
    async with serve(app) as base, httpx.AsyncClient() as http:
        alerts = Alerts(
            sink=WebhookAlertSink(http, f"{base}/hook"), metrics=metrics, repeat_s=0, queue_size=2
        )
        await alerts.start()
        for _ in range(5):
            alerts.raise_alert("spend_cap", "The daily spend cap is reached.")
        assert sample(metrics, "callbridge_alerts_total", kind="spend_cap") == 5
        await wait_until(
            lambda: sample(metrics, "callbridge_alert_deliveries_total", outcome="dropped") >= 2
        )
        await alerts.stop()
        never.set()


async def test_the_server_alerts_on_spend_cap_provider_blocks_ranges_and_the_kill_switch() -> None:
    """End to end: a spend-cap refusal, a Twilio geo-permission refusal (21215), a full
    number range and a tripped kill switch each reach the webhook once, with masked
    numbers only."""
    async with receiver() as hook:
        env = {
            **STRICT,
            **BUSY,
            "CALLBRIDGE_ALERT_WEBHOOK_URL": hook.url,
            "CALLBRIDGE_DAILY_SPEND_CAP_CENTS": "200",
            "CALLBRIDGE_PER_PREFIX_DAILY": "1",
        }
        async with running_sandbox(env) as sb:
            assert (await sb.request_call(NUMBERS[0])).status_code == 200
            assert (await sb.request_call("+12025560140")).status_code == 503  # spend cap
            assert (await sb.request_call(NUMBERS[1])).status_code == 429  # the range is full
            await wait_until(lambda: len(hook.bodies) == 2)
        env = {**env, "CALLBRIDGE_DAILY_SPEND_CAP_CENTS": "100000"}
        async with running_sandbox(env) as sb:
            sb.twilio.refuse_number(NUMBERS[2], 400, 21215, "Account not authorized to call")
            assert (await sb.request_call(NUMBERS[2])).status_code == 422
            await sb.container.safety.killswitch.trip("Twilio usage trigger")
            await wait_until(lambda: len(hook.bodies) == 4)
            metrics = (await sb.http.get("/metrics")).text
    kinds = {body["kind"]: body for body in hook.bodies}
    assert set(kinds) == {"spend_cap", "prefix_daily", "blocked_by_provider", "kill_switch"}
    assert kinds["prefix_daily"]["details"] == {"number_range": "+1202555xxxx"}
    assert kinds["blocked_by_provider"]["details"]["provider_code"] == 21215
    assert kinds["blocked_by_provider"]["details"]["to"].endswith(NUMBERS[2][-4:])
    assert not [n for n in NUMBERS[:3] if n in repr(hook.bodies)]
    assert 'callbridge_alerts_total{kind="kill_switch"} 1.0' in metrics
