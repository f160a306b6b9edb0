"""Masking of phone numbers for logs, metrics and the browser (last four digits only)."""

from __future__ import annotations

import phonenumbers

from callbridge.domain.phone import MASK_CHAR, mask


def mask_number(number: str | None) -> str:
    """Return ``number`` with every digit but the country code and last four hidden.

    ``+12345678900`` becomes ``+1••••••8900`` and ``+442079460123`` ``+44••••••0123``
    (the country code is read from numbering data, as :func:`~callbridge.domain.phone.mask`
    wants it); text that is not an E.164 number keeps only its last four digits.
    """
    if not number:
        return ""
    try:
        country_code = phonenumbers.parse(number, None).country_code
    except phonenumbers.NumberParseException:
        country_code = None
    if country_code:
        return mask(number, country_code)
    digits = number.lstrip("+")
    shown = digits[-4:] if len(digits) > 4 else ""
    return MASK_CHAR * (len(digits) - len(shown)) + shown
