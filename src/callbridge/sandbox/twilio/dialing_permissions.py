"""The emulated Voice Dialing Permissions of Twilio's ``voice.twilio.com/v1`` API.

Implements the Countries resource
(https://www.twilio.com/docs/voice/api/dialingpermissions-country-resource) as
twilio-python 9 reads it: ``GET /v1/DialingPermissions/Countries`` (filters
``IsoCode``, ``Continent``, ``CountryCode``, ``LowRiskNumbersEnabled``,
``HighRiskSpecialNumbersEnabled``, ``HighRiskTollfraudNumbersEnabled``; paged with
``PageSize``/``Page``, answered as ``{"content": [...], "meta": {"key": "content", ...}}``
with absolute page URLs), ``GET /v1/DialingPermissions/Countries/{IsoCode}`` and its
``HighRiskSpecialPrefixes`` list (always empty here). The routes are served under the
emulator's REST root, next to ``/2010-04-01``, so one base URL stands for both
``api.twilio.com`` and ``voice.twilio.com``.

The account starts with low-risk numbers enabled in the sandbox's allowed countries,
both high-risk groups off everywhere and every other country off; tests change it with
:meth:`DialingPermissions.set_permission`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import phonenumbers
from phonenumbers import geocoder
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from callbridge.domain.dialing_permissions import SHARED_ENTRIES, permission_entry
from callbridge.errors import NotFound
from callbridge.sandbox.twilio.rest import Handler, TwilioApiError

_COUNTRIES = "/v1/DialingPermissions/Countries"

#: Twilio's continent of every region libphonenumber knows (only the
#: ``NORTH_AMERICA`` spelling is confirmed by Twilio's documented example).
_CONTINENTS = {
    "AFRICA": "AC AO BF BI BJ BW CD CF CG CI CM CV DJ DZ EG EH ER ET GA GH GM GN GQ GW KE KM "
    "LR LS LY MA MG ML MR MU MW MZ NA NE NG RE RW SC SD SH SL SN SO SS ST SZ TA TD TG TN TZ "
    "UG YT ZA ZM ZW",
    "ASIA": "AE AF AM AZ BD BH BN BT CN CY GE HK ID IL IN IO IQ IR JO JP KG KH KP KR KW KZ LA "
    "LB LK MM MN MO MV MY NP OM PH PK PS QA SA SG SY TH TJ TL TM TR TW UZ VN YE",
    "EUROPE": "AD AL AT AX BA BE BG BY CH CZ DE DK EE ES FI FO FR GB GG GI GR HR HU IE IM IS "
    "IT JE LI LT LU LV MC MD ME MK MT NL NO PL PT RO RS RU SE SI SJ SK SM UA VA XK",
    "NORTH_AMERICA": "AG AI AW BB BL BM BQ BS BZ CA CR CU CW DM DO GD GL GP GT HN HT JM KN KY "
    "LC MF MQ MS MX NI PA PM PR SV SX TC TT US VC VG VI",
    "SOUTH_AMERICA": "AR BO BR CL CO EC FK GF GY PE PY SR UY VE",
    "OCEANIA": "AS AU CC CK CX FJ FM GU KI MH MP NC NF NR NU NZ PF PG PW SB TK TO TV VU WF WS",
}
#: Names libphonenumber's geocoder lacks, and Twilio's own name for its ``US`` entry.
_NAMES = {
    "US": "United States/Canada",
    "AC": "Ascension Island",
    "TA": "Tristan da Cunha",
    "XK": "Kosovo",
}


def continent_of() -> dict[str, str]:
    """Every region's continent, as the emulator reports it."""
    return {code: name for name, codes in _CONTINENTS.items() for code in codes.split()}


@dataclass
class EmulatedCountry:
    """One country's permissions in the emulated account."""

    iso_code: str
    name: str
    continent: str
    country_codes: list[str]
    low_risk_numbers_enabled: bool = False
    high_risk_special_numbers_enabled: bool = False
    high_risk_tollfraud_numbers_enabled: bool = False

    def json(self, root: str) -> dict[str, Any]:
        """The resource as Twilio renders it, with absolute URLs under ``root``."""
        url = f"{root}{_COUNTRIES}/{self.iso_code}"
        return {
            "iso_code": self.iso_code,
            "name": self.name,
            "continent": self.continent,
            "country_codes": list(self.country_codes),
            "low_risk_numbers_enabled": self.low_risk_numbers_enabled,
            "high_risk_special_numbers_enabled": self.high_risk_special_numbers_enabled,
            "high_risk_tollfraud_numbers_enabled": self.high_risk_tollfraud_numbers_enabled,
            "url": url,
            "links": {"highrisk_special_prefixes": f"{url}/HighRiskSpecialPrefixes"},
        }


def _country_codes(region: str) -> list[str]:
    code = phonenumbers.country_code_for_region(region)
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
    if code == 1 and region != "US" and metadata is not None and metadata.leading_digits:
        # The other NANP countries are told apart by their area codes (+1876 Jamaica).
        return [f"+1{area}" for area in metadata.leading_digits.split("|")]
    return [f"+{code}"]


def _countries() -> dict[str, EmulatedCountry]:
    continents = continent_of()
    countries: dict[str, EmulatedCountry] = {}
    for region in sorted(phonenumbers.SUPPORTED_REGIONS - set(SHARED_ENTRIES)):
        name = _NAMES.get(region) or geocoder._region_display_name(region, "en") or region
        countries[region] = EmulatedCountry(
            iso_code=region,
            name=name,
            continent=continents.get(region, "UNKNOWN"),
            country_codes=_country_codes(region),
        )
    return countries


