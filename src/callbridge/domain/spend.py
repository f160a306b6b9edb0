"""Money for the daily spend cap: exact units, and what a call is booked at (pure).

Spend is counted in micro-dollars (µUSD, 10⁻⁶ USD), an integer: Twilio prices calls
to five decimals (``"-0.01400"``), so every price is a whole number of µUSD and no
float ever touches money. The cap and the reservation are set in cents
(``CALLBRIDGE_DAILY_SPEND_CAP_CENTS``); one cent is :data:`MICROS_PER_CENT` µUSD.

A call is booked, in order of truth: at Twilio's price once it is known, else at its
estimate once it has ended (billed minutes × the worst per-minute rate of its
destination), else at its worst-case reservation (the time limit at the highest rate).
A call that never connected is estimated at 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Final

MICROS_PER_CENT: Final = 10_000
MICROS_PER_DOLLAR: Final = 1_000_000


def cents_to_micros(cents: int) -> int:
    """Cents as µUSD."""
    return cents * MICROS_PER_CENT


def price_micros(price: str | None, unit: str | None) -> int | None:
    """Twilio's ``price`` of a call as a cost in µUSD, or ``None`` when it can't be used.

    Twilio documents the price as a negative decimal string (``"-0.01400"``, the charge
    to the account) in ``price_unit``. A zero comes back as ``"0.00000"``; should a
    positive figure ever arrive it is taken as the same charge (the absolute value): we
    could not confirm that Twilio never sends one. Only ``USD`` is used, because the cap
    is in US cents; another unit (an account billed in another currency) gives ``None``
    and the call stays at its estimate.
    """
    if price is None or (unit or "USD").upper() != "USD":
        return None
    try:
        amount = abs(Decimal(price.strip()))
    except InvalidOperation:
        return None
    if not amount.is_finite():
        return None
    return int((amount * MICROS_PER_DOLLAR).to_integral_value())


@dataclass(frozen=True, slots=True)
class WorstRates:
    """The highest per-minute charge to each destination, in cents.

    Attributes:
        default_cents: the rate for a country not in ``by_country``: the setting
            ``CALLBRIDGE_MAX_RATE_CENTS_PER_MINUTE`` (the highest rate among the allowed
            countries, which the operator sets from Twilio's price list).
        by_country: per country calling code (``"44"``), when an operator knows better.
            Empty by default: we ship no figures we could not check against Twilio's
            current price list, and the setting is the operator's own ceiling.
    """

    default_cents: int
    by_country: Mapping[str, int] = field(default_factory=dict)

    def per_minute_micros(self, country_code: str) -> int:
        """The worst rate to ``country_code`` per started minute, in µUSD."""
        return cents_to_micros(self.by_country.get(country_code, self.default_cents))


def billed_minutes(duration_s: int | None) -> int:
    """Minutes Twilio bills for a call of ``duration_s`` seconds (each started minute)."""
    if not duration_s or duration_s <= 0:
        return 0
    return math.ceil(duration_s / 60)


def estimate_micros(duration_s: int | None, country_code: str, rates: WorstRates) -> int:
    """An ended call's worst-case cost: billed minutes × its destination's worst rate."""
    return billed_minutes(duration_s) * rates.per_minute_micros(country_code)


@dataclass(frozen=True, slots=True)
class LedgerAmounts:
    """One call's line in the spend ledger, in µUSD."""

    reserved: int
    estimated: int | None = None
    actual: int | None = None

    @property
    def booked(self) -> int:
        """What the call counts for today: the price, else the estimate, else the reservation."""
        if self.actual is not None:
            return self.actual
        if self.estimated is not None:
            return self.estimated
        return self.reserved

    @property
    def settled(self) -> bool:
        """Whether the call is booked at more than its reservation's guess."""
        return self.actual is not None or self.estimated is not None
