"""The post-call webhook: envelope, signature, and verification on both sides."""

from __future__ import annotations

import os
import stat
import time
import warnings
from pathlib import Path

import numpy as np
import orjson
import pytest
from websockets.asyncio.client import connect

from callbridge.adapters.elevenlabs.webhook_signature import sign, verify
from callbridge.errors import WebhookRejected
from callbridge.media.agent_protocol import AgentCodec
from callbridge.media.transcode import AudioFormat
from callbridge.sandbox.elevenlabs.voice import Voice, parse_wav, tone_pattern
from tests.sandbox_elevenlabs.conftest import (
    AGENT_ID,
    MOUNT,
    make_emulator,
    mounted,
    wait_until,
    webhook_receiver,
)
from tests.support.contract import divergences
from tests.support.server import serve

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from elevenlabs import ElevenLabs
    from elevenlabs.core.api_error import ApiError

SECRET = "wsec_0123456789abcdef"


class TestSignature:
    def test_sign_matches_the_documented_scheme(self) -> None:
        """The header is t=<ts>,v0=<HMAC-SHA256(secret, "ts.body")> and verifies."""
        header = sign(b'{"a":1}', SECRET, 1_700_000_000)
        assert header.startswith("t=1700000000,v0=")
        verify(b'{"a":1}', header, SECRET, now=1_700_000_100)

    @pytest.mark.parametrize(
        ("body", "header", "now"),
        [
            (b"{}", None, 1_700_000_000),
            (b"{}", "v0=abc", 1_700_000_000),
            (b"{}", "t=1700000000,v0=" + "0" * 64, 1_700_000_000),
            (b"{}", sign(b"{}", SECRET, 1_700_000_000), 1_700_000_000 + 1801),
            (b"{ }", sign(b"{}", SECRET, 1_700_000_000), 1_700_000_000),
            (b"{}", sign(b"{}", "other", 1_700_000_000), 1_700_000_000),
            (b"{}", "t=1700000000,v0=é", 1_700_000_000),
        ],
    )
    def test_bad_signatures_are_rejected(self, body: bytes, header: str | None, now: int) -> None:
        """Missing, malformed, stale, tampered or wrongly keyed signatures are rejected."""
        with pytest.raises(WebhookRejected):
            verify(body, header, SECRET, now=now)


async def test_post_call_webhook_is_signed_and_complete() -> None:
    """After a conversation, the emulator POSTs post_call_transcription, signed;
    our verify and the SDK's construct_event both accept it."""
    async with webhook_receiver() as (hook_url, received):
        emulator = make_emulator(webhook_url=hook_url, webhook_secret=SECRET)
        async with serve(mounted(emulator)) as base:
            url = (
                base.replace("http", "ws")
                + MOUNT
                + (f"/v1/convai/conversation?agent_id={AGENT_ID}")
            )
            async with connect(url) as ws:
                await ws.send(AgentCodec.initiation({"visitor_name": "Lin", "call_id": "c_9"}))
                while orjson.loads(await ws.recv())["type"] != "agent_response":
                    pass
            await wait_until(lambda: received)
    body, header = received[0]
    verify(body, header, SECRET, now=time.time())
    client = ElevenLabs(api_key="unused")
    assert header is not None
    event = client.webhooks.construct_event(body.decode(), header, SECRET)
    with pytest.raises(ApiError):
        client.webhooks.construct_event(body.decode() + " ", header, SECRET)
    assert event["type"] == "post_call_transcription"
    data = event["data"]
    record = next(iter(emulator.conversations.values()))
    assert data["conversation_id"] == record.conversation_id
    assert data["agent_id"] == AGENT_ID
    assert data["status"] == "done"
    assert data["transcript"][0]["role"] == "agent"
    assert data["transcript"][0]["message"].startswith("Hi Lin!")
    assert isinstance(data["transcript"][0]["time_in_call_secs"], int)
    assert data["metadata"]["termination_reason"] == "Client disconnected"
    assert "call_duration_secs" in data["metadata"]
    assert data["analysis"]["transcript_summary"]
    variables = data["conversation_initiation_client_data"]["dynamic_variables"]
    assert variables["visitor_name"] == "Lin" and variables["call_id"] == "c_9"
    assert variables["system__conversation_id"] == record.conversation_id
    assert emulator.webhook_deliveries == [(record.conversation_id, 200)]
    # Each turn has the Conversations API's history shape (the SDK's strict model), so a
    # webhook and a fetched conversation (security.md F42) read alike.
    from elevenlabs.types import ConversationHistoryTranscriptCommonModelOutput as Turn

    for turn in data["transcript"]:
        Turn.model_validate(turn)


async def test_post_call_webhook_data_is_the_sdks_conversation_model_strictly() -> None:
    """The webhook's data is a GetConversationResponseModel (the docs: it "matches the
    GET Conversation response format exactly"): model_validate accepts it, every required
    field is there (has_auxiliary_audio included), no key the model lacks, every enum
    value in range; agent_name and the message counts are those the API reports."""
    from elevenlabs.types import GetConversationResponseModel

    async with webhook_receiver() as (hook_url, received):
        emulator = make_emulator(webhook_url=hook_url, webhook_secret=SECRET)
        async with serve(mounted(emulator)) as base:
            url = (
                base.replace("http", "ws")
                + MOUNT
                + (f"/v1/convai/conversation?agent_id={AGENT_ID}")
            )
            async with connect(url) as ws:
                await ws.send(AgentCodec.initiation({"visitor_name": "Lin", "call_id": "c_9"}))
                while orjson.loads(await ws.recv())["type"] != "agent_response":
                    pass
                await ws.send(AgentCodec.user_message("Call me back tomorrow"))
                while orjson.loads(await ws.recv())["type"] != "agent_response":
                    pass
            await wait_until(lambda: received)
    data = orjson.loads(received[0][0])["data"]
    model = GetConversationResponseModel.model_validate(data)
    assert divergences(GetConversationResponseModel, data) == []
    assert model.has_auxiliary_audio is False
    assert data["agent_name"]
    assert (data["user_message_count"], data["agent_message_count"]) == (1, 2)


class TestVoice:
    def test_tone_length_follows_text(self) -> None:
        """Tones last about 55 ms per character, within 0.6–12 s."""
        assert len(tone_pattern("x" * 40, 8000)) == 2 * int(2.2 * 8000)
        assert len(tone_pattern("hi", 16000)) == 2 * int(0.6 * 16000)

    async def test_espeak_output_is_converted(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """When espeak-ng is on PATH its WAV (with unset sizes) becomes the target format."""
        pcm = (np.sin(np.arange(22050) / 22050 * 2 * np.pi * 200) * 9000).astype("<i2")
        header = (
            b"RIFF\xff\xff\xff\xffWAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00"
            + (22050).to_bytes(4, "little")
            + (44100).to_bytes(4, "little")
            + b"\x02\x00\x10\x00data\xff\xff\xff\xff"
        )
        wav = tmp_path / "out.wav"
        wav.write_bytes(header + pcm.tobytes())
        script = tmp_path / "espeak-ng"
        script.write_text(f"#!/bin/sh\ncat > /dev/null\ncat '{wav}'\n")
        script.chmod(script.stat().st_mode | stat.S_IEXEC)
        monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}")
        voice = Voice()
        assert voice.kind == "espeak-ng"
        audio = await voice.synthesize("hello", AudioFormat("ulaw", 8000))
        assert abs(len(audio) - 8000) <= 80
        assert parse_wav(header + pcm.tobytes())[0] == 22050