class DialingPermissions:
    """The account's voice dialing permissions, one :class:`EmulatedCountry` per ISO code.

    Args:
        allowed_countries: ISO codes whose low-risk numbers start enabled.
    """

    def __init__(self, allowed_countries: Iterable[str]) -> None:
        self.countries = _countries()
        for code in allowed_countries:
            entry = self.countries.get(permission_entry(code))
            if entry is not None:
                entry.low_risk_numbers_enabled = True

    def set_permission(
        self,
        iso_code: str,
        *,
        low_risk: bool | None = None,
        high_risk_special: bool | None = None,
        high_risk_tollfraud: bool | None = None,
    ) -> EmulatedCountry:
        """Change one country's permissions, as the Console or a bulk update would.

        Raises:
            NotFound: Twilio lists no such country (``CA`` means the ``US`` entry).
        """
        entry = self.countries.get(permission_entry(iso_code))
        if entry is None:
            raise NotFound(f"the emulated account lists no country {iso_code!r}")
        if low_risk is not None:
            entry.low_risk_numbers_enabled = low_risk
        if high_risk_special is not None:
            entry.high_risk_special_numbers_enabled = high_risk_special
        if high_risk_tollfraud is not None:
            entry.high_risk_tollfraud_numbers_enabled = high_risk_tollfraud
        return entry


def _root(request: Request) -> str:
    """The REST root this request came through (absolute, mount prefix included)."""
    return f"{request.url.scheme}://{request.url.netloc}{request.scope.get('root_path', '')}"


def _flag(value: str | None, name: str) -> bool | None:
    if value is None:
        return None
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise TwilioApiError(400, 20001, f"Invalid {name}: expected true or false")


def _int(value: str | None, name: str, default: int, low: int, high: int) -> int:
    if value is None or value == "":
        return default
    try:
        return min(max(int(value), low), high)
    except ValueError:
        raise TwilioApiError(400, 20001, f"Invalid {name}: expected an integer") from None


def _page(
    request: Request, path: str, records: list[dict[str, Any]], filters: dict[str, str]
) -> Response:
    """One page of ``records`` in the ``content``/``meta`` shape of Twilio's v1 APIs."""
    query = request.query_params
    size = _int(query.get("PageSize"), "PageSize", 50, 1, 1000)
    page = _int(query.get("Page"), "Page", 0, 0, 1_000_000)
    base = _root(request) + path

    def url(number: int) -> str:
        return base + "?" + urlencode(filters | {"PageSize": size, "Page": number})

    more = len(records) > (page + 1) * size
    token = f"&PageToken=PA{(page + 1) * size}" if more else ""
    return JSONResponse(
        {
            "content": records[page * size : (page + 1) * size],
            "meta": {
                "first_page_url": url(0),
                "key": "content",
                "next_page_url": url(page + 1) + token if more else None,
                "page": page,
                "page_size": size,
                "previous_page_url": url(page - 1) if page > 0 else None,
                "url": url(page),
            },
        }
    )


def dialing_permission_routes(
    state: DialingPermissions, authorised: Callable[[Handler], Handler]
) -> list[Route]:
    """The Countries routes over ``state``, each wrapped by the emulator's ``authorised``."""

    def find(request: Request) -> EmulatedCountry:
        iso = str(request.path_params["iso_code"])
        country = state.countries.get(iso.upper())
        if country is None:
            raise TwilioApiError(
                404, 20404, f"The requested resource {_COUNTRIES}/{iso} was not found"
            )
        return country

    async def list_countries(request: Request) -> Response:
        query = request.query_params
        names = (
            "IsoCode",
            "Continent",
            "CountryCode",
            "LowRiskNumbersEnabled",
            "HighRiskSpecialNumbersEnabled",
            "HighRiskTollfraudNumbersEnabled",
        )
        filters = {name: query[name] for name in names if query.get(name)}
        flags = {
            "low_risk_numbers_enabled": _flag(filters.get(names[3]), names[3]),
            "high_risk_special_numbers_enabled": _flag(filters.get(names[4]), names[4]),
            "high_risk_tollfraud_numbers_enabled": _flag(filters.get(names[5]), names[5]),
        }
        dialling_code = filters.get("CountryCode", "")
        if dialling_code and not dialling_code.startswith("+"):
            dialling_code = "+" + dialling_code
        chosen = [
            c
            for c in state.countries.values()
            if filters.get("IsoCode", c.iso_code).upper() == c.iso_code
            and filters.get("Continent", c.continent).upper() == c.continent
            and (not dialling_code or dialling_code in c.country_codes)
            and all(want is None or getattr(c, attr) is want for attr, want in flags.items())
        ]
        root = _root(request)
        return _page(request, _COUNTRIES, [c.json(root) for c in chosen], filters)

    async def fetch_country(request: Request) -> Response:
        return JSONResponse(find(request).json(_root(request)))

    async def list_prefixes(request: Request) -> Response:
        country = find(request)
        return _page(request, f"{_COUNTRIES}/{country.iso_code}/HighRiskSpecialPrefixes", [], {})

    return [
        Route(_COUNTRIES, authorised(list_countries), methods=["GET"]),
        Route(_COUNTRIES + "/{iso_code}", authorised(fetch_country), methods=["GET"]),
        Route(
            _COUNTRIES + "/{iso_code}/HighRiskSpecialPrefixes",
            authorised(list_prefixes),
            methods=["GET"],
        ),
    ]
