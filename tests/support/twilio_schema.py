"""The few facts of Twilio's published OpenAPI that our contract tests check against.

Our own transcription, field by field, of github.com/twilio/twilio-oai at commit
d50069b44ea8cd23141385bdb6db48f16ff75bb5 (2026-04-14):

- ``spec/json/twilio_api_v2010.json``: schemas ``api.v2010.account.call``,
  ``…incoming_phone_number`` and ``…outgoing_caller_id`` (every property is
  ``nullable: true``) with their enums (``call_enum_status``,
  ``incoming_phone_number_enum_*``), and the list pages (``ListCallResponse``, and
  the same keys around ``incoming_phone_numbers`` / ``outgoing_caller_ids``); the
  call's sub-resource keys are those of the spec's example Call.
- ``spec/json/twilio_voice_v1.json``: schemas
  ``voice.v1.dialing_permissions.dialing_permissions_country`` (and ``-instance``,
  identical), ``…dialing_permissions_hrs_prefixes``, and the ``content``/``meta``
  page of the v1 list operations.

Nothing is copied from the spec files themselves; where Twilio adds a field after
that commit, the installed twilio-python's instance class is the second source
(see :func:`sdk_payload_keys`).
"""

from __future__ import annotations

import inspect
import re
from email.utils import parsedate_to_datetime
from typing import Any

#: Field → (JSON type, format or None). All nullable.
CALL_FIELDS: dict[str, tuple[str, str | None]] = {
    "sid": ("string", None),
    "date_created": ("string", "date-time-rfc-2822"),
    "date_updated": ("string", "date-time-rfc-2822"),
    "parent_call_sid": ("string", None),
    "account_sid": ("string", None),
    "to": ("string", None),
    "to_formatted": ("string", None),
    "from": ("string", None),
    "from_formatted": ("string", None),
    "phone_number_sid": ("string", None),
    "status": ("string", "call_enum_status"),
    "start_time": ("string", "date-time-rfc-2822"),
    "end_time": ("string", "date-time-rfc-2822"),
    "duration": ("string", None),
    "price": ("string", None),
    "price_unit": ("string", "currency"),
    "direction": ("string", None),
    "answered_by": ("string", None),
    "api_version": ("string", None),
    "forwarded_from": ("string", None),
    "group_sid": ("string", None),
    "caller_name": ("string", None),
    "queue_time": ("string", None),
    "trunk_sid": ("string", None),
    "uri": ("string", None),
    "subresource_uris": ("object", "uri-map"),
}

CALL_STATUSES = frozenset(
    {"queued", "ringing", "in-progress", "completed", "busy", "failed", "no-answer", "canceled"}
)

#: The sub-resource keys of the spec's example Call.
CALL_SUBRESOURCES = frozenset(
    {
        "notifications",
        "recordings",
        "payments",
        "events",
        "siprec",
        "streams",
        "transcriptions",
        "user_defined_message_subscriptions",
        "user_defined_messages",
    }
)

#: ``ListCallResponse``: key → (JSON type, nullable).
CALL_PAGE_FIELDS: dict[str, tuple[str, bool]] = {
    "calls": ("array", False),
    "end": ("integer", False),
    "first_page_uri": ("string", False),
    "next_page_uri": ("string", True),
    "page": ("integer", False),
    "page_size": ("integer", False),
    "previous_page_uri": ("string", True),
    "start": ("integer", False),
    "uri": ("string", False),
}

#: ``api.v2010.account.incoming_phone_number`` (enums folded into the format column).
INCOMING_NUMBER_FIELDS: dict[str, tuple[str, str | None]] = {
    "account_sid": ("string", None),
    "address_sid": ("string", None),
    "address_requirements": ("string", "enum:none,any,local,foreign"),
    "api_version": ("string", None),
    "beta": ("boolean", None),
    "capabilities": ("object", "phone-number-capabilities"),
    "date_created": ("string", "date-time-rfc-2822"),
    "date_updated": ("string", "date-time-rfc-2822"),
    "friendly_name": ("string", None),
    "identity_sid": ("string", None),
    "phone_number": ("string", "phone-number"),
    "origin": ("string", None),
    "sid": ("string", None),
    "sms_application_sid": ("string", None),
    "sms_fallback_method": ("string", "http-method"),
    "sms_fallback_url": ("string", "uri"),
    "sms_method": ("string", "http-method"),
    "sms_url": ("string", "uri"),
    "status_callback": ("string", "uri"),
    "status_callback_method": ("string", "http-method"),
    "trunk_sid": ("string", None),
    "uri": ("string", None),
    "voice_receive_mode": ("string", "enum:voice,fax"),
    "voice_application_sid": ("string", None),
    "voice_caller_id_lookup": ("boolean", None),
    "voice_fallback_method": ("string", "http-method"),
    "voice_fallback_url": ("string", "uri"),
    "voice_method": ("string", "http-method"),
    "voice_url": ("string", "uri"),
    "emergency_status": ("string", "enum:Active,Inactive"),
    "emergency_address_sid": ("string", None),
    "emergency_address_status": (
        "string",
        "enum:registered,unregistered,pending-registration,registration-failure,"
        "pending-unregistration,unregistration-failure",
    ),
    "bundle_sid": ("string", None),
    "status": ("string", None),
    "type": ("string", None),
}

#: ``api.v2010.account.outgoing_caller_id``.
CALLER_ID_FIELDS: dict[str, tuple[str, str | None]] = {
    "sid": ("string", None),
    "date_created": ("string", "date-time-rfc-2822"),
    "date_updated": ("string", "date-time-rfc-2822"),
    "friendly_name": ("string", None),
    "account_sid": ("string", None),
    "phone_number": ("string", "phone-number"),
    "uri": ("string", None),
}

