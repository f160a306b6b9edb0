"""The emulated Voice Dialing Permissions (``voice.twilio.com/v1/DialingPermissions``),
driven by the official twilio-python client over real HTTP, and by our adapter."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import phonenumbers
import pytest
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.rest import Client

from callbridge.adapters.twilio.dialing_permissions import (
    TwilioDialingPermissions,
    voice_base_url,
)
from callbridge.errors import ErrorCategory, NotFound, ProviderError, TwilioRefused
from callbridge.sandbox.twilio.dialing_permissions import continent_of
from callbridge.sandbox.twilio.emulator import TwilioEmulator
from tests.sandbox_twilio.conftest import ACCOUNT_SID, AUTH_TOKEN, Sandbox
from tests.support.server import free_port

COUNTRY_KEYS = {
    "iso_code",
    "name",
    "continent",
    "country_codes",
    "low_risk_numbers_enabled",
    "high_risk_special_numbers_enabled",
    "high_risk_tollfraud_numbers_enabled",
    "url",
    "links",
}
META_KEYS = {
    "first_page_url",
    "key",
    "next_page_url",
    "page",
    "page_size",
    "previous_page_url",
    "url",
}


def _client(sandbox: Sandbox, token: str = AUTH_TOKEN) -> Client:
    client = Client(ACCOUNT_SID, token)
    client.voice.base_url = sandbox.api_base
    return client


def _countries_url(sandbox: Sandbox) -> str:
    return f"{sandbox.api_base}/v1/DialingPermissions/Countries"


async def _get(
    sandbox: Sandbox, url: str, token: str = AUTH_TOKEN, **params: Any
) -> httpx.Response:
    return await sandbox.http.get(url, params=params or None, auth=(ACCOUNT_SID, token))


async def _sdk_list(sandbox: Sandbox, **filters: Any) -> list[Any]:
    countries = _client(sandbox).voice.v1.dialing_permissions.countries
    return await asyncio.to_thread(countries.list, **filters)


async def test_the_account_starts_with_only_the_allowed_countries_on_and_no_high_risk(
    sandbox: Sandbox,
) -> None:
    """twilio-python lists every country; by default only the sandbox's allowed countries
    (US, and CA, which Twilio keeps under US) have low-risk numbers on, and neither
    high-risk group is on anywhere."""
    listed = await _sdk_list(sandbox)
    assert len(listed) == len(phonenumbers.SUPPORTED_REGIONS) - 1  # CA is inside US
    assert "CA" not in {c.iso_code for c in listed}
    assert [c.iso_code for c in listed if c.low_risk_numbers_enabled] == ["US"]
    assert not [c for c in listed if c.high_risk_special_numbers_enabled]
    assert not [c for c in listed if c.high_risk_tollfraud_numbers_enabled]
    us = next(c for c in listed if c.iso_code == "US")
    assert (us.name, us.continent, us.country_codes) == (
        "United States/Canada",
        "NORTH_AMERICA",
        ["+1"],
    )


async def test_the_list_and_a_country_have_twilios_json_shape(sandbox: Sandbox) -> None:
    """A list answers ``{"content": [...], "meta": {"key": "content", ...}}`` with absolute
    page URLs carrying the filters, and each country has exactly the documented fields with
    its own absolute URL and HighRiskSpecialPrefixes link."""
    response = await _get(sandbox, _countries_url(sandbox), IsoCode="US")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"content", "meta"}
    assert set(body["meta"]) == META_KEYS
    meta = body["meta"]
    assert meta["key"] == "content" and meta["page"] == 0 and meta["page_size"] == 50
    assert meta["url"] == f"{_countries_url(sandbox)}?IsoCode=US&PageSize=50&Page=0"
    assert meta["first_page_url"] == meta["url"]
    assert meta["next_page_url"] is None and meta["previous_page_url"] is None
    [country] = body["content"]
    assert set(country) == COUNTRY_KEYS
    url = f"{_countries_url(sandbox)}/US"
    assert country["url"] == url
    assert country["links"] == {"highrisk_special_prefixes": f"{url}/HighRiskSpecialPrefixes"}
    fetched = await _get(sandbox, url)
    assert fetched.json() == country


async def test_filters_select_by_code_continent_dialling_code_and_each_group(
    sandbox: Sandbox,
) -> None:
    """IsoCode, Continent, CountryCode and the three group filters select as Twilio's list
    does, alone and together."""
    emulator = sandbox.emulator
    emulator.set_dialing_permission("FR", low_risk=True, high_risk_special=True)
    emulator.set_dialing_permission("JM", high_risk_tollfraud=True)
    assert [c.iso_code for c in await _sdk_list(sandbox, iso_code="FR")] == ["FR"]
    europe = await _sdk_list(sandbox, continent="EUROPE")
    assert {"FR", "GB", "DE"} <= {c.iso_code for c in europe}
    assert {c.continent for c in europe} == {"EUROPE"}
    assert [c.iso_code for c in await _sdk_list(sandbox, country_code="+1876")] == ["JM"]
    assert {c.iso_code for c in await _sdk_list(sandbox, country_code="+44")} == {
        "GB",
        "GG",
        "IM",
        "JE",
    }
    assert [c.iso_code for c in await _sdk_list(sandbox, low_risk_numbers_enabled=True)] == [
        "FR",
        "US",
    ]
    off = await _sdk_list(sandbox, low_risk_numbers_enabled=False)
    assert {"FR", "US"}.isdisjoint(c.iso_code for c in off) and len(off) > 200
    special = await _sdk_list(sandbox, high_risk_special_numbers_enabled=True)
    assert [c.iso_code for c in special] == ["FR"]
    fraud = await _sdk_list(sandbox, high_risk_tollfraud_numbers_enabled=True)
    assert [c.iso_code for c in fraud] == ["JM"]
    assert (
        await _sdk_list(sandbox, continent="EUROPE", high_risk_tollfraud_numbers_enabled=True) == []
    )


async def test_a_group_filter_that_is_not_a_boolean_is_a_twilio_400(sandbox: Sandbox) -> None:
    """``LowRiskNumbersEnabled=maybe`` is refused with Twilio's error JSON, not ignored."""
    response = await _get(sandbox, _countries_url(sandbox), LowRiskNumbersEnabled="maybe")
    assert response.status_code == 400
    assert response.json()["code"] == 20001 and response.json()["status"] == 400


