"""A lean Twilio REST peer: the subset of the Calls resource a server under test uses.

``POST /2010-04-01/Accounts/{AccountSid}/Calls.json`` (create) answers ``201`` with
the call JSON (protocols.md §1.3) and hands the request to the load generator;
``GET``/``POST …/Calls/{CallSid}.json`` (fetch, update) answer the call JSON.
Basic auth is checked as Twilio does. The HTTP/1.1 server is ``h11`` over
asyncio streams: a few requests per call do not deserve a web framework in the
load generator's process.
"""

from __future__ import annotations

import asyncio
import base64
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qs

import h11
import orjson

__all__ = ["CreatedCall", "RestPeer"]

_CALLS = re.compile(r"^/2010-04-01/Accounts/(AC[0-9a-f]{32})/Calls(?:/(CA[0-9a-f]{32}))?\.json")
_MAX_BODY = 64 * 1024
_IDLE_S = 60.0


@dataclass(frozen=True, slots=True)
class CreatedCall:
    """A call the server asked for."""

    sid: str
    to: str
    from_: str
    url: str
    status_callback: str | None
    created_ns: int


class RestPeer:
    """Serves the Calls resource on loopback; ``on_create`` sees every created call."""

    def __init__(
        self, *, account_sid: str, auth_token: str, on_create: Callable[[CreatedCall], None]
    ) -> None:
        self.account_sid = account_sid
        self._auth = "Basic " + base64.b64encode(f"{account_sid}:{auth_token}".encode()).decode()
        self._on_create = on_create
        self._calls: dict[str, dict[str, Any]] = {}
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self.port = 0
        self.updates: list[tuple[str, dict[str, str]]] = []

    @property
    def base_url(self) -> str:
        """What ``TWILIO_API_BASE_URL`` must be for a server to reach this peer."""
        return f"http://127.0.0.1:{self.port}"

    async def start(self, port: int = 0) -> None:
        """Listen on ``127.0.0.1:port`` (0: any free port)."""
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", port)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def aclose(self) -> None:
        """Stop listening and drop open connections."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.wait(self._connections, timeout=5)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                request, body = await self._read(conn, reader)
                if request is None:
                    return
                status, payload = self._handle(request, body)
                data = orjson.dumps(payload)
                headers = [("content-type", "application/json"), ("content-length", str(len(data)))]
                writer.write(conn.send(h11.Response(status_code=status, headers=headers)) or b"")
                writer.write(conn.send(h11.Data(data=data)) or b"")
                writer.write(conn.send(h11.EndOfMessage()) or b"")
                await writer.drain()
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()
        except (h11.ProtocolError, ConnectionError, TimeoutError):
            return
        finally:
            self._connections.discard(task)
            writer.close()

    async def _read(
        self, conn: h11.Connection, reader: asyncio.StreamReader
    ) -> tuple[h11.Request | None, bytes]:
        request: h11.Request | None = None
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                async with asyncio.timeout(_IDLE_S):
                    chunk = await reader.read(65536)
                conn.receive_data(chunk)
                continue
            if isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > _MAX_BODY:
                    return None, b""
            elif isinstance(event, h11.EndOfMessage):
                return request, bytes(body)
            elif isinstance(event, h11.ConnectionClosed):
                return None, b""

    def _handle(self, request: h11.Request, body: bytes) -> tuple[int, dict[str, Any]]:
        path = request.target.decode("latin-1")
        match = _CALLS.match(path)
        headers = {k.decode().lower(): v.decode("latin-1") for k, v in request.headers}
        if match is None:
            return 404, _error(404, 20404, "The requested resource was not found")
        if headers.get("authorization") != self._auth or match.group(1) != self.account_sid:
            return 401, _error(401, 20003, "Authenticate")
        form = {k: v[-1] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
        sid = match.group(2)
        method = request.method.decode()
        if sid is None and method == "POST":
            return self._create(form)
        if sid is None:
            return 200, {"calls": list(self._calls.values())[-50:], "next_page_uri": None}
        call = self._calls.get(sid)
        if call is None:
            return 404, _error(404, 20404, f"The requested resource {path} was not found")
        if method == "POST":
            self.updates.append((sid, form))
            if form.get("Status") in ("completed", "canceled"):
                call["status"] = form["Status"]
        return 200, call

    def _create(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        to, from_, url = form.get("To"), form.get("From"), form.get("Url")
        if not to or not from_ or not url:
            return 400, _error(400, 21201, "No 'To', 'From' or 'Url' number is specified")
        sid = "CA" + secrets.token_hex(16)
        now = format_datetime(datetime.now(UTC), usegmt=True)
        call: dict[str, Any] = {
            "account_sid": self.account_sid,
            "answered_by": None,
            "api_version": "2010-04-01",
            "date_created": now,
            "date_updated": now,
            "direction": "outbound-api",
            "duration": None,
            "from": from_,
            "price": None,
            "price_unit": "USD",
            "sid": sid,
            "status": "queued",
            "to": to,
            "uri": f"/2010-04-01/Accounts/{self.account_sid}/Calls/{sid}.json",
        }
        self._calls[sid] = call
        self._on_create(
            CreatedCall(sid, to, from_, url, form.get("StatusCallback"), time.monotonic_ns())
        )
        return 201, call


def _error(status: int, code: int, message: str) -> dict[str, Any]:
    return {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
