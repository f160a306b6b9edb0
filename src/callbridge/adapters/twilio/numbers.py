"""Whether the caller id may place voice calls, read through the official twilio SDK.

Implements twilio-research.md §5.3 with twilio-python 9's async API:
``client.api.v2010.accounts(sid).incoming_phone_numbers.list_async(phone_number=…)``
(https://www.twilio.com/docs/phone-numbers/api/incomingphonenumber-resource), then
``outgoing_caller_ids.list_async(phone_number=…)``
(https://www.twilio.com/docs/voice/api/outgoing-caller-ids). Twilio matches
``PhoneNumber`` partially, so the number is compared exactly here. Vendor exceptions are
translated into :class:`~callbridge.errors.ProviderError` subclasses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from callbridge.adapters.twilio.errors import twilio_errors
from callbridge.adapters.twilio.http_client import sdk_client


@dataclass(frozen=True, slots=True)
class CallerIdStatus:
    """What the account says about one number."""

    owned: bool
    voice_capable: bool
    verified_caller_id: bool

    @property
    def usable(self) -> bool:
        """Whether it may be the ``From`` of an outgoing voice call."""
        return (self.owned and self.voice_capable) or self.verified_caller_id


def _voice(capabilities: Any) -> bool:
    # The spec's keys are lowercase; fixtures mix cases, so read them case-blind.
    if not isinstance(capabilities, dict):
        return False
    return any(str(k).lower() == "voice" and v is True for k, v in capabilities.items())


class TwilioNumbers:
    """Reads the account's IncomingPhoneNumbers and OutgoingCallerIds.

    Args:
        account_sid: the account.
        auth_token: its auth token.
        api_base_url: ``TWILIO_API_BASE_URL`` (Twilio or the emulator).
        request_timeout: seconds to wait for each page.
        transport: an ``httpx`` transport to send through (tests, in-process emulator).
    """

    def __init__(
        self,
        *,
        account_sid: str,
        auth_token: str,
        api_base_url: str,
        request_timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._sid = account_sid
        self._token = auth_token
        self._base = api_base_url.rstrip("/")
        self._timeout = request_timeout
        self._transport = transport

    async def caller_id_status(self, number: str) -> CallerIdStatus:
        """What the account says about ``number`` (E.164).

        Raises:
            ProviderError: Twilio could not be reached or refused.
        """
        async with sdk_client(
            self._sid, self._token, request_timeout=self._timeout, transport=self._transport
        ) as client:
            client.api.base_url = self._base
            account = client.api.v2010.accounts(self._sid)
            with twilio_errors("list the account's phone numbers"):
                owned = [
                    n
                    for n in await account.incoming_phone_numbers.list_async(
                        phone_number=number, page_size=50
                    )
                    if n.phone_number == number
                ]
            with twilio_errors("list the account's verified caller ids"):
                verified = [
                    c
                    for c in await account.outgoing_caller_ids.list_async(
                        phone_number=number, page_size=50
                    )
                    if c.phone_number == number
                ]
        return CallerIdStatus(
            owned=bool(owned),
            voice_capable=any(_voice(n.capabilities) for n in owned),
            verified_caller_id=bool(verified),
        )