async def test_small_pages_chain_through_absolute_next_page_urls(sandbox: Sandbox) -> None:
    """With PageSize=50 the SDK follows ``meta.next_page_url`` to the end and gets every
    country once; each page links back and forth, and the last has no next page."""
    everything = await _sdk_list(sandbox, page_size=1000)
    paged = await _sdk_list(sandbox, page_size=50)
    assert [c.iso_code for c in paged] == [c.iso_code for c in everything]
    first = (await _get(sandbox, _countries_url(sandbox), PageSize="50")).json()["meta"]
    assert first["next_page_url"].startswith(f"{_countries_url(sandbox)}?PageSize=50&Page=1")
    second = (await _get(sandbox, first["next_page_url"])).json()
    assert second["meta"]["previous_page_url"] == first["first_page_url"]
    assert second["content"][0]["iso_code"] == everything[50].iso_code
    last_page = (len(everything) - 1) // 50
    last = await _get(sandbox, _countries_url(sandbox), PageSize="50", Page=str(last_page))
    assert last.json()["meta"]["next_page_url"] is None
    assert len(last.json()["content"]) == len(everything) - 50 * last_page
    countries = _client(sandbox).voice.v1.dialing_permissions.countries
    page = await asyncio.to_thread(countries.page, page_size=3)
    assert [c.iso_code for c in page] == [c.iso_code for c in everything[:3]]
    following = await asyncio.to_thread(page.next_page)
    assert [c.iso_code for c in following] == [c.iso_code for c in everything[3:6]]


async def test_a_country_is_fetched_by_iso_code_and_an_unknown_code_is_20404(
    sandbox: Sandbox,
) -> None:
    """``countries("GB").fetch()`` returns the country; ``ZZ`` is Twilio's 404 (20404)."""
    countries = _client(sandbox).voice.v1.dialing_permissions.countries
    gb = await asyncio.to_thread(countries("GB").fetch)
    assert (gb.iso_code, gb.name, gb.country_codes) == ("GB", "United Kingdom", ["+44"])
    assert gb.low_risk_numbers_enabled is False
    with pytest.raises(TwilioRestException) as raised:
        await asyncio.to_thread(countries("ZZ").fetch)
    assert raised.value.status == 404 and raised.value.code == 20404


async def test_a_wrong_auth_token_is_twilios_401_on_every_route(sandbox: Sandbox) -> None:
    """A wrong token gets 401 with code 20003 and a Basic challenge, on the list and on a
    country; twilio-python raises as it would against Twilio."""
    for url in (_countries_url(sandbox), f"{_countries_url(sandbox)}/US"):
        response = await _get(sandbox, url, token="wrong")
        assert response.status_code == 401
        assert response.json()["code"] == 20003
        assert response.headers["www-authenticate"].startswith("Basic")
    anonymous = await sandbox.http.get(_countries_url(sandbox))
    assert anonymous.status_code == 401
    countries = _client(sandbox, token="wrong").voice.v1.dialing_permissions.countries
    with pytest.raises(TwilioRestException) as raised:
        await asyncio.to_thread(countries("US").fetch)
    assert raised.value.status == 401
    with pytest.raises(TwilioException):
        await asyncio.to_thread(countries.list)


