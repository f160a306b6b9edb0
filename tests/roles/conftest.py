"""Fixtures of the roles tests: a fresh PostgreSQL database, as the store tests make it."""

from tests.store.conftest import postgres_url

__all__ = ["postgres_url"]
