"""The official ``elevenlabs`` Python SDK completes a conversation against the emulator."""

from __future__ import annotations

import asyncio
import threading
import warnings
from collections.abc import Callable

from callbridge.sandbox.elevenlabs.emulator import ElevenLabsEmulator
from tests.sandbox_elevenlabs.conftest import (
    AGENT_ID,
    API_KEY,
    MOUNT,
    make_emulator,
    mounted,
    wait_until,
)
from tests.support.server import serve

with warnings.catch_warnings():
    # elevenlabs 2.78 touches websockets' deprecated legacy names at import time.
    warnings.simplefilter("ignore", DeprecationWarning)
    from elevenlabs import ElevenLabs
    from elevenlabs.conversational_ai.conversation import (
        AudioInterface,
        Conversation,
        ConversationInitiationData,
    )


class RecordingAudio(AudioInterface):
    """An AudioInterface that plays nothing and sends 250 ms of silence every 250 ms."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.interrupts = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, input_callback: Callable[[bytes], None]) -> None:
        def pump() -> None:
            while not self._stop.wait(0.25):
                input_callback(b"\x00\x00" * 4000)  # pcm_16000 silence

        self._thread = threading.Thread(target=pump, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)

    def output(self, audio: bytes) -> None:
        self.received += audio

    def interrupt(self) -> None:
        self.interrupts += 1


async def run_sdk_conversation(emulator: ElevenLabsEmulator, *, requires_auth: bool) -> None:
    async with serve(mounted(emulator)) as base:
        client = ElevenLabs(base_url=base + MOUNT, api_key=API_KEY)
        audio = RecordingAudio()
        responses: list[str] = []
        conversation = Conversation(
            client,
            AGENT_ID,
            requires_auth=requires_auth,
            audio_interface=audio,
            config=ConversationInitiationData(dynamic_variables={"visitor_name": "Ada"}),
            callback_agent_response=responses.append,
        )
        await asyncio.to_thread(conversation.start_session)
        try:
            await wait_until(lambda: responses and len(audio.received) > 16000, limit=10)
            record = next(iter(emulator.conversations.values()))
            await wait_until(lambda: len(record.pongs) >= 2, limit=5)
        finally:
            conversation.end_session()  # type: ignore[no-untyped-call]
            conversation_id = await asyncio.to_thread(conversation.wait_for_session_end)
        await wait_until(lambda: record.ended_at is not None)
        assert conversation_id == record.conversation_id
        assert responses[0].startswith("Hi Ada! This is the callbridge demo agent.")
        assert record.dynamic_variables == {"visitor_name": "Ada"}
        assert record.init_data is not None
        assert record.init_data["source_info"]["source"] == "python_sdk"
        assert set(record.pongs) <= set(record.pings) and record.pongs[:2] == record.pings[:2]
        assert record.user_audio_bytes >= 8000
        assert record.closed_by == "client"
        assert record.authorization_method == ("signed_url" if requires_auth else "public")
        # pcm_16000 out: even byte count, about 55 ms of audio per character streamed
        assert len(audio.received) % 2 == 0


async def test_sdk_completes_public_conversation() -> None:
    """The SDK gets metadata, audio and agent_response; its pongs are recorded."""
    emulator = make_emulator(output_format="pcm_16000", input_format="pcm_16000")
    await run_sdk_conversation(emulator, requires_auth=False)


async def test_sdk_completes_signed_url_conversation() -> None:
    """With requires_auth the SDK fetches a signed URL (xi-api-key) and connects with it."""
    emulator = make_emulator(
        output_format="pcm_16000", input_format="pcm_16000", require_signed_url=True
    )
    await run_sdk_conversation(emulator, requires_auth=True)
