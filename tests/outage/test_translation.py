"""One translation per store, one last resort, one signature rule for the overrides."""

from __future__ import annotations

import asyncpg
import httpx
import pytest
import redis.exceptions
import websockets
from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_dbapi
from sqlalchemy.exc import (
    DBAPIError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    ProgrammingError,
)
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket
from structlog.testing import capture_logs
from twilio.request_validator import RequestValidator

from callbridge.adapters.db.transaction import database_errors
from callbridge.adapters.redis_errors import redis_errors
from callbridge.adapters.twilio.signature import TwilioSignatureChecker
from callbridge.errors import StoreError, Unavailable, WebhookRejected
from callbridge.web.last_resort import LastResort
from tests.support.server import serve


def _dbapi(cls: type[Exception]) -> Exception:
    return cls("SELECT secret FROM calls", {"to": "+12025550142"}, Exception("boom"))


def _server_shut_down() -> Exception:
    """What SQLAlchemy raises when PostgreSQL ends an open session as it stops
    (``pg_ctl stop -m fast``): a DBAPIError not flagged as a disconnect, whose
    adapter error carries asyncpg's SQLSTATE 57P01."""
    cause = asyncpg.AdminShutdownError("terminating connection due to administrator command")
    adapted = AsyncAdapt_asyncpg_dbapi.Error("terminating connection", cause)
    return DBAPIError("SELECT secret FROM calls", {"to": "+12025550142"}, adapted)


@pytest.mark.parametrize(
    "raised",
    [
        ConnectionRefusedError(111, "Connect call failed"),
        TimeoutError(),
        asyncpg.CannotConnectNowError("the database system is starting up"),
        asyncpg.ConnectionDoesNotExistError("connection was closed"),
        _dbapi(InterfaceError),
        _dbapi(OperationalError),
        _server_shut_down(),
    ],
    ids=lambda e: type(e).__name__,
)
def test_an_unreachable_database_becomes_unavailable(raised: Exception) -> None:
    """Refused, timed-out, restarting or lost connections are an Unavailable naming the
    database, and the message holds neither SQL nor parameters."""
    with pytest.raises(Unavailable) as caught:
        with database_errors():
            raise raised
    assert caught.value.dependency == "database" and caught.value.retry_after > 0
    assert "SELECT" not in caught.value.message and "+1202" not in caught.value.message


def test_other_database_failures_are_store_errors_and_duplicates_pass() -> None:
    """A refused query is a plain StoreError (still 503); a duplicate key stays an
    IntegrityError for the caller to turn into an answer."""
    with pytest.raises(StoreError) as caught:
        with database_errors():
            raise _dbapi(ProgrammingError)
    assert not isinstance(caught.value, Unavailable)
    with pytest.raises(IntegrityError):
        with database_errors():
            raise _dbapi(IntegrityError)


@pytest.mark.parametrize(
    ("raised", "kind"),
    [
        (redis.exceptions.ConnectionError("refused"), Unavailable),
        (redis.exceptions.TimeoutError("slow"), Unavailable),
        (redis.exceptions.BusyLoadingError("loading"), Unavailable),
        (OSError("reset"), Unavailable),
        (redis.exceptions.ResponseError("WRONGTYPE"), StoreError),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else v.__name__,
)
def test_redis_failures_become_store_errors_naming_redis(
    raised: Exception, kind: type[StoreError]
) -> None:
    """Every Redis failure is a StoreError naming redis; an unreachable Redis is Unavailable."""
    with pytest.raises(kind) as caught:
        with redis_errors("quota store"):
            raise raised
    assert caught.value.dependency == "redis"
    assert isinstance(caught.value, Unavailable) == (kind is Unavailable)


async def _bug(_request: Request) -> Response:
    raise ValueError("secret internals: token=abc")


async def _grouped_outage(_request: Request) -> Response:
    raise ExceptionGroup("bridge", [Unavailable("down", dependency="redis")])


async def _ws_bug(websocket: WebSocket) -> None:
    await websocket.accept()
    raise RuntimeError("secret internals")


async def _ws_outage(websocket: WebSocket) -> None:
    await websocket.accept()
    raise Unavailable("down")


# As in create_app: inside Starlette's own error middleware, which never sees the error.
_APP = Starlette(
    routes=[
        Route("/bug", _bug),
        Route("/outage", _grouped_outage),
        WebSocketRoute("/ws-bug", _ws_bug),
        WebSocketRoute("/ws-outage", _ws_outage),
    ],
    middleware=[Middleware(LastResort)],
)


async def test_an_escaped_exception_is_a_json_500_without_its_text() -> None:
    """A bug answers the JSON error body (500 internal_error), never the exception's text
    and never a plain-text page; the log names the type and where, not the message."""
    transport = httpx.ASGITransport(app=_APP)
    with capture_logs() as logs:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.get("/bug")
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
    assert "secret" not in response.text
    [entry] = [e for e in logs if e["event"] == "unhandled_exception"]
    assert entry["error"] == "ValueError" and "in _bug" in entry["frames"][-1]
    assert "secret" not in repr(entry)  # the message may hold personal data: never logged


async def test_an_outage_inside_an_exception_group_is_a_503() -> None:
    """A StoreError wrapped by a task group still answers 503 unavailable with Retry-After."""
    transport = httpx.ASGITransport(app=_APP)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.get("/outage")
    assert response.status_code == 503 and response.headers["retry-after"] == "5"
    assert response.json()["error"]["code"] == "unavailable"


@pytest.mark.parametrize(("path", "code"), [("/ws-bug", 1011), ("/ws-outage", 1013)])
async def test_an_escaped_exception_closes_a_websocket_with_a_code(path: str, code: int) -> None:
    """A WebSocket route that raises is closed with 1011 (a bug) or 1013 (an outage)."""
    async with serve(_APP) as base:
        url = base.replace("http://", "ws://") + path
        async with websockets.connect(url, open_timeout=5) as ws:
            with pytest.raises(websockets.ConnectionClosed):
                await ws.recv()
    assert ws.close_code == code


def test_the_signature_may_cover_the_overrides_or_not_but_nothing_else() -> None:
    """A status callback is accepted whether Twilio signed the URL with our fragment or
    without it (unconfirmed which), and refused when signed with any other fragment."""
    token = "t0k3n"
    url = "https://calls.example.com/api/call/status?call_id=c1"
    fragment = "ct=2000&rc=5&rp=ct,rt,5xx"
    params = {"CallSid": "CA" + "1" * 32, "CallStatus": "busy"}
    sign = RequestValidator(token).compute_signature
    checker = TwilioSignatureChecker(token)
    checker.check(url, params, sign(url, params), fragments=(fragment,))
    checker.check(url, params, sign(f"{url}#{fragment}", params), fragments=(fragment,))
    with pytest.raises(WebhookRejected):
        checker.check(url, params, sign(f"{url}#rc=1", params), fragments=(fragment,))
    with pytest.raises(WebhookRejected):
        checker.check(url, params, sign(f"{url}#{fragment}", params))
