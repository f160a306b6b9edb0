"""What a test does when something it needs (a server, a program) is not here."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def missing(what: str) -> NoReturn:
    """The test cannot run without ``what``: it fails in CI (``CI`` set), where every test
    must run, and is skipped elsewhere. ``what`` says what is missing and how to get it."""
    if os.environ.get("CI"):
        pytest.fail(f"{what} (CI must run every test)")
    pytest.skip(what)
