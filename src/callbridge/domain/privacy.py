"""Masking of phone numbers for logs, metrics and the browser (last four digits only)."""

from __future__ import annotations


def mask_number(number: str | None) -> str:
    """Return ``number`` with every digit but the country code and last four hidden.

    ``+12345678900`` becomes ``+1•••••••8900``; anything short is fully hidden.
    """
    if not number:
        return ""
    digits = number.lstrip("+")
    if len(digits) <= 4:
        return "•" * len(digits)
    head = "+" + digits[0] if number.startswith("+") else ""
    body = digits[1:] if head else digits
    return head + "•" * (len(body) - 4) + body[-4:]
