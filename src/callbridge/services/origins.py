"""Which web sites may ask for calls, and a log line (once per site) for the ones refused.

A site missing from ``CALLBRIDGE_ALLOWED_ORIGINS`` only sees a failed fetch: the
browser hides the 403 behind CORS, so the visitor's page can only say it could not
reach the call service. The server therefore says it, once per refused origin and
hour, naming the setting to change (the origin is a web site's, not a person's).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

import structlog

__all__ = ["SETTING", "OriginPolicy", "origins_in_force"]

_log = structlog.get_logger(__name__)

#: The setting that lists the allowed sites.
SETTING = "CALLBRIDGE_ALLOWED_ORIGINS"
_LOOPBACK = ("127.0.0.1", "localhost", "[::1]")
_MAX_SHOWN = 200  # characters of a refused Origin header that reach the log


def origins_in_force(
    configured: Iterable[str], public_base_url: str, *, sandbox: bool
) -> frozenset[str]:
    """The configured origins, callbridge's own and, in the sandbox, its loopback aliases."""
    allowed = {o.rstrip("/") for o in configured} | {public_base_url.rstrip("/")}
    if sandbox:
        scheme, rest = public_base_url.rstrip("/").split("://", 1)
        port = rest.rsplit(":", 1)[1] if ":" in rest else ("443" if scheme == "https" else "80")
        allowed |= {f"{scheme}://{host}:{port}" for host in _LOOPBACK}
    return frozenset(allowed)


class OriginPolicy:
    """Decide whether an origin may ask for calls; log each refused origin now and then.

    Args:
        allowed: the origins in force (see :func:`origins_in_force`).
        log_every_s: how long one origin stays quiet after its log line.
        remember: how many refused origins are remembered (the oldest are forgotten).
        clock: monotonic seconds.
    """

    def __init__(
        self,
        allowed: Iterable[str],
        *,
        log_every_s: float = 3600.0,
        remember: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.allowed = frozenset(allowed)
        self._every = log_every_s
        self._remember = remember
        self._clock = clock
        self._logged: OrderedDict[str, float] = OrderedDict()

    def allows(self, origin: str) -> bool:
        """Whether ``origin`` may ask; a refusal is logged unless this origin was lately."""
        if origin in self.allowed:
            return True
        now = self._clock()
        last = self._logged.get(origin)
        if last is None or now - last >= self._every:
            self._logged[origin] = now
            self._logged.move_to_end(origin)
            while len(self._logged) > self._remember:
                self._logged.popitem(last=False)
            _log.warning(
                "origin_refused",
                origin=origin[:_MAX_SHOWN],
                allowed=sorted(self.allowed),
                fix=f"add {origin[:_MAX_SHOWN]} to {SETTING} (comma-separated) if this "
                "site may ask for calls",
                quiet_for_s=int(self._every),
            )
        return False
