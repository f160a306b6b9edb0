"""Twilio's Voice Dialing Permissions through the official SDK (the ``DialingPermissionsProvider``).

Reads the Countries resource
(https://www.twilio.com/docs/voice/api/dialingpermissions-country-resource) with
``client.voice.v1.dialing_permissions.countries.list_async``, every page, over our
``httpx`` transport. The resource lives on the ``voice.twilio.com`` domain, not
``api.twilio.com``: with the default ``TWILIO_API_BASE_URL`` the SDK's own voice domain
is used, and an overridden one (a proxy, the sandbox emulator) serves both
(:func:`voice_base_url`). Vendor exceptions are translated here into
:class:`~callbridge.errors.ProviderError` subclasses.
"""

from __future__ import annotations

from typing import Any

import httpx

from callbridge.adapters.twilio.errors import twilio_errors
from callbridge.adapters.twilio.http_client import sdk_client
from callbridge.domain.dialing_permissions import CountryPermission

#: Twilio's REST root for the 2010-04-01 API, the default of ``TWILIO_API_BASE_URL``.
DEFAULT_API_BASE_URL = "https://api.twilio.com"
#: The domain of Twilio's Voice v1 API, where the Dialing Permissions live.
DEFAULT_VOICE_BASE_URL = "https://voice.twilio.com"
_ACTION = "list the voice dialing permissions"


def voice_base_url(api_base_url: str) -> str:
    """The Voice API's root for a ``TWILIO_API_BASE_URL``.

    Twilio's own root maps to ``https://voice.twilio.com``; any other root (a proxy or
    the sandbox emulator) is taken to serve the voice paths (``/v1/...``) as well.
    """
    base = api_base_url.rstrip("/")
    return DEFAULT_VOICE_BASE_URL if base == DEFAULT_API_BASE_URL else base


def _permission(instance: Any) -> CountryPermission:
    return CountryPermission(
        iso_code=str(instance.iso_code or "").upper(),
        name=str(instance.name or ""),
        country_codes=tuple(str(code) for code in instance.country_codes or ()),
        low_risk_numbers_enabled=bool(instance.low_risk_numbers_enabled),
        high_risk_special_numbers_enabled=bool(instance.high_risk_special_numbers_enabled),
        high_risk_tollfraud_numbers_enabled=bool(instance.high_risk_tollfraud_numbers_enabled),
    )


class TwilioDialingPermissions:
    """The account's voice dialing permissions, read with twilio-python's async API.

    Each read opens and closes its own ``httpx`` client, so it works from any event
    loop (the start-up check runs before the server's loop exists).

    Args:
        account_sid: the account whose permissions are read.
        auth_token: its auth token (HTTP Basic password).
        voice_base_url: the Voice API root (see :func:`voice_base_url`).
        request_timeout: seconds to wait for each page.
        transport: an ``httpx`` transport to send through (tests, in-process emulator).
    """

    def __init__(
        self,
        *,
        account_sid: str,
        auth_token: str,
        voice_base_url: str,
        request_timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._account_sid = account_sid
        self._auth_token = auth_token
        self._base_url = voice_base_url.rstrip("/")
        self._timeout = request_timeout
        self._transport = transport

    async def list_countries(self) -> list[CountryPermission]:
        """Every country Twilio lists for the account, all pages.

        Raises:
            ProviderError: Twilio could not be reached or refused (``TwilioRefused``).
        """
        async with sdk_client(
            self._account_sid,
            self._auth_token,
            request_timeout=self._timeout,
            transport=self._transport,
        ) as client:
            client.voice.base_url = self._base_url
            with twilio_errors(_ACTION):
                countries = client.voice.v1.dialing_permissions.countries
                records = await countries.list_async(page_size=1000)
        return [_permission(record) for record in records]
