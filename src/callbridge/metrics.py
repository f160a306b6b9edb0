"""Prometheus metrics, one registry per running app (so tests can run many apps)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)
_CONNECT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0)


class FrameTally:
    """The frames one pump forwarded, counted with a plain ``+= 1`` (no lock per frame).

    Only its pump adds to :attr:`count`; what has not reached the Prometheus counter
    yet is added under a lock when the pump ends and before every scrape
    (:meth:`Metrics.render`), so ``callbridge_frames_total`` is exact when read.

    Attributes:
        count: frames counted so far.
    """

    __slots__ = ("_counted", "_counter", "count")

    def __init__(self, counter: Counter) -> None:
        self.count = 0
        self._counted = 0
        self._counter = counter

    def _settle(self) -> None:
        """Add what the counter has not seen yet (under :class:`Metrics`'s tally lock)."""
        count = self.count
        if count > self._counted:
            self._counter.inc(count - self._counted)
            self._counted = count


class Metrics:
    """Every metric callbridge exports at ``/metrics``."""

    def __init__(self) -> None:
        self._tallies: set[FrameTally] = set()
        self._tally_lock = threading.Lock()
        self.registry = CollectorRegistry()
        r = self.registry
        self.calls_final = Counter(
            "callbridge_calls_total", "Calls by final status.", ["status"], registry=r
        )
        self.amd_outcomes = Counter(
            "callbridge_amd_outcomes_total",
            "Finished calls by Twilio's AMD verdict (AnsweredBy) and final status.",
            ["answered_by", "status"],
            registry=r,
        )
        self.amd_detection = Histogram(
            "callbridge_amd_detection_seconds",
            "How long Twilio's AMD took to decide (MachineDetectionDuration), by verdict.",
            ["answered_by"],
            buckets=(0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 21.0, 34.0, 60.0),
            registry=r,
        )
        self.calls_in_progress = Gauge(
            "callbridge_calls_in_progress", "Calls with a live media stream.", registry=r
        )
        self.policy_refusals = Counter(
            "callbridge_policy_refusals_total",
            "Call requests refused, by reason.",
            ["reason"],
            registry=r,
        )
        self.setups_shed = Counter(
            "callbridge_setups_shed_total",
            "Call requests answered 503 overloaded, by reason (in_flight, queue_delay).",
            ["reason"],
            registry=r,
        )
        self.event_loop_lag = Gauge(
            "callbridge_event_loop_lag_seconds",
            "How late the event loop ran the overload gate's last tick.",
            registry=r,
        )
        self.webhook_rejections = Counter(
            "callbridge_webhook_rejections_total",
            "Webhooks refused, by door.",
            ["door"],
            registry=r,
        )
        self.twilio_errors = Counter(
            "callbridge_twilio_errors_total", "Twilio API errors, by code.", ["code"], registry=r
        )
        self.agent_connect = Histogram(
            "callbridge_agent_connect_seconds",
            "Time to open and initialise an agent session.",
            buckets=_CONNECT_BUCKETS,
            registry=r,
        )
        self.first_agent_audio = Histogram(
            "callbridge_first_agent_audio_seconds",
            "From the stream's start to the first agent audio sent to Twilio.",
            buckets=_CONNECT_BUCKETS,
            registry=r,
        )
        self.bridge_latency = Histogram(
            "callbridge_bridge_added_latency_seconds",
            "Time a frame spends inside the bridge, by direction.",
            ["direction"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.frames = Counter(
            "callbridge_frames_total",
            "Audio frames forwarded, by direction.",
            ["direction"],
            registry=r,
        )
        self.writer_queue = Gauge(
            "callbridge_writer_queue",
            "Media-path records (turns, stream events) waiting for the background writer.",
            registry=r,
        )
        self.writer_dropped = Counter(
            "callbridge_writer_dropped_total",
            "Media-path records the background writer dropped, by kind and reason "
            "(full: the queue was full; failed: the database kept failing; refused).",
            ["kind", "reason"],
            registry=r,
        )
        self.writer_timeouts = Counter(
            "callbridge_writer_timeouts_total",
            "Background-writer batches abandoned because the database did not answer in time "
            "(they are retried).",
            registry=r,
        )
        self.job_errors = Counter(
            "callbridge_job_errors_total",
            "Failed runs of a background job (it backs off and goes on), by job.",
            ["job"],
            registry=r,
        )
        self.postcall_reconciled = Counter(
            "callbridge_postcall_reconciled_total",
            "Conversations fetched because their post-call webhook did not come, by outcome.",
            ["outcome"],
            registry=r,
        )

        self.dialing_permission_violations = Gauge(
            "callbridge_dialing_permission_violations",
            "Twilio dialing permissions beyond CALLBRIDGE_ALLOWED_COUNTRIES, at start-up.",
            registry=r,
        )
        self.dialing_permissions_unreadable = Gauge(
            "callbridge_dialing_permissions_unreadable",
            "1 when Twilio's dialing permissions could not be read at start-up.",
            registry=r,
        )

        self.alerts = Counter(
            "callbridge_alerts_total",
            "Operator alerts raised, by kind (each is also an 'alert' log line).",
            ["kind"],
            registry=r,
        )
        self.alert_deliveries = Counter(
            "callbridge_alert_deliveries_total",
            "Alert notifications to CALLBRIDGE_ALERT_WEBHOOK_URL, by outcome.",
            ["outcome"],
            registry=r,
        )
        self.scheduled_calls = Counter(
            "callbridge_scheduled_calls_total",
            "Call-me-later calls by event: scheduled, placed, missed, cancelled, refused"
            " (refused by the policy at their time), retry (a retry scheduled).",
            ["event"],
            registry=r,
        )

    def webhook_rejected(self, door: str) -> None:
        """Count a refused webhook."""
        self.webhook_rejections.labels(door=door).inc()

    def job_failed(self, job: str) -> None:
        """Count one failed run of a background job."""
        self.job_errors.labels(job=job).inc()

    @contextmanager
    def frame_tally(self, direction: str) -> Iterator[FrameTally]:
        """A :class:`FrameTally` for ``callbridge_frames_total{direction}``, for one pump."""
        tally = FrameTally(self.frames.labels(direction=direction))
        with self._tally_lock:
            self._tallies.add(tally)
        try:
            yield tally
        finally:
            with self._tally_lock:
                self._tallies.discard(tally)
                tally._settle()

    def render(self) -> bytes:
        """The text exposition format (every live frame tally settled first)."""
        with self._tally_lock:
            for tally in self._tallies:
                tally._settle()
        return generate_latest(self.registry)
