"""The operator's use cases: look at calls, reveal a number, forget a number, purge old text.

Thin on purpose: the reads are :class:`~callbridge.adapters.db.queries.OperatorQueries`;
this module adds what the operator's doors (``/admin``, the admin API, the CLI) share —
numbers masked unless revealed (and every reveal logged, without the number), secrets
masked in the settings view, and the JSON shape of a call.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import structlog
from pydantic import SecretStr

from callbridge.adapters.db.do_not_call import DoNotCallEntry
from callbridge.adapters.db.queries import (
    CallDetail,
    CallFilter,
    ForgetResult,
    OperatorQueries,
    Overview,
    PurgeResult,
    normalise_number,
)
from callbridge.domain.call import Call, is_call_id
from callbridge.domain.phone import normalise
from callbridge.domain.privacy import mask_number
from callbridge.domain.quotas import hashed
from callbridge.domain.spend import MICROS_PER_DOLLAR
from callbridge.errors import InvalidNumber, NotFound, ValidationFailed
from callbridge.metrics import Metrics
from callbridge.ports import CallEvent, Clock, DaySpend, SpendLedger, TranscriptTurn
from callbridge.settings import Settings

_log = structlog.get_logger(__name__)

#: Settings whose values are never shown, whatever their type.
_SECRET_NAME = re.compile(r"(token|password|secret|api_key)$")
_NUMBER_SETTINGS = frozenset({"twilio_phone_number", "target_phone_number"})
_URL_PASSWORD = re.compile(r"(://[^:/@]*:)[^@]*@")


@dataclass(frozen=True, slots=True)
class SettingView:
    """One setting as the operator may see it."""

    env: str
    value: str
    is_set: bool


def e164_of(raw: str, default_region: str) -> str:
    """The stored form of a number the operator typed.

    Raises:
        ValidationFailed: the text holds no number.
    """
    try:
        return normalise(raw, default_region).e164
    except InvalidNumber:
        plain = normalise_number(raw)
        if plain.startswith("+") and len(plain) >= 8:
            return plain  # a number libphonenumber does not know (e.g. a test range)
        raise ValidationFailed(
            "Give the full number with its country code, like +1 234 567 8900."
        ) from None


@dataclass(frozen=True, slots=True)
class SpendToday:
    """Today's (UTC) spend against the daily cap, from the spend ledger, in USD.

    Attributes:
        settled: calls booked at Twilio's price, or at their estimate until it comes.
        reserved: calls still booked at their worst case (not yet ended).
        calls: calls booked today.
        cap: the daily cap (``CALLBRIDGE_DAILY_SPEND_CAP_CENTS``), ``None`` if none.
    """

    settled: Decimal
    reserved: Decimal
    calls: int
    cap: Decimal | None

    @property
    def total(self) -> Decimal:
        """What counts against the cap."""
        return self.settled + self.reserved

    def as_json(self) -> dict[str, Any]:
        """The API's shape: amounts as decimal strings in USD (exact, never floats)."""
        return {
            "settled": str(self.settled),
            "reserved": str(self.reserved),
            "total": str(self.total),
            "cap": None if self.cap is None else str(self.cap),
            "calls": self.calls,
            "unit": "USD",
        }


