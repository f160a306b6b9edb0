"""Status callbacks are accepted whichever way Twilio signs their overrides (unconfirmed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.helpers import VISITOR, wait_for_status
from tests.support.app import running_sandbox
from tests.support.wait import wait_until


@pytest.mark.parametrize("sign_fragment", [False, True], ids=["without", "with"])
async def test_status_callbacks_pass_signed_with_or_without_the_fragment(
    tmp_path: Path, sign_fragment: bool
) -> None:
    """The emulator signs the StatusCallback URL without its #overrides (the one source
    found) or with them (the other answer); our door accepts both, and the call ends."""
    env = {"CALLBRIDGE_SANDBOX_CALLEE": "busy"}
    options = {"sign_url_fragment": sign_fragment}
    async with running_sandbox(env, tmp_path=tmp_path, emulator_options=options) as sb:
        response = await sb.request_call(VISITOR)
        assert response.status_code == 200, response.text
        placed = response.json()
        await wait_for_status(sb, placed["call_id"], {"busy"})
        sim = await sb.twilio.wait_for_end(placed["call_sid"], 10)
        assert sim.status_callback.endswith("&rp=ct,rt,5xx")  # the overrides reached Twilio
        await wait_until(lambda: sim.webhooks and sim.webhooks[-1].status_code is not None)
        codes = [w.status_code for w in sim.webhooks if w.kind == "status"]
        assert codes and set(codes) == {204}
