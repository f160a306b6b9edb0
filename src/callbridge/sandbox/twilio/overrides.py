"""Twilio's webhook connection overrides, as the emulator reads them from a URL's fragment.

https://www.twilio.com/docs/usage/webhooks/webhooks-connection-overrides: a webhook
URL may end in ``#ct=…&rt=…&tt=…&rc=…&rp=…`` (key=value pairs joined by ``&``).
Confirmed (the doc's table): ``ct`` connect timeout 100–10000 ms (default 5000),
``rt`` read timeout 100–15000 ms (default 15000), ``tt`` total time for every
attempt 100–15000 ms (default 15000), ``rc`` retries 0–5 (default 1). Error 11243
confirms ``rp``, the retry policy; its values (``4xx``, ``5xx``, ``ct``, ``rt``,
``all``) and its default (``ct``: only a failed connection is retried) come from
third-party copies of the doc table: UNCONFIRMED. ``e`` (edge) and ``sni`` change
nothing on loopback and are ignored. Out-of-range numbers are clamped and unknown
``rp`` values dropped (Twilio's reaction to them is not documented beyond 11243).

Twilio documents no pause between attempts (UNCONFIRMED either way); the emulator
sends each retry as soon as the previous attempt fails.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl

__all__ = ["RETRY_POLICIES", "ConnectionOverrides"]

#: What ``rp`` may name: a failed or timed-out connection, a read timeout, an HTTP
#: 4xx or 5xx answer, or all of them.
RETRY_POLICIES = frozenset({"ct", "rt", "4xx", "5xx", "all"})


def _ms(fields: dict[str, str], key: str, default: int, low: int, high: int) -> float:
    raw = fields.get(key, "")
    value = int(raw) if raw.isdigit() else default
    return min(max(value, low), high) / 1000


@dataclass(frozen=True, slots=True)
class ConnectionOverrides:
    """How one webhook is delivered: timeouts in seconds, retries and what they cover."""

    connect_timeout_s: float = 5.0
    read_timeout_s: float = 15.0
    total_s: float = 15.0
    retries: int = 1
    policy: frozenset[str] = frozenset({"ct"})

    @classmethod
    def parse(cls, fragment: str) -> ConnectionOverrides:
        """The overrides in ``fragment`` (the part after ``#``; "" for Twilio's defaults)."""
        fields = dict(parse_qsl(fragment, keep_blank_values=True))
        rc = fields.get("rc", "")
        policy = frozenset(p.strip() for p in fields.get("rp", "ct").split(",")) & RETRY_POLICIES
        return cls(
            connect_timeout_s=_ms(fields, "ct", 5000, 100, 10000),
            read_timeout_s=_ms(fields, "rt", 15000, 100, 15000),
            total_s=_ms(fields, "tt", 15000, 100, 15000),
            retries=min(int(rc), 5) if rc.isdigit() else 1,
            policy=policy or frozenset({"ct"}),
        )

    def retries_on(self, failure: str) -> bool:
        """Whether a ``failure`` (``ct``, ``rt``, ``4xx`` or ``5xx``) is retried."""
        return "all" in self.policy or failure in self.policy
