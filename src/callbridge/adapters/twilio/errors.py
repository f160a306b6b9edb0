"""twilio-python's and httpx's exceptions, as the project's errors (one place for every adapter)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.response import Response

from callbridge.errors import ErrorCategory, ProviderError, TwilioRefused

__all__ = ["twilio_errors"]


def _category(status: int) -> ErrorCategory:
    if status in (401, 403):
        return ErrorCategory.AUTH
    if status == 429:
        return ErrorCategory.RATE_LIMIT
    return ErrorCategory.SERVER if status >= 500 else ErrorCategory.CLIENT


def _refused(action: str, status: int, code: int | None) -> TwilioRefused:
    return TwilioRefused(
        f"Twilio refused to {action} (code {code}, HTTP {status})",
        provider="twilio",
        category=_category(status),
        provider_code=code,
        http_status=status,
    )


def _error_code(text: str) -> int | None:
    try:
        body = json.loads(text)
    except ValueError:
        return None
    code = body.get("code") if isinstance(body, dict) else None
    return code if isinstance(code, int) else None


@contextmanager
def twilio_errors(action: str) -> Iterator[None]:
    """Raise what a Twilio request to ``action`` ("create the call") failed with as ours.

    Raises:
        TwilioRefused: Twilio answered with an error (its code and HTTP status kept).
        ProviderError: no answer in time (``TIMEOUT``) or none at all (``NETWORK``).
    """
    try:
        yield
    except TwilioRestException as exc:
        raise _refused(action, int(exc.status), int(exc.code) if exc.code else None) from exc
    except TwilioException as exc:
        # A list page that is not 200 raises a bare TwilioException("Unable to fetch
        # page", response) in twilio-python, not a TwilioRestException.
        response = exc.args[1] if len(exc.args) > 1 else None
        if isinstance(response, Response):
            raise _refused(action, int(response.status_code), _error_code(response.text)) from exc
        raise ProviderError(
            f"could not {action}: {type(exc).__name__}",
            provider="twilio",
            category=ErrorCategory.NETWORK,
        ) from exc
    except httpx.TimeoutException as exc:
        raise ProviderError(
            f"Twilio did not answer in time to {action}",
            provider="twilio",
            category=ErrorCategory.TIMEOUT,
        ) from exc
    except httpx.HTTPError as exc:
        raise ProviderError(
            f"could not reach Twilio to {action}: {type(exc).__name__}",
            provider="twilio",
            category=ErrorCategory.NETWORK,
        ) from exc
