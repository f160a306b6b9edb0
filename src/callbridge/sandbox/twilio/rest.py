"""What every emulated Twilio REST route shares: Twilio's error body and the handler type.

A module of its own so that the Calls resource (:mod:`.api`) and the Voice Dialing
Permissions resource (:mod:`.dialing_permissions`) both use it without importing
each other.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from callbridge.errors import CallbridgeError

#: A Starlette endpoint of the emulated REST API.
Handler = Callable[[Request], Awaitable[Response]]


class TwilioApiError(CallbridgeError):
    """An error the emulated API answers with, in Twilio's JSON shape.

    Args:
        status: the HTTP status.
        twilio_code: Twilio's error code (e.g. 21211).
        message: Twilio's message text.
    """

    def __init__(self, status: int, twilio_code: int, message: str) -> None:
        super().__init__(message)
        self.http_status = status
        self.twilio_code = twilio_code

    def response(self) -> JSONResponse:
        """The error as Twilio's JSON body."""
        headers = {}
        if self.http_status == 401:
            headers["WWW-Authenticate"] = 'Basic realm="Twilio API"'
        return JSONResponse(
            {
                "code": self.twilio_code,
                "message": self.message,
                "more_info": f"https://www.twilio.com/docs/errors/{self.twilio_code}",
                "status": self.http_status,
            },
            status_code=self.http_status,
            headers=headers,
        )
