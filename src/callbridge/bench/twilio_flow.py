"""One benchmark call through the real flow, from the browser's POST to Twilio's last callback.

The browser's part: ``GET /api/call/session`` for a token, then
``POST /api/call/outbound``. Twilio's part, once the server has created the call
at the :class:`~callbridge.bench.rest_peer.RestPeer`: the ``initiated``,
``ringing`` and ``answered`` status callbacks, the TwiML fetch, the consent
``<Gather>`` answered with ``1`` after a person's pause, the ``<Connect><Stream>``
TwiML, the media stream itself, and the ``completed`` callback. Every webhook and
the stream handshake are signed with ``X-Twilio-Signature``
(``RequestValidator.compute_signature``, protocols.md §2.5) over the URLs the
server itself gave.

TwiML is read with three regular expressions rather than an XML parser: the
documents come from the server under test, and only ``<Gather action>``,
``<Stream url>`` and ``<Parameter>`` matter here.
"""

from __future__ import annotations

import asyncio
import html
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime

import httpx
from twilio.request_validator import RequestValidator

from callbridge.bench.callee import CalleeStream
from callbridge.bench.probe import CallProbe
from callbridge.bench.rest_peer import CreatedCall

__all__ = ["FlowConfig", "TwilioFlow"]

_GATHER = re.compile(r"<Gather\b[^>]*\baction=\"([^\"]+)\"")
_STREAM = re.compile(r"<Stream\b[^>]*\burl=\"([^\"]+)\"")
_PARAM = re.compile(r"<Parameter\b[^>]*\bname=\"([^\"]*)\"[^>]*\bvalue=\"([^\"]*)\"")


@dataclass(frozen=True, slots=True)
class FlowConfig:
    """How the emulated callee behaves."""

    answer_s: float = 0.5
    consent_s: float = 0.6
    #: Twilio plays a ``<Say>`` before ``<Connect>`` (consent off): a typical greeting.
    greeting_s: float = 3.0
    #: From the TwiML's answer to the stream's ``start``: Twilio's own set-up time.
    stream_delay_s: float = 0.25
    step_timeout_s: float = 20.0


class CallFailed(Exception):
    """The call did not get through the flow; says where."""


