"""The TwiML each call is given: consent gate, agent stream, owner and target-only dialling."""

from __future__ import annotations

from xml.etree.ElementTree import Element

from callbridge.adapters.twilio.twiml import NO_INPUT, OPTED_OUT
from tests.integration.helpers import OWNER, VISITOR, finished, place, twiml
from tests.support.app import running_sandbox

_SHORT = "answer=0.2,digits=1,hangup=1"


def _stream_of(document: str) -> Element:
    root = twiml(document)
    stream = root.find("./Connect/Stream")
    assert stream is not None, document
    return stream


async def test_agent_mode_asks_for_consent_then_connects_the_stream() -> None:
    """The callee hears the disclosure and "press 1"; after 1 the call connects to our stream."""
    async with running_sandbox({"CALLBRIDGE_SANDBOX_CALLEE": _SHORT}) as sb:
        body = await place(sb)
        sim = await finished(sb, body)
        first = twiml(sim.documents[0])
        gather = first.find("./Gather")
        assert gather is not None
        assert gather.get("numDigits") == "1"
        assert gather.get("action", "").endswith("/api/call/twiml?step=consent")
        prompt = "".join(gather.itertext())
        assert "press 1" in prompt and "press 9" in prompt and "automated call" in prompt
        assert [el.tag for el in first][-1] == "Hangup"
        assert sim.gathered == ["1"]
        stream = _stream_of(sim.documents[1])
        assert (
            stream.get("url") == sb.base_url.replace("http://", "ws://") + "/api/call/media-stream"
        )
        parameters = {p.get("name"): p.get("value") for p in stream.findall("./Parameter")}
        assert set(parameters) == {"call_id", "token"}
        assert parameters["call_id"] == body["call_id"]
        assert len(parameters["token"] or "") >= 20
        after = [el.tag for el in twiml(sim.documents[1])]
        assert after[-2:] == ["Say", "Hangup"]  # apology if the stream ends without a hand-off
        call = await sb.container.store.get_call(body["call_id"])
        assert call is not None and call.consent == "given"


async def test_pressing_9_opts_out_and_blocks_later_calls() -> None:
    """Key 9 puts the number on the do-not-call list, says goodbye and hangs up."""
    env = {"CALLBRIDGE_SANDBOX_CALLEE": "answer=0.2,digits=9,hangup=5"}
    async with running_sandbox(env) as sb:
        body = await place(sb)
        sim = await finished(sb, body)
        assert OPTED_OUT in sim.said
        assert sim.streams == []
        assert sb.elevenlabs.connection_attempts == 0
        call = await sb.container.store.get_call(body["call_id"])
        assert call is not None and call.consent == "opted_out"
        again = await sb.request_call(VISITOR)
        assert again.status_code >= 400
        assert again.json()["success"] is False
        assert len(sb.twilio.calls) == 1


async def test_no_key_pressed_hangs_up_without_contacting_the_agent() -> None:
    """Without a key press the call ends after the consent timeout; the agent is never opened."""
    env = {"CALLBRIDGE_SANDBOX_CALLEE": "answer=0.2,hangup=20", "CALLBRIDGE_CONSENT_TIMEOUT": "3"}
    async with running_sandbox(env) as sb:
        body = await place(sb)
        sim = await finished(sb, body)
        assert NO_INPUT in sim.said
        assert sim.end_reason == "twiml-ended"
        assert sim.streams == []
        assert sb.elevenlabs.connection_attempts == 0
        assert sb.elevenlabs.conversations == {}


async def test_owner_mode_dials_the_target_with_our_caller_id() -> None:
    """Owner mode greets, then dials TARGET_PHONE_NUMBER with the Twilio number as caller id."""
    env = {
        "CALLBRIDGE_MODE": "owner",
        "TARGET_PHONE_NUMBER": OWNER,
        "CALLBRIDGE_SANDBOX_CALLEE": "answer=0.2,hangup=5",
    }
    async with running_sandbox(env) as sb:
        body = await place(sb)
        sim = await finished(sb, body)
        root = twiml(sim.documents[0])
        dial = root.find("./Dial")
        assert dial is not None
        assert (dial.text or "").strip() == OWNER
        assert dial.get("callerId") == sb.container.from_number
        assert root[0].tag == "Say"
        assert sim.dialled == [OWNER]
        assert sim.streams == []
        assert sb.elevenlabs.connection_attempts == 0


async def test_target_only_mode_dials_the_target_whatever_was_asked() -> None:
    """With CALLBRIDGE_DIAL_TARGET_ONLY every call goes to TARGET_PHONE_NUMBER."""
    env = {
        "CALLBRIDGE_DIAL_TARGET_ONLY": "true",
        "TARGET_PHONE_NUMBER": OWNER,
        "CALLBRIDGE_SANDBOX_CALLEE": _SHORT,
    }
    async with running_sandbox(env) as sb:
        body = await place(sb, VISITOR)
        sim = await finished(sb, body)
        assert sim.to == OWNER
        call = await sb.container.store.get_call(body["call_id"])
        assert call is not None
        assert call.to_number == VISITOR and call.dialled_number == OWNER


async def test_consent_off_greets_then_connects() -> None:
    """With CALLBRIDGE_CONSENT=off the callee hears the greeting, then the stream connects."""
    env = {"CALLBRIDGE_CONSENT": "off", "CALLBRIDGE_SANDBOX_CALLEE": "answer=0.2,hangup=1"}
    async with running_sandbox(env) as sb:
        body = await place(sb)
        sim = await finished(sb, body)
        root = twiml(sim.documents[0])
        assert [el.tag for el in root] == ["Say", "Connect", "Say", "Hangup"]
        assert root.find("./Gather") is None
        assert "automated call" in (root[0].text or "")
        assert len(sim.streams) == 1
        assert sim.stream.custom_parameters["call_id"] == body["call_id"]
