"""The soak's traffic: a compressed day of visitors asking for calls, through nginx.

:func:`plan_traffic` spreads the profile's calls over its duration, busier in the
middle (a day's peak), each to its own fictional 555-01xx number in the area code of
its callee behaviour, each from its own visitor (an address of the IPv6
documentation range, eight to a /64). :class:`TrafficGenerator` plays the plan as a
browser would (``GET /api/call/session``, then ``POST /api/call/outbound`` with the
token and an ``Origin``), through nginx with ``X-Forwarded-For``, and keeps every
answer as an :class:`Attempt`. A refused request is not retried: a visitor who is
told to come back later is a visitor lost, and the summary counts them.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from callbridge.soak.profile import NUMBERS_PER_AREA_CODE, Behaviour, SoakProfile


@dataclass(frozen=True, slots=True)
class PlannedCall:
    """One call request of the plan."""

    index: int
    at_s: float
    number: str
    behaviour: Behaviour
    visitor_ip: str

    @property
    def prefix(self) -> str:
        """The number's range as the quotas count it (without its last four digits)."""
        return self.number[:-4]


@dataclass(slots=True)
class Attempt:
    """What the traffic saw for one planned call.

    Attributes:
        call: the plan entry.
        sent: when the session request was sent (epoch seconds).
        done: when the call request was answered (epoch seconds).
        status: the HTTP status of the call request (or of the session request when
            that failed), ``None`` when no answer came.
        code: the error ``code`` of a refusal, if any.
        call_id: our call id, when the call was accepted.
        call_sid: Twilio's call SID, when the call was accepted.
        error: a transport error, if no answer came.
        retry_after: the ``Retry-After`` of a refusal.
        session_status: the HTTP status of the session request.
    """

    call: PlannedCall
    sent: float = 0.0
    done: float = 0.0
    status: int | None = None
    code: str | None = None
    call_id: str | None = None
    call_sid: str | None = None
    error: str | None = None
    retry_after: str | None = None
    session_status: int | None = None
    body: dict[str, Any] = field(default_factory=dict)

    @property
    def accepted(self) -> bool:
        """Whether the call was placed."""
        return self.call_id is not None and self.status is not None and self.status < 300


def _day_shape(x: float) -> float:
    """Cumulative share of the day's requests by fraction ``x`` of it (peak at noon)."""
    # density 0.4 + sin(pi x), normalised over [0, 1]
    total = 0.4 + 2 / math.pi
    return (0.4 * x + (1 - math.cos(math.pi * x)) / math.pi) / total


def _at(share: float) -> float:
    lo, hi = 0.0, 1.0
    for _ in range(40):
        mid = (lo + hi) / 2
        if _day_shape(mid) < share:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def plan_traffic(profile: SoakProfile, seed: int = 11) -> list[PlannedCall]:
    """The profile's calls, in time order, each to its own number (see the module docstring)."""
    rng = random.Random(seed)  # noqa: S311 - a reproducible plan, not a secret
    kinds: list[Behaviour] = []
    numbers: dict[str, list[str]] = {}
    for behaviour in profile.behaviours:
        count = profile.planned(behaviour)
        kinds.extend([behaviour] * count)
        pool = [
            f"+1{ac}55501{n:02d}"
            for n in range(NUMBERS_PER_AREA_CODE)
            for ac in behaviour.area_codes  # round-robin over the area codes
        ]
        numbers[behaviour.name] = pool[:count]
    rng.shuffle(kinds)
    for pool in numbers.values():
        rng.shuffle(pool)
    plan: list[PlannedCall] = []
    for index, behaviour in enumerate(kinds):
        at = _at((index + 0.5) / len(kinds)) * profile.duration_s
        ip = f"2001:db8:0:{index // 8:x}::{index % 8 + 1:x}"
        plan.append(PlannedCall(index, at, numbers[behaviour.name].pop(), behaviour, ip))
    return plan


def callee_book(profile: SoakProfile) -> str:
    """``CALLBRIDGE_SANDBOX_CALLEES`` for the profile: one prefix entry per area code."""
    return ";".join(f"+1{ac}555*={b.script}" for b in profile.behaviours for ac in b.area_codes)


class TrafficGenerator:
    """Plays a plan against ``base_url`` (nginx) and keeps every :class:`Attempt`."""

    def __init__(self, base_url: str, plan: list[PlannedCall]) -> None:
        self._base = base_url.rstrip("/")
        self._plan = plan
        self.attempts: list[Attempt] = [Attempt(call) for call in plan]

    async def run(self, started: float) -> None:
        """Send every planned request at its time after ``started`` (epoch seconds)."""
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
        async with httpx.AsyncClient(timeout=30.0, limits=limits) as http:
            tasks = [
                asyncio.create_task(self._one(http, attempt, started)) for attempt in self.attempts
            ]
            await asyncio.gather(*tasks)

    async def _one(self, http: httpx.AsyncClient, attempt: Attempt, started: float) -> None:
        delay = started + attempt.call.at_s - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        call = attempt.call
        headers = {"Origin": self._base, "X-Forwarded-For": call.visitor_ip}
        attempt.sent = time.time()
        try:
            session = await http.get(f"{self._base}/api/call/session", headers=headers)
            attempt.session_status = session.status_code
            if session.status_code != 200:
                self._refused(attempt, session)
                return
            token = session.json()["token"]
            response = await http.post(
                f"{self._base}/api/call/outbound",
                json={
                    "to_number": call.number,
                    "name": f"Visitor {call.index}",
                    "reason": f"soak call {call.index} ({call.behaviour.name})",
                },
                headers=headers | {"X-Callbridge-Token": token},
            )
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            attempt.done = time.time()
            attempt.error = f"{type(exc).__name__}: {exc}"
            return
        attempt.done = time.time()
        attempt.status = response.status_code
        body = _json(response)
        attempt.body = body
        if response.is_success:
            attempt.call_id = str(body.get("call_id") or "") or None
            attempt.call_sid = str(body.get("call_sid") or "") or None
        else:
            self._refused(attempt, response)

    @staticmethod
    def _refused(attempt: Attempt, response: httpx.Response) -> None:
        attempt.done = time.time()
        attempt.status = response.status_code
        body = _json(response)
        attempt.body = body
        error = body.get("error")
        attempt.code = str(error.get("code")) if isinstance(error, dict) else None
        attempt.retry_after = response.headers.get("retry-after")


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {"_text": response.text[:200]}
    return body if isinstance(body, dict) else {"_json": body}
