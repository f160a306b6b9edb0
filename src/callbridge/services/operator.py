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

from callbridge.adapters.db.do_not_call import DoNotCallChange, DoNotCallEntry
from callbridge.adapters.db.queries import (
    CallDetail,
    CallFilter,
    ForgetResult,
    OperatorQueries,
    Overview,
    PurgeResult,
    normalise_number,
)
from callbridge.domain.call import NO_CONSENT, OPTED_OUT, Call, is_call_id, outcome_of
from callbridge.domain.phone import normalise
from callbridge.domain.policy import QuietHours
from callbridge.domain.price import format_price
from callbridge.domain.privacy import mask_number
from callbridge.domain.quotas import QuotaLimits, hashed
from callbridge.domain.spend import MICROS_PER_DOLLAR
from callbridge.errors import ConfigError, InvalidNumber, NotFound, ValidationFailed
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

    async def resolve_id(self, prefix: str) -> str:
        """The one call whose id is ``prefix`` or starts with it (as ``callbridge calls``
        prints them).

        Raises:
            NotFound: no call's id starts so.
            ValidationFailed: several do (the message lists them, ``code="ambiguous_id"``).
        """
        if not is_call_id(prefix):
            raise NotFound("There is no such call.")
        if await self.queries.call_detail(prefix) is not None:
            return prefix
        found = await self.queries.ids_starting(prefix, limit=11)
        if not found:
            raise NotFound(f"There is no call whose id starts with {prefix}.")
        if len(found) > 1:
            listed = ", ".join(found[:10]) + (", …" if len(found) > 10 else "")
            raise ValidationFailed(
                f"{prefix} is the start of several calls' ids: {listed}. Give more of the id.",
                code="ambiguous_id",
            )
        return found[0]

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

    async def do_not_call_changes(self) -> Sequence[DoNotCallChange]:
        """Who added or removed which (masked) number, newest first."""
        return await self.queries.do_not_call_changes()

    async def change_do_not_call(self, raw_number: str, *, add: bool, who: str) -> tuple[str, bool]:
        """Put a number on the do-not-call list or take it off, for a person; audited
        (a stored record and a log line, the number masked in both).

        Returns:
            The masked number, and whether the list changed.

        Raises:
            ValidationFailed: the text holds no number.
            ConfigError: there is no key to hash numbers with (the server's is random).
        """
        e164 = e164_of(raw_number, self._region)
        if self._key is None:
            raise ConfigError(
                "Set CALLBRIDGE_SECRET_KEY: the do-not-call list is kept as keyed hashes."
            )
        masked = mask_number(e164)
        action = "added" if add else "removed"
        changed = await self.queries.change_do_not_call(
            action, hashed(e164, self._key), masked, who
        )
        _log.info("do_not_call_changed", action=action, number=masked, by=who, changed=changed)
        return masked, changed

    async def remove_do_not_call_entry(self, number_hash: str, *, who: str) -> str | None:
        """Take one listed entry off (by its keyed hash, as the list shows it); audited.

        Returns:
            The entry's masked number, or None if it was not on the list.
        """
        entry = next((e for e in await self.do_not_call() if e.number_hash == number_hash), None)
        if entry is None:
            return None
        changed = await self.queries.change_do_not_call("removed", number_hash, entry.masked, who)
        _log.info(
            "do_not_call_changed", action="removed", number=entry.masked, by=who, changed=changed
        )
        return entry.masked

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
        "outcome": outcome_of(call.status, call.consent),
        "mode": call.mode.value,
        "created_at": _iso(call.created_at),
        "answered_at": _iso(call.answered_at),
        "ended_at": _iso(call.ended_at),
        "duration_s": call.duration_s,
        "price": call.price,
        "price_unit": call.price_unit,
        "price_text": format_price(call.price, call.price_unit),
        "answered_by": call.answered_by,
        "amd_duration_ms": call.amd_duration_ms,
        "message_left": call.message_left,
        "failure_code": call.failure_code,
        "failure_reason": call.failure_reason,
        "provider_error_code": call.provider_error_code,
        "test": call.is_test,
        "scheduled_for": _iso(call.scheduled_for),
        "retry_of": call.retry_of,
        "attempt": call.attempt,
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


_OUTCOME_TEXT = {
    OPTED_OUT: "The callee pressed 9: the number is on the do-not-call list.",
    NO_CONSENT: "The callee did not press 1: the agent never joined.",
}


def outcome_events(call: Call) -> list[dict[str, Any]]:
    """The timeline's last entry for a call that ended as ``opted_out`` or ``no_consent``
    (derived from the stored consent and status, so older calls get it too)."""
    outcome = outcome_of(call.status, call.consent)
    if outcome not in _OUTCOME_TEXT:
        return []
    at = call.ended_at or call.answered_at or call.created_at
    return [
        {
            "at": at.isoformat(),
            "source": "outcome",
            "status": outcome,
            "sequence_number": None,
            "detail": {"outcome": _OUTCOME_TEXT[outcome]},
        }
    ]


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
        "timeline": [event_view(e) for e in detail.events] + outcome_events(call),
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


#: Settings whose value in force is a field of :class:`QuotaLimits` (by that field's name).
_LIMIT_FIELDS = {
    "per_number_hourly": "per_number_hourly",
    "per_number_daily": "per_number_daily",
    "per_number_cooldown": "per_number_cooldown_s",
    "per_ip_hourly": "per_ip_hourly",
    "per_ip_block_hourly": "per_ip_block_hourly",
    "distinct_numbers_per_ip_daily": "distinct_numbers_per_ip_daily",
    "per_country_daily": "per_country_daily",
    "per_prefix_daily": "per_prefix_daily",
}


@dataclass(frozen=True, slots=True)
class PolicyInForce:
    """What admission enforces (``container.admission``'s own limits and window), which
    the sandbox may relax below what the settings say."""

    limits: QuotaLimits
    quiet_hours: QuietHours | None
    sandbox: bool


def _quiet_text(settings: Settings, policy: PolicyInForce) -> str:
    window = policy.quiet_hours
    if window is None:
        if settings.quiet_hours is None and policy.sandbox:
            return "off (sandbox)"
        return "off"
    return f"{window.start:%H:%M}–{window.end:%H:%M} callee's time"


def _in_force(settings: Settings, name: str, policy: PolicyInForce) -> str | None:
    """The value in force where it is not simply the setting's (None otherwise)."""
    if name == "quiet_hours":
        return _quiet_text(settings, policy)
    field = _LIMIT_FIELDS.get(name)
    if field is None:
        return None
    effective = getattr(policy.limits, field)
    configured = getattr(settings, name)
    if effective == configured:
        return None
    note = f"sandbox; the setting says {configured}" if policy.sandbox else f"set {configured}"
    return f"{effective} ({note})"


def settings_view(settings: Settings, policy: PolicyInForce | None = None) -> list[SettingView]:
    """Every setting in force by its environment name, secrets and numbers masked.

    With ``policy``, the abuse limits and quiet hours show what admission enforces
    (the sandbox relaxes some), not only what the environment says.
    """
    out = []
    for name in sorted(type(settings).model_fields):
        value, is_set = _shown(name, getattr(settings, name))
        effective = _in_force(settings, name, policy) if policy is not None else None
        if effective is not None:
            value, is_set = effective, True
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
