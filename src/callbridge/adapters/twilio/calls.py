"""Twilio call control through the official SDK (the ``TelephonyProvider`` adapter).

Implements the Calls resource (https://www.twilio.com/docs/voice/api/call-resource):
create, fetch, list by ``To`` and update (``Status=completed``, ``Twiml``, ``Url``).
The REST root is configurable (``TWILIO_API_BASE_URL``), which is all that tells
the vendor from the sandbox emulator. Vendor exceptions are translated here, at
the edge, into :class:`~callbridge.errors.ProviderError` subclasses.
"""

from __future__ import annotations

from typing import Any

import httpx
from twilio.rest import Client

from callbridge.adapters.twilio.errors import twilio_errors
from callbridge.adapters.twilio.http_client import HttpxTwilioClient
from callbridge.domain.twilio_times import twilio_time
from callbridge.errors import NotFound, TwilioRefused
from callbridge.ports import CreateCallRequest, MachineDetection, ProviderCall

#: Twilio error codes that mean "the call is already over" on update.
_ALREADY_ENDED = {20404, 21220}


def _provider_call(instance: Any) -> ProviderCall:
    """Our view of twilio-python's ``CallInstance``.

    ``duration`` is a string of seconds in Twilio's JSON; ``start_time``,
    ``end_time`` and ``date_created`` come parsed from RFC 2822 by the SDK (a string
    is read too, in case a version hands them over raw). Twilio documents
    ``end_time`` as empty when the call did not complete successfully, so a busy or
    unanswered call may have none.
    """
    duration = str(getattr(instance, "duration", None) or "")
    return ProviderCall(
        sid=str(instance.sid),
        status=str(instance.status),
        duration=int(duration) if duration.isdigit() else None,
        price=getattr(instance, "price", None),
        price_unit=getattr(instance, "price_unit", None),
        answered_by=getattr(instance, "answered_by", None),
        start_time=twilio_time(getattr(instance, "start_time", None)),
        end_time=twilio_time(getattr(instance, "end_time", None)),
        date_created=twilio_time(getattr(instance, "date_created", None)),
    )


def _amd_fields(amd: MachineDetection | None) -> dict[str, Any]:
    """twilio-python's keyword arguments for asynchronous AMD (research notes §4.1)."""
    if amd is None:
        return {}
    fields: dict[str, Any] = {
        "machine_detection": amd.mode,
        "async_amd": "true",  # typed str in twilio-python, not bool
        "async_amd_status_callback": amd.status_callback,
        "async_amd_status_callback_method": "POST",
    }
    knobs = {
        "machine_detection_timeout": amd.timeout_s,
        "machine_detection_speech_threshold": amd.speech_threshold_ms,
        "machine_detection_speech_end_threshold": amd.speech_end_threshold_ms,
        "machine_detection_silence_timeout": amd.silence_timeout_ms,
    }
    return fields | {name: value for name, value in knobs.items() if value is not None}


class TwilioCalls:
    """Twilio's Calls resource via twilio-python's async API."""

    def __init__(
        self,
        *,
        account_sid: str,
        auth_token: str,
        api_base_url: str,
        http: httpx.AsyncClient,
        request_timeout: float = 10.0,
    ) -> None:
        self._http_client = HttpxTwilioClient(http, timeout=request_timeout)
        self._client = Client(account_sid, auth_token, http_client=self._http_client)
        self._client.api.base_url = api_base_url.rstrip("/")

    @property
    def request_timeout(self) -> float:
        """Seconds to wait for one Twilio REST answer before the outcome counts as unknown."""
        return float(self._http_client.timeout)

    @request_timeout.setter
    def request_timeout(self, seconds: float) -> None:
        if seconds <= 0:
            raise ValueError("the Twilio request timeout must be positive")
        self._http_client.timeout = seconds

    async def create_call(self, request: CreateCallRequest) -> ProviderCall:
        """Place a call with status callbacks for every progress event.

        Not idempotent: Twilio places a new call for every create it carries out,
        so the caller must look (:meth:`recent_calls`) before retrying.
        """
        with twilio_errors("create the call"):
            instance = await self._client.calls.create_async(
                to=request.to,
                from_=request.from_,
                url=request.url,
                method="POST",
                status_callback=request.status_callback,
                status_callback_method="POST",
                status_callback_event=["initiated", "ringing", "answered", "completed"],
                timeout=request.timeout,
                time_limit=request.time_limit,
                **(
                    {"fallback_url": request.fallback_url, "fallback_method": "POST"}
                    if request.fallback_url
                    else {}
                ),
                **_amd_fields(request.machine_detection),
            )
        return _provider_call(instance)

    async def fetch_call(self, sid: str) -> ProviderCall:
        """Fetch one call."""
        try:
            with twilio_errors("fetch the call"):
                instance = await self._client.calls(sid).fetch_async()
        except TwilioRefused as exc:
            if exc.provider_code == 20404:
                raise NotFound(f"Twilio has no call {sid}") from exc
            raise
        return _provider_call(instance)

    async def recent_calls(self, *, to: str, from_: str, limit: int) -> list[ProviderCall]:
        """Up to ``limit`` calls from ``from_`` to ``to`` (one page, as Twilio orders it).

        No date filter is sent: Twilio's ``StartTime`` filters are whole UTC days and
        match ``start_time``, which a call still queued does not have yet; the caller
        compares ``date_created`` itself.
        """
        with twilio_errors("list calls"):
            calls = await self._client.calls.list_async(
                to=to, from_=from_, limit=limit, page_size=limit
            )
        return [_provider_call(c) for c in calls]

    async def hang_up(self, sid: str) -> None:
        """End a live call; a call that already ended is fine."""
        await self._update(sid, status="completed")

    async def redirect(self, sid: str, *, twiml: str | None = None, url: str | None = None) -> None:
        """Give a live call new TwiML (inline or by URL)."""
        if (twiml is None) == (url is None):
            raise ValueError("give exactly one of twiml and url")
        if twiml is not None:
            await self._update(sid, twiml=twiml)
        else:
            await self._update(sid, url=url, method="POST")

    async def _update(self, sid: str, **fields: Any) -> None:
        try:
            with twilio_errors("update the call"):
                await self._client.calls(sid).update_async(**fields)
        except TwilioRefused as exc:
            if exc.provider_code in _ALREADY_ENDED:
                return
            raise

    async def aclose(self) -> None:
        """Nothing to close: the ``httpx`` client belongs to the container."""
