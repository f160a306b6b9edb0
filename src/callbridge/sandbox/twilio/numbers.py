"""The emulated account's phone numbers: IncomingPhoneNumbers and OutgoingCallerIds.

Implements the two list resources of Twilio's 2010-04-01 API as twilio-oai
(``spec/json/twilio_api_v2010.json``, ListIncomingPhoneNumber / ListOutgoingCallerId)
describes them and twilio-python 9 reads them:

- ``GET /2010-04-01/Accounts/{AccountSid}/IncomingPhoneNumbers.json`` with the filters
  ``PhoneNumber`` (digits, ``*`` a wildcard for one digit; Twilio documents partial
  matching, so callers compare ``phone_number`` themselves), ``FriendlyName``,
  ``Origin``; paged with ``PageSize`` (default 50) and ``Page``; the list key is
  ``incoming_phone_numbers``.
- ``GET /2010-04-01/Accounts/{AccountSid}/OutgoingCallerIds.json`` with ``PhoneNumber``
  (exact) and ``FriendlyName``; the list key is ``outgoing_caller_ids``, whose items have
  no capabilities (a verified caller id may be used as ``From`` by definition).

https://www.twilio.com/docs/phone-numbers/api/incomingphonenumber-resource,
https://www.twilio.com/docs/voice/api/outgoing-caller-ids. The account starts owning
the sandbox's caller id with voice and SMS; tests add numbers and caller ids.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from callbridge.sandbox.twilio.rest import Handler, TwilioApiError
from callbridge.sandbox.twilio.sim import API_VERSION, rfc2822

__all__ = ["SANDBOX_NUMBER", "PhoneNumbers", "phone_number_routes"]

#: The sandbox's caller id unless TWILIO_PHONE_NUMBER is set (a documented example).
SANDBOX_NUMBER = "+12025550100"


@dataclass
class OwnedNumber:
    """A number the account owns, with what it can do."""

    phone_number: str
    voice: bool = True
    sms: bool = True
    sid: str = field(default_factory=lambda: "PN" + secrets.token_hex(16))


@dataclass
class CallerId:
    """A verified outgoing caller id."""

    phone_number: str
    sid: str = field(default_factory=lambda: "PN" + secrets.token_hex(16))


class PhoneNumbers:
    """The account's numbers and verified caller ids.

    Args:
        owned: numbers the account starts with (voice and SMS capable).
        clock: wall-clock unix seconds, for the dates.
    """

    def __init__(self, owned: Iterable[str], *, clock: Callable[[], float]) -> None:
        self.owned: list[OwnedNumber] = [OwnedNumber(n) for n in owned]
        self.caller_ids: list[CallerId] = []
        self._created = datetime.fromtimestamp(clock(), UTC)

    def add_number(self, phone_number: str, *, voice: bool = True, sms: bool = True) -> None:
        """Give the account a number."""
        self.owned.append(OwnedNumber(phone_number, voice=voice, sms=sms))

    def verify_caller_id(self, phone_number: str) -> None:
        """Add a verified outgoing caller id."""
        self.caller_ids.append(CallerId(phone_number))

    def clear(self) -> None:
        """The account owns nothing and has verified nothing."""
        self.owned.clear()
        self.caller_ids.clear()

    def incoming_json(self, number: OwnedNumber, account_sid: str) -> dict[str, Any]:
        """One IncomingPhoneNumber as Twilio renders it (every field of the spec)."""
        date = rfc2822(self._created)
        return {
            "account_sid": account_sid,
            "address_sid": None,
            "address_requirements": "none",
            "api_version": API_VERSION,
            "beta": False,
            "capabilities": {"voice": number.voice, "sms": number.sms, "mms": False, "fax": False},
            "date_created": date,
            "date_updated": date,
            "friendly_name": _friendly(number.phone_number),
            "identity_sid": None,
            "phone_number": number.phone_number,
            "origin": "twilio",
            "sid": number.sid,
            "sms_application_sid": None,
            "sms_fallback_method": "POST",
            "sms_fallback_url": "",
            "sms_method": "POST",
            "sms_url": "",
            "status_callback": "",
            "status_callback_method": "POST",
            "trunk_sid": None,
            "uri": f"/{API_VERSION}/Accounts/{account_sid}/IncomingPhoneNumbers/{number.sid}.json",
            "voice_receive_mode": "voice",
            "voice_application_sid": None,
            "voice_caller_id_lookup": False,
            "voice_fallback_method": "POST",
            "voice_fallback_url": None,
            "voice_method": "POST",
            "voice_url": None,
            "emergency_status": "Inactive",
            "emergency_address_sid": None,
            "emergency_address_status": "unregistered",
            "bundle_sid": None,
            "status": "in-use",
            "type": "local",
        }

    def caller_id_json(self, caller_id: CallerId, account_sid: str) -> dict[str, Any]:
        """One OutgoingCallerId as Twilio renders it."""
        date = rfc2822(self._created)
        return {
            "sid": caller_id.sid,
            "date_created": date,
            "date_updated": date,
            "friendly_name": _friendly(caller_id.phone_number),
            "account_sid": account_sid,
            "phone_number": caller_id.phone_number,
            "uri": f"/{API_VERSION}/Accounts/{account_sid}/OutgoingCallerIds/{caller_id.sid}.json",
        }


def _friendly(number: str) -> str:
    digits = number.removeprefix("+1")
    if len(digits) == 10 and number.startswith("+1"):
        return f"({digits[:3]}) {digits[3:6]}-{digits[6:]}"
    return number


def _matches(pattern: str, number: str) -> bool:
    """Twilio's ``PhoneNumber`` filter: digits in order, ``*`` any one digit, partial."""
    wanted = re.sub(r"[^\d*]", "", pattern)
    regex = "".join(r"\d" if ch == "*" else ch for ch in wanted)
    return bool(re.search(regex, re.sub(r"\D", "", number)))


