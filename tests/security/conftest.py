"""Fixtures of the security suite: a Redis server (shared with tests/policy)."""

from __future__ import annotations

from tests.policy.conftest import redis_url  # noqa: F401 - a session fixture, re-exported
