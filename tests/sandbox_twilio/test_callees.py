"""CALLBRIDGE_SANDBOX_CALLEES: callee scripts per destination number or number prefix."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from callbridge.errors import ValidationFailed
from callbridge.sandbox.callee import (
    CalleeScript,
    Pickup,
    parse_callee_book,
)
from callbridge.sandbox.standalone import build_standalone
from callbridge.settings import Settings
from tests.sandbox_twilio.conftest import ACCOUNT_SID, AUTH_TOKEN, CALLER
from tests.support.server import serve


def test_book_matches_exact_number_before_longest_prefix() -> None:
    """An exact number wins; otherwise the longest matching prefix; otherwise nothing."""
    book = parse_callee_book(
        "+12025550101=busy; +1202555*=no-answer ;+120255501*=answer=1,hangup=40;"
    )
    assert book.script_for("+12025550101") == CalleeScript(pickup=Pickup.BUSY)
    assert book.script_for("+12025550102") == CalleeScript(answer_after=1.0, hangup_after=40.0)
    assert book.script_for("+12025550200") == CalleeScript(pickup=Pickup.NO_ANSWER)
    assert book.script_for("+13125550101") is None
    assert len(parse_callee_book("")) == 0


def test_book_reads_a_json_file(tmp_path: Path) -> None:
    """A path ending in .json is read as one object of number -> script."""
    path = tmp_path / "callees.json"
    path.write_text(json.dumps({"+12125550107": "reject", "+1312555*": "answer=0,hangup=2"}))
    book = parse_callee_book(str(path))
    assert book.script_for("+12125550107") == CalleeScript(pickup=Pickup.REJECT)
    assert book.script_for("+13125550199") == CalleeScript(answer_after=0.0, hangup_after=2.0)


@pytest.mark.parametrize(
    "text",
    [
        "+12025550101",
        "12025550101=busy",
        "+1202555*0=busy",
        "+12025550101=jump",
        "+12025550101=busy;+12025550101=reject",
        "/no/such/file.json",
        "*=busy",
    ],
)
def test_bad_books_raise_validation_failed(text: str) -> None:
    """A key that is not a number or prefix, a repeated key, a bad script or file is refused."""
    with pytest.raises(ValidationFailed):
        parse_callee_book(text)


async def test_standalone_sandbox_scripts_each_callee_by_its_number() -> None:
    """Calls to different numbers of one standalone sandbox end as their own scripts say."""
    settings = Settings(
        twilio_account_sid=ACCOUNT_SID,
        twilio_auth_token=AUTH_TOKEN,
        sandbox_callee="answer=0,hangup=0.3",
        sandbox_callees="+12025550101=busy;+1212555*=reject;+13125550103=no-answer",
    )
    app, twilio, _ = build_standalone(settings)
    root = Starlette(routes=[Mount("/", app=app)])
    async with serve(root) as base, httpx.AsyncClient(timeout=10) as http:
        await twilio.start()
        try:
            sids = {}
            for to in ("+12025550101", "+12125550155", "+13125550103", "+14155550100"):
                response = await http.post(
                    f"{base}/sandbox/twilio/2010-04-01/Accounts/{ACCOUNT_SID}/Calls.json",
                    data={
                        "To": to,
                        "From": CALLER,
                        "Twiml": "<Response><Pause length='5'/></Response>",
                        "Timeout": "1",
                    },
                    auth=(ACCOUNT_SID, AUTH_TOKEN),
                )
                assert response.status_code == 201, response.text
                sids[to] = response.json()["sid"]
            ended = {to: (await twilio.wait_for_end(sid, 10)) for to, sid in sids.items()}
        finally:
            await twilio.aclose()
    assert {to: call.status for to, call in ended.items()} == {
        "+12025550101": "busy",
        "+12125550155": "busy",
        "+13125550103": "no-answer",
        "+14155550100": "completed",
    }
    assert ended["+12125550155"].sip_response_code == 603
    assert ended["+14155550100"].duration is not None