def _page(
    request: Request, key: str, path: str, items: list[dict[str, Any]], filters: dict[str, str]
) -> JSONResponse:
    query = request.query_params
    try:
        size = min(max(int(query.get("PageSize") or 50), 1), 1000)
        page = max(int(query.get("Page") or 0), 0)
    except ValueError:
        raise TwilioApiError(400, 20001, "PageSize and Page must be integers") from None

    def uri(number: int) -> str:
        return path + "?" + urlencode(filters | {"PageSize": size, "Page": number})

    more = len(items) > (page + 1) * size
    return JSONResponse(
        {
            key: items[page * size : (page + 1) * size],
            "end": max(min(len(items), (page + 1) * size) - 1, 0),
            "first_page_uri": uri(0),
            "next_page_uri": uri(page + 1) if more else None,
            "page": page,
            "page_size": size,
            "previous_page_uri": uri(page - 1) if page > 0 else None,
            "start": page * size,
            "uri": uri(page),
        }
    )


def phone_number_routes(
    numbers: PhoneNumbers, authorised: Callable[[Handler], Handler], account_sid: str
) -> list[Route]:
    """The two list routes, behind the emulator's HTTP Basic check."""
    base = f"/{API_VERSION}/Accounts/{{account_sid}}"

    async def incoming(request: Request) -> Response:
        query = request.query_params
        found = [
            n
            for n in numbers.owned
            if (not query.get("PhoneNumber") or _matches(query["PhoneNumber"], n.phone_number))
            and (
                not query.get("FriendlyName") or query["FriendlyName"] == _friendly(n.phone_number)
            )
            and query.get("Origin", "twilio") == "twilio"
        ]
        filters = {k: query[k] for k in ("PhoneNumber", "FriendlyName", "Origin") if query.get(k)}
        path = f"/{API_VERSION}/Accounts/{account_sid}/IncomingPhoneNumbers.json"
        items = [numbers.incoming_json(n, account_sid) for n in found]
        return _page(request, "incoming_phone_numbers", path, items, filters)

    async def caller_ids(request: Request) -> Response:
        query = request.query_params
        found = [
            c
            for c in numbers.caller_ids
            if (not query.get("PhoneNumber") or query["PhoneNumber"] == c.phone_number)
            and (
                not query.get("FriendlyName") or query["FriendlyName"] == _friendly(c.phone_number)
            )
        ]
        filters = {k: query[k] for k in ("PhoneNumber", "FriendlyName") if query.get(k)}
        path = f"/{API_VERSION}/Accounts/{account_sid}/OutgoingCallerIds.json"
        items = [numbers.caller_id_json(c, account_sid) for c in found]
        return _page(request, "outgoing_caller_ids", path, items, filters)

    return [
        Route(f"{base}/IncomingPhoneNumbers.json", authorised(incoming), methods=["GET"]),
        Route(f"{base}/OutgoingCallerIds.json", authorised(caller_ids), methods=["GET"]),
    ]
