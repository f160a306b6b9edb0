"""Twilio's Voice Dialing Permissions against ``CALLBRIDGE_ALLOWED_COUNTRIES`` (security.md B18).

Pure: takes the country permissions as Twilio lists them
(https://www.twilio.com/docs/voice/api/dialingpermissions-country-resource) and the
allowlist, and says what is wrong. Twilio must allow no more than the number policy does:

- a country outside the allowlist with low-risk numbers enabled is a violation;
- either high-risk group (special services, toll fraud) enabled anywhere is a violation;
- an allowed country that Twilio does not let us call is only a warning (the calls
  there fail with error 21215, which costs nothing).

Twilio lists some countries under another one's entry: ``US`` is "United States/Canada"
(``+1``), so that entry stands for both and Canada has none of its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

#: Countries Twilio lists under another country's entry (ISO code → the entry's code).
SHARED_ENTRIES: Mapping[str, str] = {"CA": "US"}


@dataclass(frozen=True, slots=True)
class CountryPermission:
    """One country's voice dialing permissions, as Twilio reports them."""

    iso_code: str
    name: str
    country_codes: tuple[str, ...]
    low_risk_numbers_enabled: bool
    high_risk_special_numbers_enabled: bool
    high_risk_tollfraud_numbers_enabled: bool


class FindingKind(StrEnum):
    """What is wrong with one country's permissions."""

    OUTSIDE_ALLOWLIST = "outside_allowlist"
    HIGH_RISK_SPECIAL = "high_risk_special"
    HIGH_RISK_TOLLFRAUD = "high_risk_tollfraud"
    ALLOWED_NOT_ENABLED = "allowed_not_enabled"


_SENTENCES = {
    FindingKind.OUTSIDE_ALLOWLIST: (
        "Twilio lets this account call {where}, which is not in CALLBRIDGE_ALLOWED_COUNTRIES: "
        "turn it off in Twilio's Voice Geographic Permissions."
    ),
    FindingKind.HIGH_RISK_SPECIAL: (
        "Twilio lets this account call high-risk special numbers (premium, shared cost) in "
        "{where}: turn that group off in Twilio's Voice Geographic Permissions."
    ),
    FindingKind.HIGH_RISK_TOLLFRAUD: (
        "Twilio lets this account call high-risk toll-fraud numbers in {where}: turn that "
        "group off in Twilio's Voice Geographic Permissions."
    ),
    FindingKind.ALLOWED_NOT_ENABLED: (
        "{where} is in CALLBRIDGE_ALLOWED_COUNTRIES but Twilio does not let this account call "
        "it, so calls there will fail with Twilio error 21215."
    ),
}


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing wrong with the permissions, for logs, metrics and the doctor."""

    kind: FindingKind
    iso_code: str
    name: str

    @property
    def sentence(self) -> str:
        """What is wrong and what to do, in one sentence."""
        where = f"{self.name} ({self.iso_code})" if self.name else self.iso_code
        return _SENTENCES[self.kind].format(where=where)


@dataclass(frozen=True, slots=True)
class PermissionReport:
    """The outcome of one check: violations fail it, warnings do not."""

    violations: tuple[Finding, ...]
    warnings: tuple[Finding, ...]

    @property
    def ok(self) -> bool:
        """Whether Twilio allows nothing beyond the allowlist."""
        return not self.violations


def permission_entry(iso_code: str) -> str:
    """The ISO code of the Twilio entry that holds ``iso_code``'s permissions."""
    code = iso_code.upper()
    return SHARED_ENTRIES.get(code, code)


def check_dialing_permissions(
    countries: Iterable[CountryPermission], allowed_countries: Iterable[str]
) -> PermissionReport:
    """Compare Twilio's dialing permissions with the allowlist.

    Args:
        countries: every country Twilio lists for the account.
        allowed_countries: ISO codes of ``CALLBRIDGE_ALLOWED_COUNTRIES``.

    Returns:
        The violations and warnings, ordered by ISO code.
    """
    allowed = {code.upper() for code in allowed_countries}
    allowed_entries = {permission_entry(code) for code in allowed}
    listed: dict[str, CountryPermission] = {}
    violations: list[Finding] = []
    for country in sorted(countries, key=lambda c: c.iso_code.upper()):
        code = country.iso_code.upper()
        listed[code] = country
        if country.low_risk_numbers_enabled and code not in allowed_entries:
            violations.append(Finding(FindingKind.OUTSIDE_ALLOWLIST, code, country.name))
        if country.high_risk_special_numbers_enabled:
            violations.append(Finding(FindingKind.HIGH_RISK_SPECIAL, code, country.name))
        if country.high_risk_tollfraud_numbers_enabled:
            violations.append(Finding(FindingKind.HIGH_RISK_TOLLFRAUD, code, country.name))
    warnings: list[Finding] = []
    for code in sorted(allowed):
        entry = listed.get(permission_entry(code))
        if entry is None or not entry.low_risk_numbers_enabled:
            name = entry.name if entry is not None and permission_entry(code) == code else ""
            warnings.append(Finding(FindingKind.ALLOWED_NOT_ENABLED, code, name))
    return PermissionReport(violations=tuple(violations), warnings=tuple(warnings))
