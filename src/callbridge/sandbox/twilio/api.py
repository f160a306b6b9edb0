"""The emulated Calls REST resource of Twilio's 2010-04-01 API, as a Starlette app.

Implements https://www.twilio.com/docs/voice/api/call-resource as protocols.md 1
records it: create (201), fetch, update (``Status``, ``Twiml``, ``Url``), delete
(204) and list, with HTTP Basic auth, form-encoded PascalCase bodies, the call
JSON with RFC 2822 dates, and Twilio's error body
``{"code", "message", "more_info", "status"}``
(https://www.twilio.com/docs/api/errors). The app is mounted at
``/sandbox/twilio``, so the official ``twilio`` SDK works against it with
``client.api.base_url`` pointed there. It also serves the sandbox phone page's
socket at ``/phone/ws`` (the :class:`~callbridge.sandbox.twilio.emulator.PhoneHub`) and
its answering machine's greeting at ``/phone/greeting.wav``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
import secrets
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import parse_qs, urlencode

import phonenumbers
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from callbridge.sandbox.callee import greeting_wav
from callbridge.sandbox.twilio.amd import AmdRequest
from callbridge.sandbox.twilio.dialing_permissions import (
    DialingPermissions,
    dialing_permission_routes,
)
from callbridge.sandbox.twilio.numbers import PhoneNumbers, phone_number_routes
from callbridge.sandbox.twilio.rest import Handler, TwilioApiError
from callbridge.sandbox.twilio.sim import API_VERSION, SimCall, rfc2822

_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_EVENTS = frozenset({"initiated", "ringing", "answered", "completed"})
#: The call's sub-resources as twilio-oai's example Call lists them (key → path name);
#: ``feedback`` (a retired API) is not among them.
_SUBRESOURCES = {
    "notifications": "Notifications",
    "recordings": "Recordings",
    "payments": "Payments",
    "events": "Events",
    "siprec": "Siprec",
    "streams": "Streams",
    "transcriptions": "Transcriptions",
    "user_defined_message_subscriptions": "UserDefinedMessageSubscriptions",
    "user_defined_messages": "UserDefinedMessages",
}
_DEFAULT_TIME_LIMIT = 14_400.0


def _formatted(number: str) -> str:
    try:
        parsed = phonenumbers.parse(number)
    except phonenumbers.NumberParseException:
        return number
    fmt = (
        phonenumbers.PhoneNumberFormat.NATIONAL
        if parsed.country_code == 1
        else phonenumbers.PhoneNumberFormat.INTERNATIONAL
    )
    return str(phonenumbers.format_number(parsed, fmt))


def _date(value: Any) -> str | None:
    return rfc2822(value) if value is not None else None


#: What the sandbox charges per started minute of an answered call (Twilio's US rate order).
SANDBOX_RATE_PER_MINUTE = 0.014


def _price(status: str, duration: int | None) -> str | None:
    """Twilio's price string for a finished call: negative, five decimals, per started minute."""
    if status != "completed" or not duration:
        return None if status != "completed" else "0.00000"
    minutes = -(-duration // 60)
    return f"{-minutes * SANDBOX_RATE_PER_MINUTE:.5f}"


def call_json(call: SimCall) -> dict[str, Any]:
    """The call resource as Twilio renders it (protocols.md 1.3).

    Exactly the fields of twilio-oai's ``api.v2010.account.call`` schema, plus
    ``stir_verstat``, which twilio-python 9.13's ``CallInstance`` reads but the spec
    (d50069b) does not list (null: it describes inbound SHAKEN/STIR calls). No
    ``annotation``: older responses had it, the spec no longer does.
    """
    base = f"/{API_VERSION}/Accounts/{call.account_sid}/Calls/{call.sid}"
    return {
        "account_sid": call.account_sid,
        "answered_by": call.answered_by,
        "api_version": API_VERSION,
        "caller_name": None,
        "date_created": _date(call.date_created),
        "date_updated": _date(call.date_updated),
        "direction": "outbound-api",
        "duration": None if call.duration is None else str(call.duration),
        "end_time": _date(call.end_time),
        "forwarded_from": None,
        "from": call.from_,
        "from_formatted": _formatted(call.from_),
        "group_sid": None,
        "parent_call_sid": None,
        "phone_number_sid": None,
        "price": _price(call.status, call.duration),
        "price_unit": "USD",
        "queue_time": "0",
        "sid": call.sid,
        "start_time": _date(call.start_time),
        "status": call.status,
        "stir_verstat": None,
        "subresource_uris": {key: f"{base}/{name}.json" for key, name in _SUBRESOURCES.items()},
        "to": call.to,
        "to_formatted": _formatted(call.to),
        "trunk_sid": None,
        "uri": f"{base}.json",
    }


class CreateParams:
    """The validated form of a create request."""

    def __init__(self, form: dict[str, list[str]]) -> None:
        def one(name: str) -> str | None:
            values = form.get(name)
            return values[-1] if values else None

        to, from_ = one("To"), one("From")
        if not to:
            raise TwilioApiError(400, 21201, "No 'To' number is specified")
        if not (_E164.match(to) or to.startswith(("client:", "sip:"))):
            raise TwilioApiError(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        if not from_:
            raise TwilioApiError(400, 21603, "A 'From' phone number is required.")
        if not (_E164.match(from_) or from_.startswith("client:")):
            raise TwilioApiError(
                400,
                21212,
                f"The 'From' number {from_} is not a valid phone "
                "number, shortcode, or alphanumeric sender ID.",
            )
        if to == from_:
            raise TwilioApiError(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        self.url, self.twiml = one("Url"), one("Twiml")
        if not self.url and not self.twiml:
            raise TwilioApiError(400, 21205, "Url parameter is required.")
        if self.url and not self.url.startswith(("http://", "https://")):
            raise TwilioApiError(400, 21205, f"Url is not a valid URL: {self.url}")
        if self.url:
            self.twiml = None  # the spec: Twiml is ignored when Url is given
        self.to, self.from_ = to, from_
        self.method = _method(one("Method"))
        # FallbackUrl/FallbackMethod (twilio-oai CreateCall): requested when the TwiML
        # at Url cannot be retrieved or executed. Ignored with inline Twiml (nothing is
        # fetched) [unconfirmed: Twilio documents no fallback for Twiml=].
        self.fallback_url = one("FallbackUrl") or None
        if self.fallback_url and not self.fallback_url.startswith(("http://", "https://")):
            # The error code for a bad FallbackUrl is [unconfirmed]; 21205 is Url's.
            raise TwilioApiError(400, 21205, f"FallbackUrl is not a valid URL: {self.fallback_url}")
        self.fallback_method = _method(one("FallbackMethod"))
        self.status_callback = one("StatusCallback") or None
        self.status_callback_method = _method(one("StatusCallbackMethod"))
        events = {e for raw in form.get("StatusCallbackEvent", []) for e in raw.split()}
        if events - _EVENTS:
            raise TwilioApiError(
                400, 21626, f"StatusCallbackEvent {sorted(events - _EVENTS)} is not valid"
            )
        self.events = frozenset(events or {"completed"})
        self.timeout = _number(one("Timeout"), "Timeout", 60.0, 1.0, 600.0)
        self.time_limit = _number(one("TimeLimit"), "TimeLimit", _DEFAULT_TIME_LIMIT, 1.0, 86_400.0)
        self.amd = _amd(one)


def _amd(one: Callable[[str], str | None]) -> AmdRequest | None:
    """``MachineDetection`` and its companions (research notes §4.1), or None (AMD off).

    Out-of-range knobs are clamped to Twilio's documented ranges, as ``Timeout`` is;
    whether Twilio clamps or refuses them, and the error code for a bad
    ``MachineDetection`` value (20001 here), are unconfirmed.
    """
    mode = one("MachineDetection")
    if not mode:
        return None
    if mode not in ("Enable", "DetectMessageEnd"):
        raise TwilioApiError(400, 20001, f"MachineDetection {mode} is not valid")
    callback = one("AsyncAmdStatusCallback") or None
    if callback and not callback.startswith(("http://", "https://")):
        raise TwilioApiError(400, 20001, f"AsyncAmdStatusCallback is not a valid URL: {callback}")
    name = "MachineDetection"
    return AmdRequest(
        mode=mode,
        asynchronous=(one("AsyncAmd") or "false").lower() == "true",
        callback=callback,
        callback_method=_method(one("AsyncAmdStatusCallbackMethod")),
        timeout_s=_number(one(name + "Timeout"), name + "Timeout", 30.0, 3.0, 59.0),
        speech_threshold_s=_number(
            one(name + "SpeechThreshold"), name + "SpeechThreshold", 2400, 1000, 6000
        )
        / 1000,
        speech_end_threshold_s=_number(
            one(name + "SpeechEndThreshold"), name + "SpeechEndThreshold", 1200, 500, 5000
        )
        / 1000,
        silence_timeout_s=_number(
            one(name + "SilenceTimeout"), name + "SilenceTimeout", 5000, 2000, 10000
        )
        / 1000,
    )


def _method(value: str | None) -> str:
    method = (value or "POST").upper()
    if method not in ("GET", "POST"):
        raise TwilioApiError(400, 21209, f"Method {value} is not valid; use GET or POST")
    return method


def _number(value: str | None, name: str, default: float, low: float, high: float) -> float:
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except ValueError:
        raise TwilioApiError(400, 21210, f"{name} must be a number") from None
    return min(max(number, low), high)


async def _form(request: Request) -> dict[str, list[str]]:
    body = (await request.body()).decode("utf-8", errors="replace")
    return parse_qs(body, keep_blank_values=True)


class PhoneSocket(Protocol):
    """The sandbox phone page's socket (the emulator's phone hub)."""

    async def serve(self, websocket: WebSocket) -> None:
        """Serve one phone page until it goes away."""
        ...


class CallsBackend(Protocol):
    """What the REST app needs from the emulator behind it (the :class:`TwilioEmulator`)."""

    account_sid: str
    auth_token: str
    calls: dict[str, SimCall]
    dialing_permissions: DialingPermissions
    numbers: PhoneNumbers

    @property
    def phone_hub(self) -> PhoneSocket:
        """The sandbox phone page's hub."""
        ...

    def take_create_fault(self, *, placed: bool) -> None:
        """Raise the next injected create failure, if one of this kind is next
        (before placing the call, or after: a 5xx that lost a placed call)."""
        ...

    def take_list_fault(self) -> None:
        """Raise the next injected call-list failure, if one is queued."""
        ...

    def take_create_delay(self) -> tuple[float, bool]:
        """The next create's injected delay, and whether the call is placed before it."""
        ...

    def create_call(self, params: CreateParams) -> SimCall:
        """Place a call (every time: Twilio's create is not idempotent)."""
        ...

    async def update_call(self, call: SimCall, form: dict[str, str]) -> None:
        """Apply a call update (``Status``, ``Twiml``, ``Url``)."""
        ...

    def delete_call(self, call: SimCall) -> None:
        """Delete a call's record."""
        ...


def build_app(emulator: CallsBackend) -> Starlette:
    """The Starlette app of ``emulator``'s REST resource and phone socket."""

    def authorised(handler: Handler) -> Handler:
        async def wrapper(request: Request) -> Response:
            try:
                _check_auth(request, emulator.account_sid, emulator.auth_token)
                return await handler(request)
            except TwilioApiError as exc:
                return exc.response()

        return wrapper

    def find(request: Request) -> SimCall:
        call = emulator.calls.get(request.path_params["sid"])
        if call is None:
            raise TwilioApiError(
                404, 20404, f"The requested resource {request.url.path} was not found"
            )
        return call

    async def create(request: Request) -> Response:
        emulator.take_create_fault(placed=False)
        params = CreateParams(await _form(request))
        delay, placed_late = emulator.take_create_delay()
        if placed_late:
            await asyncio.sleep(delay)
        call = emulator.create_call(params)
        if delay and not placed_late:
            await asyncio.sleep(delay)
        emulator.take_create_fault(placed=True)
        return JSONResponse(call_json(call), status_code=201)

    async def fetch(request: Request) -> Response:
        return JSONResponse(call_json(find(request)))

    async def update(request: Request) -> Response:
        call = find(request)
        form = {k: v[-1] for k, v in (await _form(request)).items()}
        await emulator.update_call(call, form)
        return JSONResponse(call_json(call))

    async def delete(request: Request) -> Response:
        emulator.delete_call(find(request))
        return Response(status_code=204)

    async def list_calls(request: Request) -> Response:
        emulator.take_list_fault()
        query = request.query_params
        calls = sorted(emulator.calls.values(), key=lambda c: c.date_created, reverse=True)
        for name, attr in (("To", "to"), ("From", "from_"), ("Status", "status")):
            if query.get(name):
                calls = [c for c in calls if getattr(c, attr) == query[name]]
        size = int(_number(query.get("PageSize"), "PageSize", 50, 1, 1000))
        page = int(_number(query.get("Page"), "Page", 0, 0, 1_000_000))
        path = f"/{API_VERSION}/Accounts/{emulator.account_sid}/Calls.json"
        filters = {k: query[k] for k in ("To", "From", "Status") if query.get(k)}

        def uri(number: int) -> str:
            return path + "?" + urlencode(filters | {"PageSize": size, "Page": number})

        more = len(calls) > (page + 1) * size
        return JSONResponse(
            {
                "calls": [call_json(c) for c in calls[page * size : (page + 1) * size]],
                # An empty page says end 0, as twilio-oai's examples show.
                "end": max(page * size, min(len(calls), (page + 1) * size) - 1),
                "first_page_uri": uri(0),
                "next_page_uri": uri(page + 1) + f"&PageToken=PA{secrets.token_hex(16)}"
                if more
                else None,
                "page": page,
                "page_size": size,
                "previous_page_uri": uri(page - 1) if page > 0 else None,
                "start": page * size,
                "uri": uri(page),
            }
        )

    async def phone(websocket: WebSocket) -> None:
        await emulator.phone_hub.serve(websocket)

    async def greeting(request: Request) -> Response:
        # The phone page's "let it go to voicemail": the recorded greeting and its beep.
        wav = await asyncio.to_thread(greeting_wav)
        return Response(wav, media_type="audio/wav", headers={"Cache-Control": "no-store"})

    calls = "/2010-04-01/Accounts/{account_sid}/Calls"
    return Starlette(
        routes=[
            Route(f"{calls}.json", authorised(create), methods=["POST"]),
            Route(f"{calls}.json", authorised(list_calls), methods=["GET"]),
            Route(calls + "/{sid}.json", authorised(fetch), methods=["GET"]),
            Route(calls + "/{sid}.json", authorised(update), methods=["POST"]),
            Route(calls + "/{sid}.json", authorised(delete), methods=["DELETE"]),
            WebSocketRoute("/phone/ws", phone),
            Route("/phone/greeting.wav", greeting, methods=["GET"]),
            *dialing_permission_routes(emulator.dialing_permissions, authorised),
            *phone_number_routes(emulator.numbers, authorised, emulator.account_sid),
        ]
    )


def _check_auth(request: Request, account_sid: str, auth_token: str) -> None:
    header = request.headers.get("Authorization", "")
    scheme, _, encoded = header.partition(" ")
    try:
        user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        user = password = ""
    ok = (
        scheme.lower() == "basic"
        and secrets.compare_digest(user.encode(), account_sid.encode())
        and secrets.compare_digest(password.encode(), auth_token.encode())
        and request.path_params.get("account_sid", account_sid) == account_sid  # voice/v1: none
    )
    if not ok:
        raise TwilioApiError(401, 20003, "Authenticate")
