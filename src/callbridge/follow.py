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

_TERMINAL = {"completed", "busy", "no-answer", "canceled", "failed", "agent_failed"}


async def place_and_follow(
    url: str, number: str, name: str | None, reason: str | None, console: Console
) -> int:
    """Place the call and print each status change; 0 if it completed, 1 otherwise."""
    base = url.rstrip("/")
    async with httpx.AsyncClient(base_url=base, timeout=httpx.Timeout(10, read=None)) as http:
        try:
            token = (await http.get("/api/call/session")).json()["token"]
            body: dict[str, Any] = {"to_number": number}
            if name:
                body["name"] = name
            if reason:
                body["reason"] = reason
            response = await http.post(
                "/api/call/outbound", json=body, headers={"X-Callbridge-Token": token}
            )
        except httpx.HTTPError as exc:
            console.print(f"[red]could not reach {base}: {type(exc).__name__}[/]")
            return 2
        answer = response.json()
        if not answer.get("success"):
            error = answer.get("error", {})
            console.print(f"[red]refused ({response.status_code}): {error.get('message')}[/]")
            return 1
        call_id = answer["call_id"]
        console.print(f"call {call_id} to {answer.get('to')}: [bold]{answer['status']}[/]")
        last = await _follow(http, call_id, answer["status"], console)
        final = (await http.get(f"/api/call/{call_id}")).json()
        if final.get("duration") is not None and final["status"] == last:
            console.print(f"ended: {final['status']}, {final['duration']} s")
        elif final.get("failure"):
            console.print(f"ended: {final['status']}: {final['failure']['message']}")
        return 0 if last == "completed" else 1


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
            console.print(f"  {change['at'][11:19]}  [bold]{status}[/]{extra}")
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
            console.print(f"[red]could not reach {base}: {type(exc).__name__}[/]")
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
        console.print(f"  {turn['role']}: {turn['text']}")
    if not view.get("transcript"):
        console.print("  [yellow](none stored)[/]")
    price = view.get("price")
    if price is not None:
        console.print(f"\nprice: {price} {view.get('price_unit') or ''}".rstrip())
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