class OperatorService:
    """What the operator can do."""

    def __init__(
        self,
        *,
        queries: OperatorQueries,
        clock: Clock,
        key: bytes | None,
        default_region: str = "US",
        metrics: Metrics | None = None,
        spend: SpendLedger | None = None,
        spend_cap_cents: int | None = None,
    ) -> None:
        self.queries = queries
        self._clock = clock
        self._key = key
        self._region = default_region
        self._metrics = metrics
        self._spend = spend
        self._cap_cents = spend_cap_cents

    async def spend_today(self) -> SpendToday:
        """Today's spend (settled and still reserved) against the cap."""
        day = int(self._clock.now().timestamp() // 86_400)
        spend = await self._spend.day_spend(day) if self._spend is not None else DaySpend()
        cap = None if self._cap_cents is None else Decimal(self._cap_cents) / 100
        return SpendToday(
            settled=_dollars(spend.settled),
            reserved=_dollars(spend.reserved),
            calls=spend.calls,
            cap=cap,
        )

    async def calls(self, flt: CallFilter) -> list[Call]:
        """Calls, newest first."""
        return await self.queries.list_calls(flt)

    async def call(self, call_id: str) -> CallDetail:
        """One call in full.

        Raises:
            NotFound: no such call (an id of the wrong shape is not looked up).
        """
        if not is_call_id(call_id):
            raise NotFound("There is no such call.")
        detail = await self.queries.call_detail(call_id)
        if detail is None:
            raise NotFound(f"There is no call {call_id}.")
        return detail

    async def overview(self, days: int = 14) -> Overview:
        """The overview's numbers for the last ``days`` days."""
        return await self.queries.overview(self._clock.now(), days=days)

    def live_refusals(self) -> dict[str, int]:
        """Refusals by reason counted by this process since it started (Prometheus)."""
        if self._metrics is None:
            return {}
        out: dict[str, int] = {}
        for metric in self._metrics.policy_refusals.collect():
            for sample in metric.samples:
                if sample.name.endswith("_total") and sample.value:
                    out[sample.labels.get("reason", "?")] = int(sample.value)
        return out

    async def do_not_call(self) -> Sequence[DoNotCallEntry]:
        """The do-not-call list (masked)."""
        return await self.queries.do_not_call()

    async def reveal(self, call_id: str, *, who: str) -> str:
        """A call's full number, for the operator who asked; the reveal is logged.

        Raises:
            NotFound: no such call.
        """
        detail = await self.call(call_id)
        _log.info("number_revealed", call_id=call_id, by=who)
        return detail.call.to_number

    async def forget(self, raw_number: str, *, include_dnc: bool = False) -> ForgetResult:
        """Delete a number's calls, timelines, transcripts and refusals (security.md F.46).

        Refusals and the do-not-call row are found by the number's keyed hash, so they
        are left alone when the service has no key (``key=None``).

        Raises:
            ValidationFailed: the text holds no number.
        """
        e164 = e164_of(raw_number, self._region)
        number_hash = hashed(e164, self._key) if self._key else None
        result = await self.queries.forget(e164, number_hash=number_hash, include_dnc=include_dnc)
        _log.info(
            "number_forgotten",
            number=mask_number(e164),
            calls=result.calls,
            turns=result.turns,
            do_not_call=result.do_not_call,
        )
        return result

    async def purge(self, days: int) -> PurgeResult:
        """Clear transcripts and chat context older than ``days`` days."""
        result = await self.queries.purge_older_than(days, now=self._clock.now())
        _log.info("retention_purged", days=days, calls=result.calls, turns=result.turns)
        return result


# Views shared by the admin pages, the admin API and the CLI ---------------------------


def _dollars(micros: int) -> Decimal:
    return Decimal(micros) / MICROS_PER_DOLLAR


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def parse_analysis(raw: str | None) -> Any:
    """The stored post-call analysis (JSON when it is JSON, else the text)."""
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def call_summary(call: Call, *, revealed: bool = False) -> dict[str, Any]:
    """A call as one row of a list (the number masked unless ``revealed``)."""
    return {
        "call_id": call.id,
        "to": call.to_number if revealed else mask_number(call.to_number),
        "status": call.status.value,
        "mode": call.mode.value,
        "created_at": _iso(call.created_at),
        "answered_at": _iso(call.answered_at),
        "ended_at": _iso(call.ended_at),
        "duration_s": call.duration_s,
        "price": call.price,
        "price_unit": call.price_unit,
        "answered_by": call.answered_by,
        "failure_code": call.failure_code,
        "failure_reason": call.failure_reason,
        "provider_error_code": call.provider_error_code,
        "test": call.is_test,
    }


def event_view(event: CallEvent) -> dict[str, Any]:
    """One timeline entry."""
    return {
        "at": event.at.isoformat(),
        "source": event.source,
        "status": event.status,
        "sequence_number": event.sequence_number,
        "detail": dict(event.detail),
    }


def turn_view(turn: TranscriptTurn) -> dict[str, Any]:
    """One transcript turn; ``heard_text`` is what the callee heard before barge-in."""
    return {
        "at": turn.at.isoformat(),
        "role": turn.role,
        "text": turn.text,
        "heard_text": turn.heard_text,
        "interrupted": turn.interrupted,
    }


def detail_view(detail: CallDetail) -> dict[str, Any]:
    """A call in full: summary, the web chat's context, timeline, transcript, analysis."""
    call = detail.call
    return {
        **call_summary(call),
        "call_sid": call.call_sid,
        "dialled": mask_number(call.dialled_number),
        "consent": call.consent,
        "agent_conversation_id": call.agent_conversation_id,
        "context": {
            "visitor_name": call.context.visitor_name,
            "reason": call.context.reason,
            "summary": call.context.summary,
            "conversation_id": call.context.conversation_id,
        },
        "timeline": [event_view(e) for e in detail.events],
        "transcript": [turn_view(t) for t in detail.turns],
        "analysis": parse_analysis(call.analysis),
    }


def _env_name(settings: Settings, name: str) -> str:
    alias = type(settings).model_fields[name].validation_alias
    choices = getattr(alias, "choices", None)
    if choices:
        return str(choices[0]).upper()
    return name.upper()


def _shown(name: str, value: Any) -> tuple[str, bool]:
    if value is None or value == "" or value == []:
        return "not set", False
    if isinstance(value, SecretStr) or _SECRET_NAME.search(name):
        return "•••••• (set)", True
    if name in _NUMBER_SETTINGS:
        return mask_number(str(value)), True
    if isinstance(value, list | tuple | frozenset | set):
        return ", ".join(str(v) for v in value), True
    text = str(getattr(value, "value", value))
    if name.endswith("_url"):
        text = _URL_PASSWORD.sub(r"\1•••@", text)
    return text, True


def settings_view(settings: Settings) -> list[SettingView]:
    """Every setting in force by its environment name, secrets and numbers masked."""
    out = []
    for name in sorted(type(settings).model_fields):
        value, is_set = _shown(name, getattr(settings, name))
        out.append(SettingView(env=_env_name(settings, name), value=value, is_set=is_set))
    return sorted(out, key=lambda s: s.env)


def summaries(calls: Sequence[Call]) -> list[dict[str, Any]]:
    """:func:`call_summary` of each call (masked)."""
    return [call_summary(c) for c in calls]


def metric_samples(metrics: Metrics, name: str) -> Mapping[str, float]:
    """A counter's samples by their first label value (for pages and tests)."""
    out: dict[str, float] = {}
    for metric in metrics.registry.collect():
        for sample in metric.samples:
            if sample.name == name:
                label = next(iter(sample.labels.values()), "")
                out[label] = sample.value
    return out
