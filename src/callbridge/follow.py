"""``callbridge call``: ask a running server for a call, then follow it to its end."""

from __future__ import annotations

import json
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
        last = answer["status"]
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
        final = (await http.get(f"/api/call/{call_id}")).json()
        if final.get("duration") is not None and final["status"] == last:
            console.print(f"ended: {final['status']}, {final['duration']} s")
        elif final.get("failure"):
            console.print(f"ended: {final['status']}: {final['failure']['message']}")
        return 0 if last == "completed" else 1
