"""The soak's verdict: invariants over what happened, never timings.

Each check returns an :class:`Invariant`: PASS, FAIL or NOT MEASURABLE (``ok is
None``: what it checks does not exist yet), one line of figures and a few examples of
what broke it. The checks (issue 11, part 7):

1. **terminal** — every call is terminal on our side within ``settle_s`` of its real
   end (Twilio's ``end_time``; for a call Twilio never created, the request's answer),
   its ``ended_at`` is Twilio's end time (to the second Twilio gives), and its status
   is the one Twilio reports.
2. **slots** — no concurrency slot is held once every call has ended: no unexpired
   member in Redis's in-flight sets, no open spend reservation.
3. **spend** — today's settled spend, in the spend ledger (``spend_ledger``) and the
   quota store's day counter, equals the sum of the calls' prices (each price to the
   cent, rounded either way).
4. **refusals** — every limit refusal (``policy_refusals``) is for a limit the real
   traffic reached: the concurrency cap only when that many calls held a slot (live at
   Twilio, or ended there but not yet seen ended here: a final callback an outage held up),
   the spend cap only when the real spend plus the live calls' reservations reached
   it, a counted limit only when that many requests were really made.
5. **5xx** — no 5xx but the documented 503s, as the traffic saw them and in nginx's
   log; requests nginx could not pass to the server killed by ``kill -9`` (in flight
   on it) are counted apart, as that fault's direct effect.
6. **webhooks** — every status callback (CallSid, CallStatus, SequenceNumber) nginx
   saw is recorded once in the call's timeline, and one answered 5xx was retried
   until it was stored.
7. **transcripts** — every call that was answered and bridged has its turns stored,
   unless its callee hung up before a word was said: a bridged call whose agent
   conversation ElevenLabs reports (in the post-call webhook nginx saw) with an empty
   transcript has nothing to store, and is counted apart. A bridged call without
   turns whose conversation ElevenLabs reports with turns, or never reported, lost
   its transcript. (The ``answer`` callee hangs up ten seconds after answering, and
   the consent prompt takes about nine of them: its stream may last about a second,
   and when it lands on the server that did not pre-warm the agent, the agent may
   not have said its first words by then.)
8. **servers** — both servers started together on an empty database, and stayed up
   (but for the one killed on purpose).
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from callbridge.domain.quotas import hashed
from callbridge.soak.evidence import Evidence, OurCall
from callbridge.soak.faults import FaultRecord
from callbridge.soak.profile import SoakProfile
from callbridge.soak.traffic import Attempt

HOUR = 3600
DAY = 86400
#: Seconds of slack when deciding whether a call was live at a refusal: a call's slot is
#: taken a moment before Twilio creates it, and freed a moment after Twilio ends it.
LIVE_SLACK_S = 2.0
#: ``ended_at`` may differ from Twilio's ``end_time`` by this much (Twilio gives seconds).
END_TIME_SLACK_S = 2.0
#: The 503 error codes the API documents (outages and overload; the policy's own
#: capacity and spend refusals are 503 ``policy_rejected`` and judged by check 4).
DOCUMENTED_503 = frozenset({"unavailable", "overloaded", "policy_rejected"})
_EXAMPLES = 5


@dataclass(slots=True)
class Invariant:
    """One check's verdict."""

    name: str
    ok: bool | None
    figures: str
    examples: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        """PASS, FAIL or N/A."""
        return "N/A" if self.ok is None else ("PASS" if self.ok else "FAIL")


@dataclass(frozen=True, slots=True)
class Context:
    """What the checks need besides the evidence."""

    profile: SoakProfile
    attempts: Sequence[Attempt]
    faults: Sequence[FaultRecord]
    limits: dict[str, str]
    key: bytes
    killed_upstream: str
    start_failures: Sequence[str]
    crashed: Sequence[str] = ()


def _examples(items: Iterable[str]) -> list[str]:
    return list(items)[:_EXAMPLES]


