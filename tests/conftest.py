"""Test-wide fixtures: a hermetic environment for every test."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import settings as hypothesis_settings

from tests.support.redis import RedisServer, empty_redis

# Fail, naming them, rather than hang when tests leave a working thread or a process.
pytest_plugins = ["tests.support.leftovers"]

hypothesis_settings.register_profile("ci", max_examples=200, deadline=None)
hypothesis_settings.register_profile("dev", max_examples=60, deadline=None)
hypothesis_settings.load_profile("ci" if os.environ.get("CI") else "dev")

_SCRUBBED_PREFIXES = ("CALLBRIDGE_", "TWILIO_", "ELEVENLABS_")
_SCRUBBED_NAMES = (
    "PUBLIC_BASE_URL",
    "NEXT_PUBLIC_APP_URL",
    "DATABASE_URL",
    "REDIS_URL",
    "TARGET_PHONE_NUMBER",
)


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test starts with no callbridge, Twilio or ElevenLabs variables set."""
    for name in list(os.environ):
        if name.startswith(_SCRUBBED_PREFIXES) or name in _SCRUBBED_NAMES:
            monkeypatch.delenv(name, raising=False)
    yield


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    """The URL of a Redis server for the whole session: ``REDIS_URL_TEST``, or a
    ``redis-server`` started on a free loopback port (tests that stop Redis start their
    own). Its database is emptied for each test that asks for ``redis_url``."""
    url = os.environ.get("REDIS_URL_TEST")
    if url:
        yield url
        return
    server = RedisServer(purpose="Redis tests (or set REDIS_URL_TEST)")
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: str) -> str:
    """The session's Redis, its database emptied for this test: quota counters are per
    number and per client address, and every test's requests come from 127.0.0.1."""
    empty_redis(redis_server)
    return redis_server


@pytest.fixture(autouse=True)
def restore_structlog() -> Iterator[None]:
    """A test that runs CLI code in process may configure structlog to print to a stream
    that closes with the test; later tests would then fail to log. Put it back."""
    import structlog

    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


def _quiet_logs() -> None:
    """Keep test output readable: only warnings and errors from structlog."""
    import logging

    import structlog

    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        cache_logger_on_first_use=False,
    )


_quiet_logs()