#: The 2010 list page around any resource list (the list key varies).
PAGE_2010_FIELDS: dict[str, tuple[str, bool]] = {
    k: v for k, v in CALL_PAGE_FIELDS.items() if k != "calls"
}

COUNTRY_FIELDS: dict[str, tuple[str, str | None]] = {
    "iso_code": ("string", "iso-country-code"),
    "name": ("string", None),
    "continent": ("string", None),
    "country_codes": ("array", None),
    "low_risk_numbers_enabled": ("boolean", None),
    "high_risk_special_numbers_enabled": ("boolean", None),
    "high_risk_tollfraud_numbers_enabled": ("boolean", None),
    "url": ("string", "uri"),
    "links": ("object", "uri-map"),
}

PREFIX_FIELDS: dict[str, tuple[str, str | None]] = {"prefix": ("string", None)}

#: The ``meta`` of a v1 list page: key → (JSON type, nullable).
V1_META_FIELDS: dict[str, tuple[str, bool]] = {
    "first_page_url": ("string", False),
    "key": ("string", False),
    "next_page_url": ("string", True),
    "page": ("integer", False),
    "page_size": ("integer", False),
    "previous_page_url": ("string", True),
    "url": ("string", False),
}

#: The 2010 API's error body (twilio-python ``TwilioRestException`` reads these).
ERROR_FIELDS: dict[str, tuple[str, bool]] = {
    "code": ("integer", False),
    "message": ("string", False),
    "more_info": ("string", False),
    "status": ("integer", False),
}

_CAPABILITIES = frozenset({"voice", "sms", "mms", "fax"})

_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
}


def _is(value: Any, json_type: str) -> bool:
    if json_type == "integer" and isinstance(value, bool):
        return False
    return isinstance(value, _JSON_TYPES[json_type])


def resource_divergences(
    body: Any, fields: dict[str, tuple[str, str | None]], *, also: frozenset[str] = frozenset()
) -> list[str]:
    """How ``body`` departs from a resource schema whose fields are all nullable.

    ``also`` names fields the installed SDK reads beyond the spec (present, null ok).
    """
    if not isinstance(body, dict):
        return [f"expected an object, got {type(body).__name__}"]
    problems = [f"{k}: not in the spec" for k in body if k not in fields and k not in also]
    problems += [f"{k}: missing" for k in [*fields, *sorted(also)] if k not in body]
    for key, (json_type, fmt) in fields.items():
        value = body.get(key)
        if value is None:
            continue
        if not _is(value, json_type):
            problems.append(f"{key}: expected {json_type}, got {type(value).__name__}")
            continue
        problems += [f"{key}: {p}" for p in _format_problems(value, fmt)]
    return problems


def _format_problems(value: Any, fmt: str | None) -> list[str]:
    if fmt == "date-time-rfc-2822":
        try:
            parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return [f"{value!r} is not an RFC 2822 date"]
        return [] if value.endswith("+0000") else [f"{value!r} is not in UTC (+0000)"]
    if fmt == "call_enum_status":
        return [] if value in CALL_STATUSES else [f"{value!r} is not a call status"]
    if fmt == "currency":
        return [] if re.fullmatch(r"[A-Z]{3}", value) else [f"{value!r} is not a currency"]
    if fmt == "iso-country-code":
        return [] if re.fullmatch(r"[A-Z]{2}", value) else [f"{value!r} is not an ISO code"]
    if fmt == "uri":
        # The spec's own examples show "" for an unset URL.
        ok = value == "" or value.startswith(("https://", "http://", "/"))
        return [] if ok else [f"{value!r}: not a URI"]
    if fmt == "http-method":
        return [] if value in ("GET", "POST") else [f"{value!r} is not GET or POST"]
    if fmt == "phone-number":
        return [] if re.fullmatch(r"\+[1-9]\d{1,14}", value) else [f"{value!r} is not E.164"]
    if fmt == "phone-number-capabilities":
        bad = [k for k, v in value.items() if k not in _CAPABILITIES or not isinstance(v, bool)]
        return [f"capability {k!r} is not one of the spec's booleans" for k in bad]
    if fmt is not None and fmt.startswith("enum:"):
        allowed = fmt.removeprefix("enum:").split(",")
        return [] if value in allowed else [f"{value!r} is not one of {allowed}"]
    if fmt == "uri-map":
        bad = [
            k for k, v in value.items() if not isinstance(v, str) or not v.startswith(("/", "http"))
        ]
        return [f"{k}: not a URI" for k in bad]
    return []


def page_divergences(body: Any, fields: dict[str, tuple[str, bool]]) -> list[str]:
    """How a list page (or error body) departs from its schema (exact key set)."""
    if not isinstance(body, dict):
        return [f"expected an object, got {type(body).__name__}"]
    problems = [f"{k}: not in the spec" for k in body if k not in fields]
    for key, (json_type, nullable) in fields.items():
        if key not in body:
            problems.append(f"{key}: missing")
        elif body[key] is None:
            if not nullable:
                problems.append(f"{key}: null, but not nullable")
        elif not _is(body[key], json_type):
            problems.append(f"{key}: expected {json_type}, got {type(body[key]).__name__}")
    return problems


def sdk_payload_keys(instance_class: type) -> frozenset[str]:
    """The JSON keys a twilio-python instance class reads (``payload.get("…")``)."""
    source = inspect.getsource(instance_class.__init__)  # type: ignore[misc]
    return frozenset(re.findall(r'payload\.get\(\s*"([a-z_]+)"', source))
