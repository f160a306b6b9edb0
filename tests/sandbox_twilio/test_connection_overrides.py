"""The emulator delivers webhooks with Twilio's connection overrides (``#ct=…&rc=…&rp=…``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from twilio.request_validator import RequestValidator

from callbridge.sandbox.twilio.emulator import TwilioEmulator
from callbridge.sandbox.twilio.overrides import ConnectionOverrides
from tests.sandbox_twilio.conftest import ACCOUNT_SID, AUTH_TOKEN, CALLEE, CALLER
from tests.support.server import free_port, serve


@dataclass
class Flaky:
    """A status door that answers ``status`` to the first ``failures`` requests, then 204."""

    failures: int
    status: int = 503
    seen: list[tuple[str, str, str, bytes]] = field(default_factory=list)

    async def hook(self, request: Request) -> Response:
        self.seen.append((
            str(request.url),
            request.headers.get("I-Twilio-Idempotency-Token", ""),
            request.headers.get("X-Twilio-Signature", ""),
            await request.body(),
        ))  # fmt: skip
        if len(self.seen) <= self.failures:
            return Response(status_code=self.status)
        return Response(status_code=204)


@asynccontextmanager
async def emulator_and(
    door: Flaky, *, sign_fragment: bool = False
) -> AsyncIterator[tuple[TwilioEmulator, str, httpx.AsyncClient]]:
    """The emulator (a callee that is busy at once) and ``door`` behind one uvicorn."""
    emulator = TwilioEmulator(
        account_sid=ACCOUNT_SID,
        auth_token=AUTH_TOKEN,
        callee_script="busy",
        say_seconds_per_char=0,
        sign_url_fragment=sign_fragment,
    )
    app = Starlette(routes=[Mount("/sandbox/twilio", app=emulator.asgi_app),
                            Route("/status", door.hook, methods=["POST"])])  # fmt: skip
    async with serve(app) as base, httpx.AsyncClient(timeout=10) as http:
        await emulator.start()
        try:
            yield emulator, base, http
        finally:
            await emulator.aclose()


async def _busy_call(
    emulator: TwilioEmulator, base: str, http: httpx.AsyncClient, callback: str
) -> None:
    response = await http.post(
        f"{base}/sandbox/twilio/2010-04-01/Accounts/{ACCOUNT_SID}/Calls.json",
        data={"To": CALLEE, "From": CALLER, "Url": f"{base}/twiml", "StatusCallback": callback},
        auth=(ACCOUNT_SID, AUTH_TOKEN),
    )
    assert response.status_code == 201, response.text
    await emulator.wait_for_end(response.json()["sid"], 10)


async def test_a_5xx_is_retried_as_the_fragment_says_with_the_same_request() -> None:
    """With ``#rc=3&rp=5xx`` a callback answered 503 twice is sent a third time and then
    stops; every attempt has the same body, signature and idempotency token, and the
    fragment is never sent."""
    door = Flaky(failures=2)
    async with emulator_and(door) as (emulator, base, http):
        await _busy_call(emulator, base, http, f"{base}/status?x=1#rc=3&rp=5xx")
    assert len(door.seen) == 3
    assert len({(token, sig, body) for _url, token, sig, body in door.seen}) == 1
    assert all(url == f"{base}/status?x=1" for url, *_ in door.seen)
    _url, _token, signature, body = door.seen[0]
    params = dict(httpx.QueryParams(body.decode()))
    assert RequestValidator(AUTH_TOKEN).validate(f"{base}/status?x=1", params, signature)


async def test_without_overrides_a_5xx_is_not_retried() -> None:
    """Twilio's default (rc=1, rp=ct) retries only a failed connection: one 503 is final."""
    door = Flaky(failures=5)
    async with emulator_and(door) as (emulator, base, http):
        await _busy_call(emulator, base, http, f"{base}/status")
    assert len(door.seen) == 1


async def test_without_overrides_a_refused_connection_is_tried_twice() -> None:
    """Twilio's default retries a refused connection once (two attempts in all)."""
    door = Flaky(failures=0)
    closed = f"http://127.0.0.1:{free_port()}/status"
    async with emulator_and(door) as (emulator, base, http):
        await _busy_call(emulator, base, http, closed)
        sid = next(iter(emulator.calls))
        attempts = [w for w in emulator.calls[sid].webhooks if w.kind == "status"]
    assert [w.status_code for w in attempts] == [None, None]


async def test_retries_stop_at_the_first_success() -> None:
    """A callback that succeeds on its second attempt is not sent again."""
    door = Flaky(failures=1)
    async with emulator_and(door) as (emulator, base, http):
        await _busy_call(emulator, base, http, f"{base}/status#rc=5&rp=ct,5xx&tt=15000")
    assert len(door.seen) == 2


async def test_the_fragment_can_be_signed_as_the_other_answer() -> None:
    """With ``sign_url_fragment`` the signature covers the URL with its fragment (whether
    Twilio does is unconfirmed, so both answers can be tested)."""
    door = Flaky(failures=0)
    async with emulator_and(door, sign_fragment=True) as (emulator, base, http):
        await _busy_call(emulator, base, http, f"{base}/status#rc=2&rp=5xx")
    _url, _token, signature, body = door.seen[0]
    params = dict(httpx.QueryParams(body.decode()))
    validator = RequestValidator(AUTH_TOKEN)
    assert validator.validate(f"{base}/status#rc=2&rp=5xx", params, signature)
    assert not validator.validate(f"{base}/status", params, signature)


@pytest.mark.parametrize(
    ("fragment", "expected"),
    [
        ("", ConnectionOverrides(5.0, 15.0, 15.0, 1, frozenset({"ct"}))),
        ("ct=2000&rt=6000&tt=15000&rc=5&rp=ct,rt,5xx",
         ConnectionOverrides(2.0, 6.0, 15.0, 5, frozenset({"ct", "rt", "5xx"}))),
        ("ct=50&rt=99999&tt=0&rc=9&rp=bogus",
         ConnectionOverrides(0.1, 15.0, 0.1, 5, frozenset({"ct"}))),
        ("rp=all&e=dublin&sni=y", ConnectionOverrides(5.0, 15.0, 15.0, 1, frozenset({"all"}))),
    ],
)  # fmt: skip
def test_overrides_parse_clamped_to_twilios_ranges(
    fragment: str, expected: ConnectionOverrides
) -> None:
    """Numbers are clamped to the documented ranges, unknown policies dropped, ``e`` and
    ``sni`` ignored, and a missing key takes Twilio's default."""
    assert ConnectionOverrides.parse(fragment) == expected
