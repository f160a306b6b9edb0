"""``callbridge call``: ask a running server for a call, then follow it to its end.

``--self-test`` (:func:`self_test`) asks the operator API for a test call to
``TARGET_PHONE_NUMBER``, follows it, then prints when each stage happened (from the
call's timeline), the stored transcript and the price.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime
from typing import Any

import httpx
from rich.console import Console
from rich.markup import escape

from callbridge.cli_common import local_time
from callbridge.domain.call import CallStatus
from callbridge.domain.price import format_price

_TERMINAL = {
    "completed",
    "voicemail",
    "busy",
    "no-answer",
    "canceled",
    "failed",
    "agent_failed",
    "missed",
}


def _voicemail(message_left: object) -> str:
    """How a call that an answering machine took ended, in words."""
    if message_left:
        return "went to voicemail; we left a message"
    return "went to voicemail; no message was left"


def unreachable(base: str, exc: httpx.HTTPError, *, default_url: bool) -> str:
    """The sentence for a server that did not answer, with what to do about it."""
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        if default_url:
            return f"could not reach {base}: is `make demo` running? Start it, or pass --url."
        return f"could not reach {base}: nothing answered there. Is the server running?"
    return f"could not reach {base}: {type(exc).__name__}"


async def place_and_follow(
    url: str,
    number: str,
    name: str | None,
    reason: str | None,
    console: Console,
    *,
    admin_token: str | None = None,
    default_url: bool = False,
    at: str | None = None,
    retry: bool = False,
) -> int:
    """Place the call and print each status change, and the turns as they are spoken
    when the server lets us follow them; 0 if it completed (or a message was left on an
    answering machine), 1 otherwise, 2 if the server could not be reached.

    With ``at``, the call is scheduled: print when it is due and return 0 at once
    (``callbridge calls --scheduled`` lists it; the operator can cancel it).
    """
    base = url.rstrip("/")
    async with httpx.AsyncClient(base_url=base, timeout=httpx.Timeout(10, read=None)) as http:
        try:
            token = (await http.get("/api/call/session")).json()["token"]
            body: dict[str, Any] = {"to_number": number}
            if name:
                body["name"] = name
            if reason:
                body["reason"] = reason
            if at:
                body["at"] = at
            if retry:
                body["retry_on_no_answer"] = True
            response = await http.post(
                "/api/call/outbound", json=body, headers={"X-Callbridge-Token": token}
            )
        except httpx.HTTPError as exc:
            console.print(f"[red]{unreachable(base, exc, default_url=default_url)}[/]")
            return 2
        answer = response.json()
        if not answer.get("success"):
            error = answer.get("error", {})
            console.print(f"[red]refused ({response.status_code}): {error.get('message')}[/]")
            for slot in answer.get("next_allowed") or []:
                console.print(f"  next allowed: {slot['local']} ({slot['zone']}) = {slot['utc']}")
            return 1
        call_id = answer["call_id"]
        if answer.get("status") == "scheduled":
            console.print(
                f"call {call_id} to {answer.get('to')}: [bold]scheduled[/] for"
                f" {answer['scheduled_for']}"
            )
            return 0
        console.print(f"call {call_id} to {answer.get('to')}: [bold]{answer['status']}[/]")
        last = await _follow_live(http, call_id, answer["status"], console, admin_token)
        if last is None:  # the operator's stream is closed to us: statuses only
            last = await _follow(http, call_id, answer["status"], console)
        final = (await http.get(f"/api/call/{call_id}")).json()
        if final["status"] == "voicemail":
            console.print(f"ended: {_voicemail(final.get('message_left'))}")
            return 0 if final.get("message_left") else 1
        if final.get("duration") is not None and final["status"] == last:
            console.print(f"ended: {final['status']}, {final['duration']} s")
        elif final.get("failure"):
            console.print(f"ended: {final['status']}: {final['failure']['message']}")
        return 0 if last == "completed" else 1


_WHO = {"agent": "Agent", "user": "Callee"}


def _later(status: str, than: str) -> bool:
    """Whether ``status`` comes after ``than`` in a call's life (unknown ones always do)."""
    known = CallStatus._value2member_map_
    if status not in known or than not in known:
        return status != than
    return CallStatus(status).rank > CallStatus(than).rank


def _clock(iso: str) -> str:
    """An event's time in the terminal's time zone, with its UTC offset (``19:40:04+01:00``)."""
    return local_time(iso)[11:]


