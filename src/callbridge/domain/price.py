"""How a call's price reads to a person: one format for the pages, the API and the CLI (pure).

Twilio reports a call's ``price`` as a negative decimal string (``"-0.01400"``): the
minus means money charged to the account, not a refund, so it is dropped. Amounts under
one unit keep up to four decimals without trailing zeros (``0.014 USD``); larger ones,
and zero, show two (``1.20 USD``, ``0.00 USD``).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

__all__ = ["format_price"]


def format_price(value: Decimal | str | None, unit: str | None = None) -> str | None:
    """``"-0.01400", "USD"`` → ``"0.014 USD"``; None (or text that is no number) → None."""
    if value is None or value == "":
        return None
    try:
        amount = abs(Decimal(value))
    except InvalidOperation:
        return None
    if amount >= 1 or amount == 0:
        shown = f"{amount:.2f}"
    else:
        shown = f"{amount:.4f}".rstrip("0")
        if shown.endswith("."):  # under 0.0001: every digit it has
            shown = format(amount.normalize(), "f")
    return f"{shown} {unit or 'USD'}"
