"""How ``callbridge serve`` configures uvicorn's proxy headers from the settings."""

from __future__ import annotations

import pytest
import typer

from callbridge.cli import _proxy_options
from callbridge.settings import Settings


def _settings(trusted: str | None) -> Settings:
    """Settings with CALLBRIDGE_TRUSTED_PROXIES as it would be written (None: unset)."""
    values = {} if trusted is None else {"trusted_proxies": trusted}
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def test_no_trusted_proxy_means_no_forwarded_header_is_believed() -> None:
    """Without CALLBRIDGE_TRUSTED_PROXIES uvicorn reads no X-Forwarded-* header at all."""
    assert _proxy_options(_settings(None)) == {"proxy_headers": False}


def test_trusted_proxies_become_uvicorns_forwarded_allow_ips_as_networks() -> None:
    """Each trusted address or network is handed to uvicorn as an exact network, host
    bits cleared, so uvicorn and client_ip agree on who is trusted."""
    options = _proxy_options(_settings("127.0.0.1, 10.1.2.3/8"))
    assert options == {"proxy_headers": True, "forwarded_allow_ips": ["127.0.0.1/32", "10.0.0.0/8"]}


def test_a_trusted_proxy_that_is_not_an_address_stops_the_server() -> None:
    """A typo in CALLBRIDGE_TRUSTED_PROXIES is a start-up error, not a silent no-op."""
    with pytest.raises(typer.Exit):
        _proxy_options(_settings("nginx.internal"))