async def _follow_live(
    http: httpx.AsyncClient, call_id: str, first: str, console: Console, token: str | None
) -> str | None:
    """Follow the operator's stream of the call: each status (those already passed
    first) and each turn as it is spoken. The last status, or None when the server
    refuses the stream (no or wrong CALLBRIDGE_ADMIN_TOKEN outside the sandbox)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    last = first
    async with http.stream("GET", f"/api/admin/calls/{call_id}/live", headers=headers) as events:
        if events.status_code in (401, 403):
            console.print("[dim](set CALLBRIDGE_ADMIN_TOKEN to see what is said as it is said)[/]")
            return None
        if events.status_code != 200:  # a server without the stream: statuses only
            return None
        kind = "status"
        async for line in events.aiter_lines():
            if line.startswith("event: "):
                kind = line[7:].strip()
                continue
            if not line.startswith("data: "):
                continue
            item = json.loads(line[6:])
            if kind == "turn":
                text = str(item.get("text", "")).strip()
                if text:
                    who = _WHO.get(item.get("role"), str(item.get("role")))
                    console.print(f"  {_clock(item['at'])}    [italic]{who}:[/] {escape(text)}")
                continue
            status = item["status"]
            if not _later(status, last):
                continue  # already printed (the stream replays the statuses passed)
            last = status
            duration = item.get("duration")
            extra = f" ({duration} s)" if duration is not None else ""
            console.print(f"  {_clock(item['at'])}  [bold]{status}[/]{extra}")
            if status in _TERMINAL:
                break
    return last


async def _follow(http: httpx.AsyncClient, call_id: str, first: str, console: Console) -> str:
    """Print each status change until a terminal one; the last status."""
    last = first
    async with http.stream("GET", f"/api/call/{call_id}/events") as events:
        async for line in events.aiter_lines():
            if not line.startswith("data: "):
                continue
            change = json.loads(line[6:])
            status = change["status"]
            if status == last:
                continue
            last = status
            duration = change.get("duration")
            extra = f" ({duration} s)" if duration is not None else ""
            console.print(f"  {_clock(change['at'])}  [bold]{status}[/]{extra}")
            if status in _TERMINAL:
                break
    return last


async def self_test(url: str, admin_token: str, console: Console, *, wait_s: float) -> int:
    """Place the self-test call, follow it, print its stages, transcript and price.

    Returns 0 when the call completed and every stage happened, 1 otherwise, 2 when the
    server could not be reached or refused the request.
    """
    from callbridge.services.self_test import stages

    base = url.rstrip("/")
    auth = {"Authorization": f"Bearer {admin_token}"}
    async with httpx.AsyncClient(base_url=base, timeout=httpx.Timeout(10, read=None)) as http:
        try:
            response = await http.post("/api/admin/calls/self-test", headers=auth)
        except httpx.HTTPError as exc:
            console.print(f"[red]{unreachable(base, exc, default_url=False)}[/]")
            return 2
        answer = response.json()
        if not answer.get("success"):
            error = answer.get("error", {})
            console.print(f"[red]refused ({response.status_code}): {error.get('message')}[/]")
            return 2
        call_id = answer["call_id"]
        console.print(
            f"self-test call {call_id} to {answer.get('to')} (TARGET_PHONE_NUMBER): "
            f"[bold]{answer['status']}[/]"
        )
        last = await _follow(http, call_id, answer["status"], console)
        view = await _settled(http, call_id, auth, wait_s)
    found = stages(view.get("timeline", []))
    start = next((s.at for s in found if s.at), None)
    console.print("\n[bold]Stages[/]")
    for stage in found:
        if stage.at is None and stage.name == "consent":
            console.print(f"  {stage.name:<18} [dim]not asked (CALLBRIDGE_CONSENT=off)[/]")
            continue
        if stage.at is None:
            console.print(f"  {stage.name:<18} [yellow]did not happen[/]")
            continue
        offset = _seconds(stage.at) - _seconds(start or stage.at)
        console.print(f"  {stage.name:<18} {stage.at[11:23]}  +{offset:6.2f} s  ({stage.status})")
    console.print("\n[bold]Transcript[/]")
    for turn in view.get("transcript", []):
        if turn["text"].strip():
            console.print(f"  {_WHO.get(turn['role'], turn['role'])}: {escape(turn['text'])}")
    if not view.get("transcript"):
        console.print("  [yellow](none stored)[/]")
    price = format_price(view.get("price"), view.get("price_unit"))
    if price is not None:
        console.print(f"\nprice: {price}")
    else:
        console.print("\nprice: not reported by Twilio yet (see `callbridge calls show`)")
    everything = all(s.at for s in found if s.name != "consent")
    return 0 if last == "completed" and everything else 1


async def _settled(
    http: httpx.AsyncClient, call_id: str, auth: dict[str, str], wait_s: float
) -> dict[str, Any]:
    """The call's detail once its transcript and price are stored (or ``wait_s`` passed)."""
    deadline = time.monotonic() + wait_s
    while True:
        view: dict[str, Any] = (await http.get(f"/api/admin/calls/{call_id}", headers=auth)).json()
        stored = bool(view.get("transcript")) and view.get("price") is not None
        if stored or time.monotonic() >= deadline:
            return view
        await asyncio.sleep(0.5)


def _seconds(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()
