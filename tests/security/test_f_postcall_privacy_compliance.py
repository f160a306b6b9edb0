"""security.md F: the post-call webhook, consent and opt-out, quiet hours, secrets and logs."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import structlog

from callbridge.adapters.elevenlabs.webhook_signature import HEADER, sign
from tests.security.helpers import BUSY, NUMBERS, count_rows, ended, nothing_placed, wait_until
from tests.support.app import running_sandbox

WEBHOOK_SECRET = "wsec_0123456789abcdef0123456789abcdef"
PATH = "/api/webhooks/elevenlabs"


def _payload(call_id: str, conversation_id: str = "conv_test_1") -> bytes:
    return json.dumps(
        {
            "type": "post_call_transcription",
            "event_timestamp": int(time.time()),
            "data": {
                "agent_id": "agent_sandbox_demo",
                "conversation_id": conversation_id,
                "status": "done",
                "transcript": [
                    {"role": "agent", "message": "Hello, how can I help?", "time_in_call_secs": 0},
                    {"role": "user", "message": "Tell me about pricing.", "time_in_call_secs": 3},
                ],
                "metadata": {
                    "start_time_unix_secs": int(time.time()) - 60,
                    "call_duration_secs": 12,
                    "termination_reason": "ended",
                },
                "analysis": {"call_successful": "success", "transcript_summary": "Pricing."},
                "conversation_initiation_client_data": {"dynamic_variables": {"call_id": call_id}},
            },
        }
    ).encode()


async def _post(sb: Any, body: bytes, header: str | None) -> Any:
    headers = {"Content-Type": "application/json"}
    if header is not None:
        headers[HEADER] = header
    return await sb.http.post(PATH, content=body, headers=headers)


async def test_f41_post_call_webhook_signature_doors_ack_and_once_only() -> None:
    """Bad HMAC, missing header, stale (31 min) or future timestamps are 403 and write
    nothing; a valid delivery is acknowledged in < 1 s and its analysis and transcript attach
    to the call; a duplicate is acknowledged and not processed again. (Without verification
    the forged ones would be written; without the unique key the duplicate twice.)"""
    async with running_sandbox({**BUSY, "ELEVENLABS_WEBHOOK_SECRET": WEBHOOK_SECRET}) as sb:
        response = await sb.request_call(NUMBERS[0])
        call_id = response.json()["call_id"]
        await ended(sb, call_id)
        body = _payload(call_id)
        now = int(time.time())
        for header in (
            None,
            "",
            sign(body, "wrong-secret-0123456789", now),
            sign(body + b" ", WEBHOOK_SECRET, now),
            sign(body, WEBHOOK_SECRET, now - 31 * 60),
            sign(body, WEBHOOK_SECRET, now + 31 * 60),
            f"t={now}",
        ):
            refused = await _post(sb, body, header)
            assert refused.status_code in (401, 403), header
        assert await count_rows(sb, "postcall_webhooks") == 0
        call = await sb.container.store.get_call(call_id)
        assert call is not None and call.analysis is None

        started = time.perf_counter()
        accepted = await _post(sb, body, sign(body, WEBHOOK_SECRET, now - 25 * 60))
        assert accepted.status_code == 200 and time.perf_counter() - started < 1.0
        service = sb.container.postcall
        await wait_until(lambda: service.processed == 1)
        call = await sb.container.store.get_call(call_id)
        assert call is not None and call.analysis is not None
        assert json.loads(call.analysis)["analysis"]["call_successful"] == "success"
        assert call.agent_conversation_id == "conv_test_1"
        turns = await sb.container.store.turns(call_id)
        assert [t.role for t in turns] == ["agent", "user"]

        again = await _post(sb, body, sign(body, WEBHOOK_SECRET, now))
        assert again.status_code == 200
        await asyncio.sleep(0.2)
        await service.drain()
        assert service.processed == 1
        assert len(await sb.container.store.turns(call_id)) == 2
        assert await count_rows(sb, "postcall_webhooks") == 1


async def test_f41_post_call_webhooks_are_refused_without_a_secret() -> None:
    """With no ELEVENLABS_WEBHOOK_SECRET every delivery is 403 (fail closed)."""
    async with running_sandbox() as sb:
        body = _payload("call_x")
        response = await _post(sb, body, sign(body, "", int(time.time())))
        assert response.status_code == 403
        assert await count_rows(sb, "postcall_webhooks") == 0


async def test_f41_the_emulators_webhook_attaches_to_a_real_call() -> None:
    """End to end: a sandbox call bridged to the emulated agent ends, the emulator posts its
    signed webhook, and the call gets the analysis, linked by its conversation id."""
    env = {
        "ELEVENLABS_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "CALLBRIDGE_SANDBOX_CALLEE": "answer=0.2,digits=1,speak,hangup=3",
    }
    async with running_sandbox(env) as sb:
        response = await sb.request_call(NUMBERS[0])
        call_id = response.json()["call_id"]
        await ended(sb, call_id, timeout=30)

        async def attached() -> bool:
            call = await sb.container.store.get_call(call_id)
            return call is not None and call.analysis is not None

        await wait_until(attached, timeout=15)
        assert [status for _, status in sb.elevenlabs.webhook_deliveries] == [200]
        call = await sb.container.store.get_call(call_id)
        assert call is not None
        assert json.loads(call.analysis or "{}")["conversation_id"] == call.agent_conversation_id


async def test_f43_the_greeting_discloses_and_pressing_9_opts_the_number_out() -> None:
    """The first audio names the site, says the call is automated and may be recorded, and
    offers 'press 9'; pressing 9 puts the number on the do-not-call list, the agent is never
    contacted, and the next request for the number is refused. (Without the opt-out
    handler the second call would be placed.)"""
    env = {
        "CALLBRIDGE_SANDBOX_CALLEE": "answer=0.2,digits=9",
        "CALLBRIDGE_SITE_NAME": "Acme",
        "CALLBRIDGE_PER_NUMBER_COOLDOWN": "0",
        "CALLBRIDGE_PER_NUMBER_HOURLY": "10",
    }
    async with running_sandbox(env) as sb:
        response = await sb.request_call(NUMBERS[0])
        call = await ended(sb, response.json()["call_id"])
        assert call.consent == "opted_out"
        said = " ".join(sb.twilio.calls[response.json()["call_sid"]].said).lower()
        for words in ("acme", "automated", "recorded", "press 9"):
            assert words in said
        assert said.index("automated") < said.index("press 1")
        assert sb.elevenlabs.connection_attempts == 0
        assert await count_rows(sb, "do_not_call") == 1
        await asyncio.sleep(1.1)
        again = await sb.request_call(NUMBERS[0])
        assert again.status_code == 429
        assert len(sb.twilio.calls) == 1


async def test_f44_no_call_outside_the_callees_calling_hours() -> None:
    """With CALLBRIDGE_QUIET_HOURS set to a window that is closed now in the number's zone,
    the request is refused (409) with a message saying when calls are possible and a
    Retry-After, and nothing is dialled. (Without the check the call is placed.)"""
    local = datetime.now(UTC).astimezone(ZoneInfo("America/New_York"))
    start, end = local + timedelta(hours=2), local + timedelta(hours=3)
    window = f"{start:%H:%M}-{end:%H:%M}"
    async with running_sandbox({"CALLBRIDGE_QUIET_HOURS": window}) as sb:
        response = await sb.request_call(NUMBERS[0])  # +1 202: Washington, DC
        assert response.status_code == 409
        message = response.json()["error"]["message"]
        assert f"{start:%H:%M}" in message and "America/New_York" in message
        assert 3000 < int(response.headers["Retry-After"]) <= 7300
        assert await nothing_placed(sb)


async def test_f45_no_number_secret_or_transcript_in_logs_or_served_javascript() -> None:
    """During a whole call (agent, transcript, webhook) no log event holds the full number,
    the auth token, the admin token, the ElevenLabs key or webhook secret, or transcript
    text; ``/``, ``/widget.js`` and the page's script hold no secret or account SID.
    (Logging the number or a secret anywhere fails this.)"""
    secrets = {
        "auth": "f" * 31 + "1",
        "admin": "admin-token-" + "9" * 20,
        "xi": "sk_" + "e" * 40,
        "hook": WEBHOOK_SECRET,
    }
    env = {
        "TWILIO_AUTH_TOKEN": secrets["auth"],
        "CALLBRIDGE_ADMIN_TOKEN": secrets["admin"],
        "ELEVENLABS_API_KEY": secrets["xi"],
        "ELEVENLABS_WEBHOOK_SECRET": secrets["hook"],
        "CALLBRIDGE_SANDBOX_CALLEE": "answer=0.2,digits=1,speak,hangup=3",
    }
    number = NUMBERS[1]
    saved = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    try:
        turns, pages, account_sid, logs = await _a_whole_call(env, number)
    finally:
        structlog.configure(**saved)
    assert logs, "nothing was logged: the capture did not work"
    # The emulator stands in for Twilio, which knows the number; its own events are not ours.
    ours = [event for event in logs if not str(event.get("event", "")).startswith("sandbox_")]
    text = "\n".join(repr(event) for event in ours)
    assert number not in text and number[2:] not in text
    for value in secrets.values():
        assert value not in text
    for turn in turns:
        if len(turn.text) > 12:
            assert turn.text not in text
    for page in pages:
        for value in (*secrets.values(), account_sid):
            assert value not in page
        assert not re.search(r"\bAC[0-9a-f]{32}\b", page)
        assert not re.search(r"\bsk_[0-9a-f]{20,}", page)


async def _a_whole_call(env: dict[str, str], number: str) -> tuple[Any, list[str], str, Any]:
    with structlog.testing.capture_logs() as logs:
        async with running_sandbox(env) as sb:
            response = await sb.request_call(number, name="Ada", reason="pricing")
            call_id = response.json()["call_id"]
            await ended(sb, call_id, timeout=30)

            async def attached() -> bool:
                call = await sb.container.store.get_call(call_id)
                return call is not None and call.analysis is not None

            await wait_until(attached, timeout=15)
            turns = await sb.container.store.turns(call_id)
            pages = [(await sb.http.get(p)).text for p in ("/", "/widget.js")]
            scripts = re.findall(r'src="(/static/[^"]+\.js)"', pages[0])
            pages += [(await sb.http.get(s)).text for s in scripts]
            account_sid = sb.container.account_sid
    return turns, pages, account_sid, logs