async def test_high_risk_special_prefixes_are_an_empty_twilio_list(sandbox: Sandbox) -> None:
    """The country's ``highrisk_special_prefixes`` link answers a (here empty) v1 list."""
    countries = _client(sandbox).voice.v1.dialing_permissions.countries
    prefixes = await asyncio.to_thread(countries("US").highrisk_special_prefixes.list)
    assert prefixes == []


def test_a_permission_change_is_kept_and_canada_means_the_us_entry() -> None:
    """The test control changes one entry; CA changes the US entry; an unknown code is
    NotFound; an emulator for other allowed countries starts with those on."""
    emulator = TwilioEmulator(
        account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, allowed_countries=["gb", "FR"]
    )
    enabled = {
        c.iso_code
        for c in emulator.dialing_permissions.countries.values()
        if c.low_risk_numbers_enabled
    }
    assert enabled == {"GB", "FR"}
    changed = emulator.set_dialing_permission("CA", low_risk=True, high_risk_special=True)
    assert changed.iso_code == "US" and changed.low_risk_numbers_enabled
    assert changed.high_risk_special_numbers_enabled
    assert not changed.high_risk_tollfraud_numbers_enabled
    with pytest.raises(NotFound):
        emulator.set_dialing_permission("ZZ", low_risk=True)


def test_every_region_has_exactly_one_continent() -> None:
    """Each region libphonenumber knows is placed on one continent."""
    assert set(continent_of()) == set(phonenumbers.SUPPORTED_REGIONS)
    assert set(continent_of().values()) == {
        "AFRICA",
        "ASIA",
        "EUROPE",
        "NORTH_AMERICA",
        "SOUTH_AMERICA",
        "OCEANIA",
    }


class TestAdapter:
    """``TwilioDialingPermissions``: twilio-python's async list over our httpx transport."""

    def _adapter(self, base: str, token: str = AUTH_TOKEN) -> TwilioDialingPermissions:
        return TwilioDialingPermissions(
            account_sid=ACCOUNT_SID, auth_token=token, voice_base_url=base, request_timeout=5.0
        )

    async def test_reads_every_country_as_a_country_permission(self, sandbox: Sandbox) -> None:
        """All countries come back typed, with the emulator's current flags."""
        sandbox.emulator.set_dialing_permission("DE", high_risk_tollfraud=True)
        countries = await self._adapter(sandbox.api_base).list_countries()
        by_code = {c.iso_code: c for c in countries}
        assert len(by_code) == len(countries) == len(phonenumbers.SUPPORTED_REGIONS) - 1
        assert by_code["US"].low_risk_numbers_enabled
        assert by_code["US"].country_codes == ("+1",)
        assert by_code["DE"].high_risk_tollfraud_numbers_enabled
        assert not by_code["DE"].low_risk_numbers_enabled

    async def test_a_wrong_token_is_a_permanent_auth_refusal(self, sandbox: Sandbox) -> None:
        """A 401 on the list page becomes TwilioRefused (AUTH, 20003), never a network error."""
        with pytest.raises(TwilioRefused) as raised:
            await self._adapter(sandbox.api_base, token="wrong").list_countries()
        assert raised.value.category is ErrorCategory.AUTH
        assert raised.value.provider_code == 20003 and raised.value.is_permanent

    async def test_nobody_listening_is_a_network_error(self) -> None:
        """A closed port becomes ProviderError (NETWORK)."""
        with pytest.raises(ProviderError) as raised:
            await self._adapter(f"http://127.0.0.1:{free_port()}").list_countries()
        assert raised.value.category is ErrorCategory.NETWORK

    def test_the_voice_domain_follows_the_api_base_url_only_when_overridden(self) -> None:
        """Twilio's default root maps to voice.twilio.com; an override serves both."""
        assert voice_base_url("https://api.twilio.com") == "https://voice.twilio.com"
        assert voice_base_url("https://api.twilio.com/") == "https://voice.twilio.com"
        assert voice_base_url("http://127.0.0.1:8100/sandbox/twilio/") == (
            "http://127.0.0.1:8100/sandbox/twilio"
        )
        assert voice_base_url("https://twilio-proxy.example.com") == (
            "https://twilio-proxy.example.com"
        )
