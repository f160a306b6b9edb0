"""The soak's checks judge evidence as documented: they pass what is right, fail what is not."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from callbridge.soak.evidence import Evidence, LogLine, OurCall, Refusal, TwilioCall
from callbridge.soak.invariants import (
    Context,
    check_refusals,
    check_spend,
    check_terminal,
    check_transcripts,
    check_webhooks,
)
from callbridge.soak.profile import SoakProfile
from callbridge.soak.traffic import Attempt, plan_traffic

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
KEY = b"soak-test-key"


def _profile() -> SoakProfile:
    return SoakProfile(calls=20, duration_s=30, max_concurrent_calls=2)


def _context(attempts: list[Attempt]) -> Context:
    profile = _profile()
    return Context(
        profile=profile,
        attempts=attempts,
        faults=[],
        limits=profile.limits(),
        key=KEY,
        killed_upstream="127.0.0.1:1",
        start_failures=[],
    )


def _call(
    n: int,
    *,
    start: datetime,
    end: datetime | None,
    status: str = "completed",
    ended_at: datetime | None = None,
) -> tuple[OurCall, TwilioCall]:
    sid = f"CA{n:032x}"
    ours = OurCall(
        f"call_{n}",
        sid,
        "+12025550100",
        status,
        None,
        start,
        ended_at if ended_at is not None else end,
        None,
        False,
        0,
    )
    real = TwilioCall(sid, "+12025550100", "completed", start, end, 10, 1.4)
    return ours, real


def _evidence(*pairs: tuple[OurCall, TwilioCall]) -> Evidence:
    ev = Evidence()
    for ours, real in pairs:
        ev.calls.append(ours)
        ev.twilio[real.sid] = real
    return ev


def test_capacity_refusal_passes_only_when_that_many_calls_were_really_live() -> None:
    """A capacity refusal with the cap's number of calls live is justified; one while
    fewer were live (slots leaked) is not."""
    ev = _evidence(
        _call(1, start=T0, end=T0 + timedelta(seconds=60)),
        _call(2, start=T0, end=T0 + timedelta(seconds=20)),
    )
    ev.refusals = [Refusal("capacity", T0 + timedelta(seconds=10), None)]
    assert check_refusals(ev, _context([])).ok is True
    ev.refusals = [Refusal("capacity", T0 + timedelta(seconds=40), None)]
    verdict = check_refusals(ev, _context([]))
    assert verdict.ok is False
    assert "1 calls holding a slot, cap 2" in verdict.examples[0]


def test_capacity_refusal_counts_a_call_whose_end_an_outage_kept_from_us() -> None:
    """A call Twilio ended during a database outage holds its slot until its final
    callback is applied: a capacity refusal before that is justified, one after it
    (the slot should be free) is not."""
    ev = _evidence(
        _call(1, start=T0, end=T0 + timedelta(seconds=60)),
        _call(2, start=T0, end=T0 + timedelta(seconds=20)),
    )
    ev.first_terminal["call_2"] = (T0 + timedelta(seconds=35)).timestamp()  # after the outage
    ev.refusals = [Refusal("capacity", T0 + timedelta(seconds=30), None)]
    assert check_refusals(ev, _context([])).ok is True
    ev.refusals = [Refusal("capacity", T0 + timedelta(seconds=40), None)]
    verdict = check_refusals(ev, _context([]))
    assert verdict.ok is False
    assert "1 calls holding a slot, cap 2" in verdict.examples[0]


def test_a_call_still_open_after_twilio_ended_it_fails_terminal() -> None:
    """A call Twilio completed that we never saw terminal fails; one terminal at once
    with Twilio's end time passes; an ended_at far from Twilio's fails."""
    end = T0 + timedelta(seconds=30)
    good = _call(1, start=T0, end=end)
    stuck = _call(2, start=T0, end=end, status="in-progress", ended_at=None)
    ev = _evidence(good)
    ev.first_terminal = {"call_1": end.timestamp() + 1}
    assert check_terminal(ev, _context([])).ok is True
    ev = _evidence(good, stuck)
    ev.first_terminal = {"call_1": end.timestamp() + 1}
    assert check_terminal(ev, _context([])).ok is False
    late_end = _call(3, start=T0, end=end, ended_at=end + timedelta(minutes=15))
    ev = _evidence(late_end)
    ev.first_terminal = {"call_3": end.timestamp() + 1}
    assert "ended_at 900 s" in check_terminal(ev, _context([])).examples[0]


def test_a_status_callback_answered_500_and_never_retried_is_lost() -> None:
    """A callback answered 2xx and in the timeline passes; one answered 500 only fails."""
    ours, real = _call(1, start=T0, end=T0 + timedelta(seconds=5))
    ev = _evidence((ours, real))
    body = f"CallSid={real.sid}&CallStatus=completed&SequenceNumber=3"
    ev.events = {"call_1": [("twilio", "completed", 3)]}
    ev.nginx = [LogLine(T0.timestamp(), 204, "POST", "/api/call/status", "", "204", body)]
    assert check_webhooks(ev, _context([])).ok is True
    ev.events = {}
    ev.nginx = [LogLine(T0.timestamp(), 500, "POST", "/api/call/status", "", "500", body)]
    verdict = check_webhooks(ev, _context([]))
    assert verdict.ok is False and "never stored" in verdict.examples[0]


def test_spend_is_not_measurable_without_a_ledger_and_judged_with_one() -> None:
    """Without spend_ledger the check says so; with one, the ledger and the day counter
    must both equal the prices to the cent."""
    ev = _evidence(_call(1, start=T0, end=T0 + timedelta(seconds=5)))
    ev.redis_spend_cents = 150
    assert check_spend(ev, _context([])).ok is None
    ev.ledger = [
        {"call_id": "call_1", "reserved_cents": 150, "estimated_cents": 2, "actual_cents": 1}
    ]
    assert check_spend(ev, _context([])).ok is False
    ev.redis_spend_cents = 2
    assert check_spend(ev, _context([])).ok is True


def test_prefix_refusal_is_justified_only_past_the_configured_limit() -> None:
    """A range refused before the traffic sent it as many requests as its limit is a
    wrong counter."""
    from callbridge.domain.quotas import hashed

    plan = plan_traffic(replace(_profile()))
    attempts = [Attempt(p, sent=T0.timestamp() + i) for i, p in enumerate(plan)]
    target = attempts[-1].call
    ev = Evidence()
    ev.refusals = [
        Refusal("prefix_daily", T0 + timedelta(seconds=len(plan)), hashed(target.number, KEY))
    ]
    verdict = check_refusals(ev, _context(attempts))
    assert verdict.ok is False and "requests to its range" in verdict.examples[0]


def test_a_ledger_in_micro_dollars_is_read_as_such() -> None:
    """A ledger kept in µUSD (``*_micros``, 10,000 to the cent) and a µUSD day counter
    equal to the prices pass; today's rows only are summed; a line left at its estimate
    fails."""
    ev = _evidence(_call(1, start=T0, end=T0 + timedelta(seconds=5)))
    today = datetime.now(UTC).date()
    ev.ledger = [
        {
            "call_id": "call_1",
            "day": today,
            "reserved_micros": 1_500_000,
            "estimated_micros": 14_000,
            "actual_micros": 14_000,
        },
        {
            "call_id": "old",
            "day": today - timedelta(days=1),
            "reserved_micros": 1_500_000,
            "estimated_micros": None,
            "actual_micros": None,
        },
    ]
    ev.redis_spend_cents, ev.redis_spend_exact = 1.4, True
    assert check_spend(ev, _context([])).ok is True
    # Settled at its estimate (a minute at the worst rate), not Twilio's price: exact
    # amounts leave no rounding to hide in.
    ev.ledger[0]["actual_micros"] = None
    ev.ledger[0]["estimated_micros"] = 150_000
    ev.redis_spend_cents = 15.0
    assert check_spend(ev, _context([])).ok is False


def _postcall(conversation_id: str, turns: int) -> LogLine:
    """ElevenLabs's post-call transcription webhook as nginx logs it."""
    transcript = [{"role": "agent", "message": "Hi!", "time_in_call_secs": 0}] * turns
    body = json.dumps(
        {
            "type": "post_call_transcription",
            "data": {"conversation_id": conversation_id, "transcript": transcript},
        }
    )
    return LogLine(T0.timestamp(), 200, "POST", "/api/webhooks/elevenlabs", "", "200", body)