def _ts(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


_SAME_STATUS = {"completed": {"completed", "agent_failed"}}


def check_terminal(ev: Evidence, ctx: Context) -> Invariant:
    """Invariant 1 (see the module docstring)."""
    late, off, wrong, open_ = [], [], [], []
    lags: list[float] = []
    offsets: list[float] = []
    done_by_call = {a.call_id: a.done for a in ctx.attempts if a.call_id}
    for call in ev.calls:
        real = ev.twilio.get(call.call_sid or "")
        real_end = _ts(real.end_time) if real else done_by_call.get(call.id)
        if real is not None and real.end_time is None:
            open_.append(f"{call.id}: Twilio still has it {real.status}")
            continue
        seen = ev.first_terminal.get(call.id)
        if real_end is None:
            real_end = _ts(call.created_at)
        if seen is None:
            late.append(
                f"{call.id}: still {call.status} (Twilio: "
                f"{real.status if real else 'never created'})"
            )
        else:
            lag = max(0.0, seen - (real_end or seen))
            lags.append(lag)
            if lag > ctx.profile.settle_s:
                late.append(f"{call.id}: terminal {lag:.0f} s after its real end")
        if real is not None:
            if call.status not in _SAME_STATUS.get(real.status, {real.status}) and (
                call.status
                in {"completed", "busy", "no-answer", "canceled", "failed", "agent_failed"}
            ):
                wrong.append(f"{call.id}: ours {call.status}, Twilio's {real.status}")
            if call.ended_at is None:
                if seen is not None:
                    off.append(f"{call.id}: no ended_at")
            else:
                offset = abs(call.ended_at.timestamp() - (_ts(real.end_time) or 0))
                offsets.append(offset)
                if offset > END_TIME_SLACK_S:
                    off.append(f"{call.id}: ended_at {offset:.0f} s from Twilio's end time")
    ours = {c.call_sid for c in ev.calls if c.call_sid}
    unknown = [
        f"{sid}: Twilio has a {real.status} call we never recorded"
        for sid, real in ev.twilio.items()
        if sid not in ours
    ]
    bad = late + off + wrong + open_ + unknown
    figures = (
        f"{len(ev.calls)} calls; {len(late)} not terminal within {ctx.profile.settle_s:.0f} s "
        f"(max lag {max(lags, default=0):.0f} s); {len(off)} ended_at off Twilio's "
        f"(max {max(offsets, default=0):.0f} s); {len(wrong)} status unlike Twilio's"
        + (f"; {len(open_)} never ended at Twilio" if open_ else "")
        + f"; {len(unknown)} Twilio calls unknown to us"
    )
    return Invariant("terminal with Twilio's end time", not bad, figures, _examples(bad))


def check_slots(ev: Evidence, ctx: Context) -> Invariant:
    """Invariant 2 (see the module docstring)."""
    held = sum(ev.redis_held.values())
    examples = [f"{key}: {count}" for key, count in sorted(ev.redis_held.items())]
    return Invariant(
        "no slot held",
        held == 0,
        f"{held} slots or reservations still held in Redis",
        _examples(examples),
    )


def _ledger_cents(rows: list[dict[str, object]]) -> tuple[float, str] | None:
    """Today's settled spend in the ledger: per row, actual, else estimated, else reserved.

    Amounts in a ``*_micros`` column are µUSD (10,000 to the cent), otherwise cents; a
    ``day`` column keeps today's rows only.
    """
    today = datetime.now(UTC).date()
    rows = [r for r in rows if "day" not in r or str(r["day"]) == today.isoformat()]
    if not rows:
        return 0.0, "no rows"
    columns = list(rows[0])

    def pick(word: str) -> str | None:
        return next((c for c in columns if word in c.lower()), None)

    actual, estimated, reserved = pick("actual"), pick("estimat"), pick("reserv")
    if actual is None and estimated is None:
        return None
    total = 0.0
    for row in rows:
        for column in (actual, estimated, reserved):
            value = row.get(column) if column else None
            if value is not None:
                scale = 10_000 if column and column.endswith("micros") else 1
                total += float(str(value)) / scale
                break
    return total, f"columns {actual}/{estimated}/{reserved}"


def _cents(value: float | None) -> str:
    return "none" if value is None else f"{value:.1f}"


def check_spend(ev: Evidence, ctx: Context) -> Invariant:
    """Invariant 3 (see the module docstring)."""
    prices = [c.price_cents for c in ev.twilio.values() if c.price_cents]
    exact = sum(prices)
    # Kept in cents, each price may be rounded either way; kept in µUSD, it is exact.
    low = sum(math.floor(p) for p in prices)
    high = sum(math.ceil(p) for p in prices)
    counter = ev.redis_spend_cents
    if ev.redis_spend_exact:
        counter_ok = counter is not None and abs(counter - exact) < 0.01
    else:
        counter_ok = counter is not None and low <= counter <= high
    figures = (
        f"calls' prices {exact:.1f} cents ({len(prices)} priced calls); "
        f"quota store's day counter {_cents(counter)} cents"
    )
    if ev.ledger is None:
        return Invariant(
            "spend settled to the prices",
            None,
            figures + "; no spend_ledger table yet: not yet measurable",
            [] if counter_ok else [f"day counter {_cents(counter)} is not {low}..{high}"],
        )
    ledger = _ledger_cents(ev.ledger)
    if ledger is None:
        return Invariant(
            "spend settled to the prices",
            False,
            figures + "; spend_ledger has no actual/estimated column",
        )
    total, how = ledger
    in_micros = "micros" in how
    ledger_ok = abs(total - exact) < 0.01 if in_micros else low <= total <= high
    want = f"{exact:.1f}" if in_micros else f"{low}..{high}"
    examples = []
    if not ledger_ok:
        examples.append(f"ledger {total:.1f} cents ({how}) is not {want}")
    if not counter_ok:
        want = f"{exact:.1f}" if ev.redis_spend_exact else f"{low}..{high}"
        examples.append(f"day counter {_cents(counter)} is not {want}")
    return Invariant(
        "spend settled to the prices",
        ledger_ok and counter_ok,
        figures + f"; ledger {total:.1f} cents",
        examples,
    )


def _real_end(call: OurCall, ev: Evidence, done: dict[str, float]) -> float:
    real = ev.twilio.get(call.call_sid or "")
    if real is not None:
        return _ts(real.end_time) or float("inf")
    if call.ended_at is not None:
        return call.ended_at.timestamp()
    return done.get(call.id, call.created_at.timestamp())


def check_refusals(ev: Evidence, ctx: Context) -> Invariant:
    """Invariant 4 (see the module docstring)."""
    limits = {k.removeprefix("CALLBRIDGE_").lower(): int(v) for k, v in ctx.limits.items()}
    attempts = sorted(ctx.attempts, key=lambda a: a.sent)
    by_hash = {hashed(a.call.number, ctx.key): a.call.number for a in attempts}
    done = {a.call_id: a.done for a in attempts if a.call_id}
    # A call holds its slot until we learn of its end, not until Twilio's end: after an
    # outage the final callbacks are applied late, and until then the slot is rightly
    # held. The harness's first sight of the terminal row bounds when that was.
    spans = [
        (c.created_at.timestamp(), max(_real_end(c, ev, done), ev.first_terminal.get(c.id, 0.0)))
        for c in ev.calls
    ]
    priced = sorted((_ts(t.end_time) or 0.0, t.price_cents or 0.0) for t in ev.twilio.values())
    reservation = ctx.profile.reservation_cents
    unjustified: list[str] = []
    reasons: Counter[str] = Counter()

    def sent_before(at: float, window: int, key: Callable[[Attempt], str], value: str) -> int:
        return sum(1 for a in attempts if at - window <= a.sent < at and key(a) == value)

    for refusal in ev.refusals:
        at = refusal.at.timestamp()
        reasons[refusal.reason] += 1
        number = by_hash.get(refusal.number_hash or "")
        live = sum(1 for start, end in spans if start <= at and end >= at - LIVE_SLACK_S)
        why: str | None
        if refusal.reason == "capacity":
            cap = limits["max_concurrent_calls"]
            why = None if live >= cap else f"{live} calls holding a slot, cap {cap}"
        elif refusal.reason == "spend_cap":
            spent = sum(p for end, p in priced if end <= at)
            need = spent + reservation * (live + 1)
            cap = limits["daily_spend_cap_cents"]
            why = (
                None
                if need > cap
                else (
                    f"real spend {spent:.1f} + {live + 1} reservations of {reservation} "
                    f"= {need:.0f} cents, cap {cap}"
                )
            )
        elif refusal.reason == "country_daily":
            count = sent_before(at, DAY, lambda a: a.call.number[:2], "+1")
            cap = limits["per_country_daily"]
            why = None if count >= cap else f"{count} requests to +1 before it, limit {cap}"
        elif refusal.reason == "prefix_daily" and number is not None:
            count = sent_before(at, DAY, lambda a: a.call.prefix, number[:-4])
            cap = limits["per_prefix_daily"]
            why = None if count >= cap else f"{count} requests to its range, limit {cap}"
        elif refusal.reason.startswith("number_") and number is not None:
            count = sent_before(at, DAY, lambda a: a.call.number, number)
            why = None if count >= 1 else "the number's first request"
        elif refusal.reason in {"ip_hourly", "ip_block_hourly", "distinct_numbers"}:
            per_ip = Counter(a.call.visitor_ip for a in attempts if at - HOUR <= a.sent <= at)
            top = max(per_ip.values(), default=0)
            why = None if top >= 3 else f"at most {top} requests from one visitor"
        else:
            why = "the traffic never asks for what this refuses"
        if why is not None:
            unjustified.append(
                f"{refusal.reason} at {datetime.fromtimestamp(at, UTC):%H:%M:%S}: {why}"
            )
    refused_by_traffic = sum(1 for a in ctx.attempts if a.code == "policy_rejected")
    by_reason = ", ".join(f"{r} {n}" for r, n in reasons.most_common()) or "none"
    figures = (
        f"{len(ev.refusals)} refusals recorded ({by_reason}), "
        f"{refused_by_traffic} seen by the traffic; {len(unjustified)} for a limit not reached"
    )
    return Invariant(
        "refusals only at limits reached", not unjustified, figures, _examples(unjustified)
    )


def _kill_window(ctx: Context) -> tuple[float, float] | None:
    for fault in ctx.faults:
        if fault.name.startswith("kill -9") and fault.started:
            return fault.started - 1.0, (fault.recovered or fault.lifted or fault.started) + 1.0
    return None


def check_5xx(ev: Evidence, ctx: Context) -> Invariant:
    """Invariant 5 (see the module docstring)."""
    bad: list[str] = []
    seen = Counter[str]()
    for a in ctx.attempts:
        if a.error is not None:
            bad.append(f"call {a.call.index}: no answer ({a.error[:60]})")
        elif a.status is not None and a.status >= 500:
            seen[f"{a.status} {a.code}"] += 1
            if not (a.status == 503 and a.code in DOCUMENTED_503):
                bad.append(f"call {a.call.index}: {a.status} {a.code or a.body}")
    window = _kill_window(ctx)
    by_kill = 0
    logged = Counter[str]()
    for line in ev.nginx:
        if line.status < 500:
            continue
        logged[f"{line.status} {line.method} {line.uri}"] += 1
        from_us = line.upstream_status.split(",")[-1].strip() == str(line.status)
        if line.status == 503 and from_us:
            continue
        if (
            window is not None
            and window[0] <= line.t <= window[1]
            and ctx.killed_upstream in line.upstream
        ):
            by_kill += 1
            continue
        bad.append(
            f"nginx {line.status} {line.method} {line.uri} "
            f"(upstream {line.upstream} {line.upstream_status})"
        )
    kinds = ", ".join(f"{k}: {n}" for k, n in seen.most_common()) or "none"
    figures = (
        f"traffic saw {sum(seen.values())} 5xx ({kinds}); "
        f"nginx logged {sum(logged.values())} 5xx, {by_kill} in flight on the killed server; "
        f"{len(bad)} undocumented"
    )
    return Invariant("no 5xx but documented 503s", not bad, figures, _examples(bad))


def check_webhooks(ev: Evidence, ctx: Context) -> Invariant:
    """Invariant 6 (see the module docstring)."""
    deliveries: dict[tuple[str, str, str], list[int]] = defaultdict(list)
    for line in ev.nginx:
        if line.method == "POST" and line.uri == "/api/call/status":
            form = line.form()
            key = (
                form.get("CallSid", ""),
                form.get("CallStatus", ""),
                form.get("SequenceNumber", ""),
            )
            deliveries[key].append(line.status)
    by_sid = {c.call_sid: c.id for c in ev.calls if c.call_sid}
    lost, missing, doubled = [], [], []
    retried = 0
    for (sid, status, seq), statuses in deliveries.items():
        if len(statuses) > 1:
            retried += 1
        call_id = by_sid.get(sid)
        recorded = [
            e
            for e in ev.events.get(call_id or "", [])
            if e[0] == "twilio" and e[1] == status and str(e[2]) == seq
        ]
        if not any(200 <= s < 300 for s in statuses):
            lost.append(f"{sid} {status} #{seq}: answered {statuses}, never stored")
        elif len(recorded) == 0:
            missing.append(f"{sid} {status} #{seq}: answered {statuses}, not in the timeline")
        if len(recorded) > 1:
            doubled.append(f"{sid} {status} #{seq}: {len(recorded)} times in the timeline")
    bad = lost + missing + doubled
    figures = (
        f"{len(deliveries)} status callbacks ({retried} delivered more than once); "
        f"{len(lost)} never answered 2xx, {len(missing)} answered but not recorded, "
        f"{len(doubled)} recorded twice"
    )
    return Invariant("every webhook processed once", not bad, figures, _examples(bad))


def postcall_turns(ev: Evidence) -> dict[str, int]:
    """Turns per agent conversation, as ElevenLabs's post-call transcription webhooks
    (in nginx's log) report them; a body that cannot be read is left out."""
    turns: dict[str, int] = {}
    for line in ev.nginx:
        if line.method != "POST" or line.uri != "/api/webhooks/elevenlabs":
            continue
        try:
            body = json.loads(line.body)
        except ValueError:
            continue
        if not isinstance(body, dict) or body.get("type") != "post_call_transcription":
            continue
        data = body.get("data")
        if not isinstance(data, dict):
            continue
        conversation, transcript = data.get("conversation_id"), data.get("transcript")
        if isinstance(conversation, str) and isinstance(transcript, list):
            turns[conversation] = len(transcript)
    return turns


def check_transcripts(ev: Evidence, ctx: Context) -> Invariant:
    """Invariant 7 (see the module docstring)."""
    bridged = [c for c in ev.calls if c.stream_sid or c.stream_token_used]
    reported = postcall_turns(ev)
    silent, lost = [], []
    for call in bridged:
        if call.turns:
            continue
        said = reported.get(call.agent_conversation_id or "")
        if said == 0:
            silent.append(call)
        else:
            lost.append((call, said))
    expected = {a.call_id for a in ctx.attempts if a.call_id and a.call.behaviour.bridged}
    figures = (
        f"{len(bridged)} calls bridged ({len(expected)} accepted calls to answering callees); "
        f"{len(silent)} ended before the agent said a word (ElevenLabs: no turns); "
        f"{len(lost)} without the turns ElevenLabs reported or never reported"
    )
    return Invariant(
        "bridged calls have transcripts",
        not lost,
        figures,
        _examples(
            f"{c.id}: {c.status}, no turns; ElevenLabs: "
            + ("no post-call transcript seen" if said is None else f"{said} turns")
            for c, said in lost
        ),
    )


def check_startup(ev: Evidence, ctx: Context) -> Invariant:
    """Invariant 8 (see the module docstring)."""
    return Invariant(
        "servers start together and stay up",
        not ctx.start_failures and not ctx.crashed,
        f"{len(ctx.start_failures)} of 2 servers failed at the shared start, "
        f"{len(ctx.crashed)} exited on their own",
        _examples([*ctx.start_failures, *ctx.crashed]),
    )


CHECKS = (
    check_terminal,
    check_slots,
    check_spend,
    check_refusals,
    check_5xx,
    check_webhooks,
    check_transcripts,
    check_startup,
)


def judge(ev: Evidence, ctx: Context) -> list[Invariant]:
    """Every invariant, in the module docstring's order."""
    return [check(ev, ctx) for check in CHECKS]