class TwilioFlow:
    """Drives calls through a server under test."""

    def __init__(
        self,
        *,
        target: str,
        account_sid: str,
        auth_token: str,
        http: httpx.AsyncClient,
        on_placed: Callable[[CallProbe, str | None], None],
        config: FlowConfig,
        run_stream: Callable[[CalleeStream], Awaitable[None]],
    ) -> None:
        self._target = target.rstrip("/")
        self._account_sid = account_sid
        self._validator = RequestValidator(auth_token)
        self._http = http
        self._on_placed = on_placed
        self._config = config
        self._run_stream = run_stream
        self._created: dict[str, asyncio.Future[CreatedCall]] = {}

    def on_create(self, created: CreatedCall) -> None:
        """The REST peer saw a create: wake the call that asked for it."""
        waiter = self._created.get(created.to)
        if waiter is not None and not waiter.done():
            waiter.set_result(created)

    async def call(self, probe: CallProbe) -> None:
        """Place ``probe``'s call and follow it to its end; failures are written on the probe."""
        try:
            async with asyncio.timeout(self._config.step_timeout_s * 4):
                created = await self._place(probe)
                stream = await self._answer(probe, created)
            await self._run_stream(stream)
            await self._status(created, "completed", 3, probe)
            probe.completed = probe.error is None
        except CallFailed as exc:
            probe.fail(str(exc))
        except (httpx.HTTPError, TimeoutError, OSError) as exc:
            probe.fail(f"{type(exc).__name__}: {exc}")
        finally:
            self._created.pop(probe.number, None)

    async def _place(self, probe: CallProbe) -> CreatedCall:
        waiter: asyncio.Future[CreatedCall] = asyncio.get_running_loop().create_future()
        self._created[probe.number] = waiter
        session = await self._http.get(f"{self._target}/api/call/session")
        if session.status_code != 200:
            raise CallFailed(f"session token: HTTP {session.status_code}")
        token = session.json()["token"]
        probe.post_ns = time.monotonic_ns()
        placed = await self._http.post(
            f"{self._target}/api/call/outbound",
            json={"to_number": probe.number, "name": "Bench", "reason": "a benchmark"},
            headers={"X-Callbridge-Token": token},
        )
        if placed.status_code != 200:
            raise CallFailed(f"outbound: HTTP {placed.status_code} {placed.text[:200]}")
        body = placed.json()
        created = await asyncio.wait_for(waiter, self._config.step_timeout_s)
        probe.created_ns = created.created_ns
        call_id = body.get("call_id")
        # The agent finds the call by this id (a pre-warmed agent, before the stream).
        self._on_placed(probe, call_id if isinstance(call_id, str) else None)
        return created

    async def _answer(self, probe: CallProbe, created: CreatedCall) -> CalleeStream:
        await self._status(created, "initiated", 0, probe)
        await self._status(created, "ringing", 1, probe)
        await asyncio.sleep(self._config.answer_s)
        await self._status(created, "in-progress", 2, probe)
        document = await self._webhook(created.url, self._params(created, "in-progress"))
        gather = _GATHER.search(document)
        if gather is not None:
            await asyncio.sleep(self._config.consent_s)  # the callee listens, then presses 1
            action = html.unescape(gather.group(1))
            document = await self._webhook(
                action, self._params(created, "in-progress") | {"Digits": "1"}
            )
        found = _STREAM.search(document)
        if found is None:
            raise CallFailed(f"no <Stream> in the TwiML: {document[:200]}")
        connect_at = document.find("<Connect")
        if 0 <= document.find("<Say") < connect_at:
            await asyncio.sleep(self._config.greeting_s)
        await asyncio.sleep(self._config.stream_delay_s)
        url = html.unescape(found.group(1))
        params = {html.unescape(k): html.unescape(v) for k, v in _PARAM.findall(document)}
        signature = self._validator.compute_signature(url, {})
        return CalleeStream(
            probe,
            url=url,
            parameters=params,
            call_sid=created.sid,
            account_sid=self._account_sid,
            headers={"X-Twilio-Signature": signature},
        )

    def _params(self, created: CreatedCall, status: str) -> dict[str, str]:
        return {
            "AccountSid": self._account_sid,
            "CallSid": created.sid,
            "From": created.from_,
            "To": created.to,
            "Caller": created.from_,
            "Called": created.to,
            "CallStatus": status,
            "Direction": "outbound-api",
            "ApiVersion": "2010-04-01",
        }

    async def _webhook(self, url: str, params: dict[str, str]) -> str:
        signature = self._validator.compute_signature(url, params)
        response = await self._http.post(
            url,
            data=params,
            headers={"X-Twilio-Signature": signature, "User-Agent": "TwilioProxy/1.1"},
        )
        if response.status_code != 200:
            raise CallFailed(f"TwiML {url}: HTTP {response.status_code}")
        return response.text

    async def _status(
        self, created: CreatedCall, status: str, sequence: int, probe: CallProbe
    ) -> None:
        if created.status_callback is None:
            return
        params = self._params(created, status) | {
            "CallbackSource": "call-progress-events",
            "SequenceNumber": str(sequence),
            "Timestamp": format_datetime(datetime.now(UTC), usegmt=True),
        }
        if status == "completed":
            seconds = 0
            if probe.stream_start_ns is not None and probe.end_ns is not None:
                seconds = round((probe.end_ns - probe.stream_start_ns) / 1e9)
            params |= {"CallDuration": str(seconds), "Duration": str(-(-seconds // 60))}
        signature = self._validator.compute_signature(created.status_callback, params)
        response = await self._http.post(
            created.status_callback, data=params, headers={"X-Twilio-Signature": signature}
        )
        if response.status_code >= 300:
            raise CallFailed(f"status {status}: HTTP {response.status_code}")
