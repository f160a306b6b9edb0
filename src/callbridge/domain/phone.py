"""Phone numbers as the visitor types them, turned into E.164 (pure).

:func:`normalise` is the only way a typed number enters callbridge. It accepts the
common ways people write a number (``+1 234 567 8900``, ``(202) 555-0143`` with a
default region, ``00 44 …``, ``tel:+1-202-555-0143``, an ``ext.`` suffix) and
returns a :class:`PhoneNumber`; anything else raises
:class:`~callbridge.errors.InvalidNumber` with a sentence the visitor can act on.
No other exception escapes it, whatever the input (the tests fuzz it).

Whether a valid number may be *called* (country, type, short codes, hours) is the
abuse policy's business, in :mod:`callbridge.domain.policy`.

Numbers are personal data (security.md 45): :class:`PhoneNumber` prints as its
masked form, and its ``repr`` leaves the full number out, so a stray log line or
traceback shows ``+1••••••8900`` only.

Reference: libphonenumber, https://github.com/google/libphonenumber (Python port
``phonenumbers``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final, Literal

import phonenumbers
from phonenumbers import shortnumberinfo
from phonenumbers import timezone as phone_timezone

from callbridge.errors import InvalidNumber

MAX_INPUT_LENGTH: Final = 32
"""Longest input accepted, in characters, before any parsing is attempted."""

MASK_CHAR: Final = "\u2022"  # •

_TEL_PREFIX = re.compile(r"^tel:", re.IGNORECASE)
# An extension at the end: ";ext=12" (RFC 3966), "ext. 12", "extension 12", "x12", "#12".
_EXTENSION = re.compile(r"(?:;ext=|\s*(?:extension|ext\.?|x|#)\s*)([0-9]{1,10})$", re.IGNORECASE)
# What may remain once the prefix and the extension are gone: digits, "+", and the
# separators people paste (spaces, dashes of every kind, dots, brackets, slashes).
_ALLOWED = re.compile(r"^[0-9+\-.()/\s\u00a0\u2010-\u2015\u2212]*$")
_UNKNOWN_ZONES: Final = frozenset({phone_timezone.UNKNOWN_TIMEZONE})
_TYPE_NAMES: Final = {
    value: name
    for name, value in vars(phonenumbers.PhoneNumberType).items()
    if name.isupper() and isinstance(value, int)
}

_MSG_EMPTY = "Please enter a phone number."
_MSG_TOO_LONG = "That phone number is too long."
_MSG_LETTERS = "Please enter the phone number using digits only."
_MSG_NOT_A_NUMBER = "That doesn't look like a phone number."
_MSG_COUNTRY = "Please include the country code, for example +1 for the United States."
_MSG_INVALID = "That phone number doesn't exist. Please check it and try again."
_MSG_EXTENSION = (
    "Extensions can't be dialled. Please give a number that reaches you directly, "
    "without the extension."
)


@dataclass(frozen=True, slots=True)
class PhoneNumber:
    """A valid phone number in E.164 form, with what numbering data says about it.

    Attributes:
        e164: the number as ``+<country code><national number>``; personal data,
            so it is left out of ``repr`` and ``str``.
        region: the ISO 3166-1 alpha-2 country of the number (``"US"``), or
            ``"001"`` for non-geographic numbering (``+800`` …).
        country_code: the country calling code (``1`` for the NANP).
        number_type: the libphonenumber type name (``"MOBILE"``, ``"FIXED_LINE"``,
            ``"FIXED_LINE_OR_MOBILE"``, ``"TOLL_FREE"``, ``"PREMIUM_RATE"`` …).
        timezones: IANA zones the number may ring in; empty when unknown.
        masked: the number with all but its last four digits hidden, safe for
            logs and the browser (``+1••••••8900``).
        extension: digits to dial after connecting, if the visitor gave any.
    """

    e164: str = field(repr=False)
    region: str
    country_code: int
    number_type: str
    timezones: tuple[str, ...]
    masked: str
    extension: str | None = field(default=None, repr=False)

    def __str__(self) -> str:
        return self.masked


def mask(e164: str, country_code: int) -> str:
    """Hide all digits of a number but the country code and the last four.

    Args:
        e164: a number in E.164 form.
        country_code: its country calling code.

    Returns:
        For example ``+1••••••8900`` for ``+12345678900``.
    """
    prefix = f"+{country_code}"
    national = e164[len(prefix) :] if e164.startswith(prefix) else e164.lstrip("+")
    shown = national[-4:]
    return f"{prefix}{MASK_CHAR * (len(national) - len(shown))}{shown}"


#: How people name a few regions whose ISO code they don't say.
_SPOKEN_REGION: Final = {"GB": "UK"}


def number_hint(default_region: str) -> str:
    """The contact form's hint for numbers typed in ``default_region`` (as :func:`normalise`
    reads them): ``"US numbers can skip +1; others start with + and the country code."``"""
    region = default_region.strip().upper()
    code = phonenumbers.country_code_for_region(region)
    if not code:
        return "Start with + and the country code."
    name = _SPOKEN_REGION.get(region, region)
    return f"{name} numbers can skip +{code}; others start with + and the country code."


def normalise(raw: str, default_region: str) -> PhoneNumber:
    """Parse a number as a visitor typed it into a valid :class:`PhoneNumber`.

    Args:
        raw: the text typed or pasted (at most :data:`MAX_INPUT_LENGTH` characters).
        default_region: ISO country assumed when the text has no ``+``/``00``
            international prefix (``"US"``: ``(202) 555-0143`` is ``+12025550143``).

    Returns:
        The number in E.164 with its region, type, time zones and masked form.

    Raises:
        InvalidNumber: the text is empty, too long, contains letters (other than a
            ``tel:`` prefix or an extension marker) or other symbols, does not
            parse, or is not a valid number according to libphonenumber.
    """
    extension, cleaned = _clean(raw)
    region = default_region.strip().upper()
    try:
        parsed = phonenumbers.parse(cleaned, region)
    except phonenumbers.NumberParseException as exc:
        no_country = exc.error_type == phonenumbers.NumberParseException.INVALID_COUNTRY_CODE
        if no_country and not cleaned.startswith("+"):
            raise InvalidNumber(_MSG_COUNTRY) from exc
        raise InvalidNumber(_MSG_INVALID) from exc
    if not phonenumbers.is_valid_number(parsed):
        raise InvalidNumber(_MSG_INVALID)
    e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    country_code = int(parsed.country_code or 0)
    zones = tuple(
        zone for zone in phone_timezone.time_zones_for_number(parsed) if zone not in _UNKNOWN_ZONES
    )
    return PhoneNumber(
        e164=e164,
        region=phonenumbers.region_code_for_number(parsed) or "ZZ",
        country_code=country_code,
        number_type=_TYPE_NAMES.get(phonenumbers.number_type(parsed), "UNKNOWN"),
        timezones=zones,
        masked=mask(e164, country_code),
        extension=extension,
    )


def refuse_extension(number: PhoneNumber) -> None:
    """Refuse a number typed with an extension (``;ext=1``, ``ext. 12``, ``x12``, ``#12``).

    A call is placed to the main line only: the extension would be dropped without a
    word and the call would reach a switchboard, not the visitor. (Twilio can send
    digits after the answer, ``sendDigits``, but when to send them differs at every
    switchboard, so callbridge does not guess.)

    Raises:
        InvalidNumber: the number came with an extension.
    """
    if number.extension:
        raise InvalidNumber(_MSG_EXTENSION)


def short_number_kind(raw: str, default_region: str) -> Literal["emergency", "short_code"] | None:
    """Tell whether typed text is an emergency number or a short code in a region.

    Short codes (``611``, ``22333``) and emergency numbers (``911``, ``112``) are
    not valid full-length numbers, so :func:`normalise` refuses them as invalid;
    the policy asks this first so it can say *why* it won't call them. Never raises.

    Args:
        raw: the text typed, as given to :func:`normalise`.
        default_region: the region the text is dialled from.

    Returns:
        ``"emergency"``, ``"short_code"`` or ``None`` (not a short number).
    """
    try:
        _, cleaned = _clean(raw)
    except InvalidNumber:
        return None
    digits = re.sub(r"[^0-9]", "", cleaned)
    region = default_region.strip().upper()
    if cleaned.startswith("+") or not 2 <= len(digits) <= 8:
        return None
    if shortnumberinfo.is_emergency_number(digits, region):
        return "emergency"
    try:
        parsed = phonenumbers.parse(digits, region)
    except phonenumbers.NumberParseException:
        return None
    if phonenumbers.is_valid_number(parsed):
        return None
    if shortnumberinfo.is_valid_short_number_for_region(parsed, region):
        return "short_code"
    return None


def _clean(raw: str) -> tuple[str | None, str]:
    """Check the characters of typed text; split off a ``tel:`` prefix and an extension.

    Returns:
        ``(extension or None, the number part with "00" turned into "+")``.

    Raises:
        InvalidNumber: empty, too long, letters, or symbols a number cannot have.
    """
    text = raw.strip()
    if not text:
        raise InvalidNumber(_MSG_EMPTY)
    if len(text) > MAX_INPUT_LENGTH:
        raise InvalidNumber(_MSG_TOO_LONG)
    text = _TEL_PREFIX.sub("", text).strip()
    extension: str | None = None
    match = _EXTENSION.search(text)
    if match is not None and match.start() > 0:
        extension = match.group(1)
        text = text[: match.start()].strip()
    if not _ALLOWED.fullmatch(text):
        if any(char.isalpha() for char in text):
            raise InvalidNumber(_MSG_LETTERS)
        raise InvalidNumber(_MSG_NOT_A_NUMBER)
    digits = re.sub(r"[^0-9]", "", text)
    plus_at = text.find("+")
    if not digits or text.count("+") > 1 or (plus_at > 0 and text[:plus_at].strip("( ")):
        raise InvalidNumber(_MSG_NOT_A_NUMBER)
    if plus_at >= 0:
        return extension, "+" + digits
    if digits.startswith("00"):
        # "00" is the international prefix almost everywhere outside the NANP, and no
        # NANP number starts with 0, so "00 44 …" means "+44 …" from any region.
        return extension, "+" + digits[2:]
    return extension, digits
