"""FallbackUrl and FallbackMethod: what the emulator does when a call's TwiML fails.

Twilio requests ``FallbackUrl`` when it "is unable to retrieve or execute TwiML"
at ``Url``, adding ``ErrorCode`` and ``ErrorUrl`` to the usual voice parameters
(twilio.com/docs/usage/security/availability-reliability; twilio-oai CreateCall).
"""

from __future__ import annotations

import pytest

from callbridge.sandbox.twilio.sim import APPLICATION_ERROR
from tests.sandbox_twilio.conftest import ACCOUNT_SID, CALLEE, CALLER, Sandbox

SORRY = "<Response><Say>Sorry, try later.</Say><Hangup/></Response>"


@pytest.mark.parametrize(
    ("failure", "code"), [(500, "11200"), (404, "11200"), (None, "12100"), ("json", "12300")]
)
async def test_a_failing_url_is_followed_by_the_signed_fallback_with_the_error(
    sandbox: Sandbox, failure: int | str | None, code: str
) -> None:
    """A TwiML URL that answers 5xx/4xx (11200), no TwiML (12100) or another content
    type (12300) makes the emulator POST FallbackUrl, signed, with the voice parameters
    plus ErrorCode and ErrorUrl; the fallback's TwiML runs and the call completes."""
    receiver = sandbox.receiver
    if isinstance(failure, int):
        receiver.failing["/twiml"] = failure
    elif failure == "json":
        receiver.typed["/twiml"] = ('{"say": "hi"}', "application/json")
    else:
        receiver.twiml["/twiml"] = "<Html>not TwiML</Html>"
    receiver.twiml["/fallback"] = SORRY
    primary = sandbox.base_url + "/twiml?call_id=c1"
    sid = (await sandbox.create(Url=primary, FallbackUrl=sandbox.base_url + "/fallback"))["sid"]
    call = await sandbox.end(sid)
    (hook,) = receiver.posted("/fallback")
    assert hook.method == "POST" and hook.valid
    assert hook.params["ErrorCode"] == code
    assert hook.params["ErrorUrl"] == primary
    assert hook.params["CallSid"] == sid and hook.params["AccountSid"] == ACCOUNT_SID
    assert (hook.params["From"], hook.params["To"]) == (CALLER, CALLEE)
    assert hook.params["CallStatus"] == "in-progress"
    assert call.said == ["Sorry, try later."]
    assert [c for c, _ in call.errors] == [int(code)]
    assert call.status == "completed" and call.end_reason == "twiml-ended"


async def test_the_fallback_method_get_puts_the_parameters_in_the_signed_query(
    sandbox: Sandbox,
) -> None:
    """FallbackMethod=GET requests the fallback with the parameters in the query string,
    signed over the full URL."""
    sandbox.receiver.failing["/twiml"] = 503
    sandbox.receiver.twiml["/fallback"] = SORRY
    sid = (
        await sandbox.create(
            Url=sandbox.base_url + "/twiml",
            FallbackUrl=sandbox.base_url + "/fallback",
            FallbackMethod="GET",
        )
    )["sid"]
    await sandbox.end(sid)
    (hook,) = [h for h in sandbox.receiver.hooks if h.path == "/fallback"]
    assert hook.method == "GET" and hook.valid
    assert "ErrorCode=11200" in hook.url and "CallSid=" + sid in hook.url


async def test_a_failing_fallback_ends_the_call_with_twilios_apology(sandbox: Sandbox) -> None:
    """When the fallback fails as well, both errors are recorded, the callee hears
    Twilio's application-error message once, and the call completes."""
    sandbox.receiver.failing["/twiml"] = 500
    sandbox.receiver.failing["/fallback"] = 500
    sid = (
        await sandbox.create(
            Url=sandbox.base_url + "/twiml", FallbackUrl=sandbox.base_url + "/fallback"
        )
    )["sid"]
    call = await sandbox.end(sid)
    assert len(sandbox.receiver.posted("/fallback")) == 1
    assert [c for c, _ in call.errors] == [11200, 11200]
    assert call.said == [APPLICATION_ERROR]
    assert call.status == "completed"


async def test_without_a_fallback_url_the_call_gets_twilios_apology(sandbox: Sandbox) -> None:
    """No FallbackUrl: the error is recorded, Twilio's message is played, the call ends."""
    sandbox.receiver.failing["/twiml"] = 500
    sid = (await sandbox.create(Url=sandbox.base_url + "/twiml"))["sid"]
    call = await sandbox.end(sid)
    assert [c for c, _ in call.errors] == [11200]
    assert call.said == [APPLICATION_ERROR]
    assert not sandbox.receiver.posted("/fallback")


async def test_a_good_url_never_touches_the_fallback(sandbox: Sandbox) -> None:
    """A working Url runs as usual; the fallback is not requested, and a later failing
    <Redirect> target does not fall back either (only the Url's document does)."""
    sandbox.receiver.twiml["/twiml"] = (
        "<Response><Say>Hi</Say><Redirect>/gone</Redirect></Response>"
    )
    sandbox.receiver.failing["/gone"] = 500
    sandbox.receiver.twiml["/fallback"] = SORRY
    sid = (
        await sandbox.create(
            Url=sandbox.base_url + "/twiml", FallbackUrl=sandbox.base_url + "/fallback"
        )
    )["sid"]
    call = await sandbox.end(sid)
    assert not sandbox.receiver.posted("/fallback")
    assert call.said == ["Hi", APPLICATION_ERROR]
    assert [c for c, _ in call.errors] == [11200]


async def test_a_bad_fallback_url_is_refused_on_create(sandbox: Sandbox) -> None:
    """A FallbackUrl that is not http(s) is refused with 21205, and no call is placed."""
    body = await sandbox.create(
        expect=400, Url=sandbox.base_url + "/twiml", FallbackUrl="ftp://example.com/x"
    )
    assert body["code"] == 21205
    assert sandbox.emulator.calls == {}
