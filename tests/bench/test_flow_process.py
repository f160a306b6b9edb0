"""Twilio's set-up side of the bench runs in a process of its own, apart from the media ends.

It checks where the work runs, not how fast: the frames' timing lives in
``make bench``.
"""

from __future__ import annotations

import os
import secrets

import httpx

from callbridge.bench.loadgen import Peers


def _exists(pid: int) -> bool:
    """Whether a process (a zombie included) has this id."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_the_rest_peer_answers_from_its_own_process_and_stops_with_the_bench() -> None:
    """The REST peer a server creates calls at is served by a child process (not the
    one whose event loop times the frames), checks Twilio's Basic auth, answers a create
    with the call's JSON, and its process is gone once the peers are closed."""
    sid, token = "AC" + secrets.token_hex(16), secrets.token_hex(16)
    peers = Peers(account_sid=sid, auth_token=token)
    await peers.start()
    try:
        assert peers.rest is not None and peers.agent is not None
        driver_pid = peers.rest.pid
        assert driver_pid is not None and driver_pid != os.getpid()
        assert _exists(driver_pid)
        url = f"{peers.rest.base_url}/2010-04-01/Accounts/{sid}/Calls.json"
        form = {"To": "+12025550100", "From": "+12345678901", "Url": "http://127.0.0.1:9/twiml"}
        async with httpx.AsyncClient(timeout=10) as http:
            refused = await http.post(url, data=form, auth=(sid, "not-the-token"))
            created = await http.post(url, data=form, auth=(sid, token))
        assert refused.status_code == 401
        assert created.status_code == 201
        assert created.json()["sid"].startswith("CA")
        assert created.json()["to"] == "+12025550100"
    finally:
        await peers.aclose()
    assert not _exists(driver_pid), "the driver process ended and was reaped"