def test_a_bridged_call_without_turns_passes_only_if_elevenlabs_heard_nothing_either() -> None:
    """A bridged call the callee left before the agent's first words (ElevenLabs's
    post-call transcript of its conversation is empty) has nothing to store and passes;
    the same call fails when ElevenLabs reports turns we did not store, or when no
    post-call transcript of its conversation was seen to say there were none."""
    ours, real = _call(1, start=T0, end=T0 + timedelta(seconds=11))
    ours = replace(
        ours,
        stream_sid="MZ" + "0" * 32,
        stream_token_used=True,
        agent_conversation_id="conv_bridged",
    )
    ev = _evidence((ours, real))
    # The unused pre-warmed conversation of the same call said its greeting to nobody.
    ev.nginx = [_postcall("conv_bridged", 0), _postcall("conv_prewarmed", 1)]
    verdict = check_transcripts(ev, _context([]))
    assert verdict.ok is True
    assert "1 ended before the agent said a word" in verdict.figures
    ev.nginx = [_postcall("conv_bridged", 2)]
    verdict = check_transcripts(ev, _context([]))
    assert verdict.ok is False and "ElevenLabs: 2 turns" in verdict.examples[0]
    ev.nginx = [_postcall("conv_prewarmed", 0)]
    verdict = check_transcripts(ev, _context([]))
    assert verdict.ok is False and "no post-call transcript seen" in verdict.examples[0]
    ev.calls = [replace(ours, turns=3)]
    assert check_transcripts(ev, _context([])).ok is True
