"""Alerts to a chat or paging webhook: one JSON POST per notification.

The body carries ``text``, which Slack and Mattermost incoming webhooks show as
the message (other fields are ignored there), and the structured fields for
anything else (a PagerDuty or Opsgenie bridge, a small script)::

    {"text": "callbridge alert (spend_cap): ...", "service": "callbridge",
     "kind": "spend_cap", "summary": "...", "details": {...},
     "at": "2026-11-24T15:00:00+00:00", "held_back": 0}

The URL is a secret (a Slack webhook URL is its own credential): it is never
logged, and errors name only the status code.
"""

from __future__ import annotations

import httpx

from callbridge.errors import ErrorCategory, ProviderError
from callbridge.ports import Alert

__all__ = ["WebhookAlertSink", "alert_body"]

_TIMEOUT_S = 5.0


def alert_body(alert: Alert) -> dict[str, object]:
    """The JSON sent for ``alert``."""
    text = f"callbridge alert ({alert.kind}): {alert.summary}"
    if alert.held_back:
        text += f" ({alert.held_back} more of these since the last notification)"
    return {
        "text": text,
        "service": "callbridge",
        "kind": alert.kind,
        "summary": alert.summary,
        "details": dict(alert.details),
        "at": alert.at.isoformat(),
        "held_back": alert.held_back,
    }


class WebhookAlertSink:
    """An :class:`~callbridge.services.alerts.AlertSink` that POSTs JSON to one URL.

    Args:
        http: the app's shared ``httpx.AsyncClient``.
        url: where to POST.
    """

    def __init__(self, http: httpx.AsyncClient, url: str) -> None:
        self._http = http
        self._url = url

    async def deliver(self, alert: Alert) -> None:
        """POST the alert; any 2xx is success.

        Raises:
            ProviderError: no answer, or an answer other than 2xx.
        """
        try:
            response = await self._http.post(self._url, json=alert_body(alert), timeout=_TIMEOUT_S)
        except httpx.TimeoutException as exc:
            raise _failed(
                "the alert webhook did not answer in time", ErrorCategory.TIMEOUT
            ) from exc
        except httpx.HTTPError as exc:
            message = f"the alert webhook could not be reached ({type(exc).__name__})"
            raise _failed(message, ErrorCategory.NETWORK) from exc
        if not response.is_success:
            category = ErrorCategory.SERVER if response.status_code >= 500 else ErrorCategory.CLIENT
            message = f"the alert webhook answered {response.status_code}"
            raise _failed(message, category, response.status_code)


def _failed(message: str, category: ErrorCategory, status: int | None = None) -> ProviderError:
    return ProviderError(message, provider="alert_webhook", category=category, http_status=status)
