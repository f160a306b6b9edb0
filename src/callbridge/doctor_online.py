"""``callbridge doctor --online``: the real accounts, beside the dialing-permissions check.

Each finding is one line that says what to do. Problems make ``doctor`` exit 1; warnings
do not.

- ElevenLabs: the agent exists, and its tools, client events, dynamic variables and
  overrides are as ``callbridge setup`` leaves them (the same pure planner decides);
  the cost of its audio formats; whether ``ELEVENLABS_WEBHOOK_SECRET`` is set.
- Twilio: ``TWILIO_PHONE_NUMBER`` is a voice-capable number of the account
  (IncomingPhoneNumbers) or a verified caller id (OutgoingCallerIds).
- Our address: ``PUBLIC_BASE_URL`` answers ``/healthz`` over https with a certificate
  this machine trusts (a check from here, not from Twilio's network). The sandbox is
  plain http, so there the check is skipped and says so.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx

from callbridge.errors import CallbridgeError, NotFound
from callbridge.settings import Settings

if TYPE_CHECKING:
    from callbridge.bootstrap import VendorEndpoints

__all__ = ["Finding", "online_findings"]


@dataclass(frozen=True, slots=True)
class Finding:
    """One line of the report: ``ok``, ``warning`` or ``problem``."""

    level: str
    text: str


def online_findings(settings: Settings) -> list[Finding]:
    """Check ElevenLabs, the caller id and the public address; every finding, in order."""
    return asyncio.run(_all(settings))


async def _all(settings: Settings) -> list[Finding]:
    from callbridge.bootstrap import vendor_endpoints

    try:
        ends = vendor_endpoints(settings, in_process=True)
    except CallbridgeError as exc:
        return [Finding("problem", str(exc))]
    findings: list[Finding] = []
    async with httpx.AsyncClient(transport=ends.elevenlabs_transport) as http:
        findings += await _elevenlabs(settings, http, ends)
    findings += await _caller_id(settings, ends)
    findings += await _public_address(settings)
    return findings


async def _elevenlabs(
    settings: Settings, http: httpx.AsyncClient, ends: VendorEndpoints
) -> list[Finding]:
    from callbridge.cli_setup import agent_setup_for

    try:
        reading = await agent_setup_for(settings, http, ends).read()
    except NotFound:
        return [
            Finding(
                "problem",
                f"ElevenLabs has no agent {settings.elevenlabs_agent_id or ''!r} for this key: "
                "check ELEVENLABS_AGENT_ID and ELEVENLABS_API_KEY.",
            )
        ]
    except CallbridgeError as exc:
        return [Finding("problem", f"The ElevenLabs agent could not be read: {exc}.")]
    found = [Finding("ok", f"The ElevenLabs agent {reading.agent.get('name', '')!r} exists.")]
    for change in reading.plan.changes:
        found.append(
            Finding("problem", f"The agent needs to {change.describe()}: run `callbridge setup`.")
        )
    if reading.plan.up_to_date:
        found.append(
            Finding("ok", "The agent's tools, client events, variables and overrides are set up.")
        )
    found += [Finding("warning", note) for note in reading.notes]
    for cost in reading.plan.audio:
        if cost.passthrough:
            found.append(
                Finding("ok", f"Agent audio {cost.direction} is {cost.format}: {cost.cost}.")
            )
        elif cost.cost.startswith("unknown"):
            found.append(
                Finding(
                    "problem",
                    f"Agent audio {cost.direction} is {cost.format}, which the bridge cannot "
                    "carry: run `callbridge setup --ulaw`.",
                )
            )
        else:
            found.append(
                Finding(
                    "warning",
                    f"Agent audio {cost.direction} is {cost.format} ({cost.cost}): if the agent "
                    "serves only the phone, `callbridge setup --ulaw` removes the transcoding.",
                )
            )
    if settings.elevenlabs_webhook_secret:
        found.append(Finding("ok", "ELEVENLABS_WEBHOOK_SECRET is set."))
    elif settings.use_sandbox:
        found.append(
            Finding(
                "warning",
                "ELEVENLABS_WEBHOOK_SECRET is not set: the sandbox sends no post-call webhooks.",
            )
        )
    else:
        found.append(
            Finding(
                "problem",
                "ELEVENLABS_WEBHOOK_SECRET is not set: add a post-call webhook to "
                "{PUBLIC_BASE_URL}/api/webhooks/elevenlabs in ElevenLabs and put its secret here.",
            )
        )
    return found


async def _caller_id(settings: Settings, ends: VendorEndpoints) -> list[Finding]:
    from callbridge.adapters.twilio.numbers import TwilioNumbers
    from callbridge.domain.privacy import mask_number

    if not (ends.account_sid and ends.auth_token and ends.from_number):
        return [
            Finding(
                "problem",
                "TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN and TWILIO_PHONE_NUMBER are needed "
                "to check the caller id.",
            )
        ]
    numbers = TwilioNumbers(
        account_sid=ends.account_sid,
        auth_token=ends.auth_token,
        api_base_url=ends.twilio_base,
        request_timeout=settings.twilio_timeout,
        transport=ends.twilio_transport,
    )
    masked = mask_number(ends.from_number)
    try:
        status = await numbers.caller_id_status(ends.from_number)
    except CallbridgeError as exc:
        return [Finding("problem", f"Twilio's phone numbers could not be read: {exc}.")]
    if status.owned and status.voice_capable:
        return [Finding("ok", f"TWILIO_PHONE_NUMBER {masked} is a voice number of the account.")]
    if status.verified_caller_id:
        return [Finding("ok", f"TWILIO_PHONE_NUMBER {masked} is a verified caller id.")]
    if status.owned:
        return [
            Finding(
                "problem",
                f"TWILIO_PHONE_NUMBER {masked} cannot make voice calls: "
                "use a voice-capable Twilio number.",
            )
        ]
    return [
        Finding(
            "problem",
            f"TWILIO_PHONE_NUMBER {masked} is neither a number of this Twilio account nor a "
            "verified caller id: buy or verify it in the Twilio console, or fix the setting.",
        )
    ]


async def _public_address(settings: Settings) -> list[Finding]:
    if settings.use_sandbox:
        return [
            Finding(
                "warning",
                "PUBLIC_BASE_URL check skipped: the sandbox is plain http on this machine.",
            )
        ]
    base = settings.public_base_url
    if not base:
        return [
            Finding("problem", "PUBLIC_BASE_URL is not set: give the https address Twilio reaches.")
        ]
    if not base.startswith("https://"):
        return [Finding("problem", "PUBLIC_BASE_URL must start with https:// for Twilio.")]
    try:
        async with httpx.AsyncClient(timeout=10.0, verify=True) as http:
            response = await http.get(f"{base}/healthz")
    except httpx.ConnectError as exc:
        if _certificate_error(exc):
            return [
                Finding(
                    "problem",
                    f"{base} has no certificate Twilio will trust: install one from a public "
                    "CA (e.g. Let's Encrypt) with its full chain.",
                )
            ]
        return [
            Finding(
                "problem",
                f"{base} does not answer from here ({type(exc).__name__}): check DNS, the "
                "firewall and that `callbridge serve` runs behind it.",
            )
        ]
    except httpx.HTTPError as exc:
        return [
            Finding("problem", f"{base}/healthz failed ({type(exc).__name__}): check the proxy.")
        ]
    if response.status_code != 200:
        return [
            Finding(
                "problem",
                f"{base}/healthz answered HTTP {response.status_code}: "
                "point the proxy at callbridge.",
            )
        ]
    return [Finding("ok", f"{base}/healthz answers over https with a valid certificate.")]


def _certificate_error(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(
            seen
        ):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
