"""Signed URLs, API-key errors and the widget config of the ElevenLabs emulator."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import httpx
import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from callbridge.sandbox.elevenlabs.emulator import SIGNED_URL_TTL_S, ElevenLabsEmulator
from tests.sandbox_elevenlabs.conftest import AGENT_ID, API_KEY, MOUNT, make_emulator, mounted
from tests.support.server import serve


async def first_message_and_close(url: str) -> tuple[dict[str, object], int | None]:
    async with connect(url) as ws:
        message = orjson.loads(await ws.recv())
        with pytest.raises(ConnectionClosed):
            await ws.recv()
        return message, ws.close_code


class TestSignedUrl:
    @pytest.mark.parametrize("path", ["get-signed-url", "get_signed_url"])
    async def test_signed_url_is_built_from_host_and_mount(
        self, emulator_url: tuple[ElevenLabsEmulator, str], path: str
    ) -> None:
        """Both paths return a ws:// URL under the mount, with agent_id and a signature."""
        _, base = emulator_url
        async with httpx.AsyncClient() as http:
            response = await http.get(
                f"{base}/v1/convai/conversation/{path}",
                params={"agent_id": AGENT_ID},
                headers={"xi-api-key": API_KEY},
            )
        assert response.status_code == 200
        url = urlsplit(response.json()["signed_url"])
        assert url.scheme == "ws"
        assert url.netloc == urlsplit(base).netloc
        assert url.path == MOUNT + "/v1/convai/conversation"
        query = parse_qs(url.query)
        assert query["agent_id"] == [AGENT_ID] and query["conversation_signature"][0]

    async def test_bad_key_and_missing_agent(
        self, emulator_url: tuple[ElevenLabsEmulator, str]
    ) -> None:
        """A wrong key gets 401 invalid_api_key; no agent_id gets a 422 detail list."""
        _, base = emulator_url
        async with httpx.AsyncClient() as http:
            bad = await http.get(
                f"{base}/v1/convai/conversation/get-signed-url",
                params={"agent_id": AGENT_ID},
                headers={"xi-api-key": "wrong"},
            )
            missing = await http.get(
                f"{base}/v1/convai/conversation/get-signed-url", headers={"xi-api-key": API_KEY}
            )
            unknown = await http.get(
                f"{base}/v1/convai/conversation/get-signed-url",
                params={"agent_id": "agent_nope"},
                headers={"xi-api-key": API_KEY},
            )
        assert bad.status_code == 401
        assert bad.json() == {"detail": {"status": "invalid_api_key", "message": "Invalid API key"}}
        assert missing.status_code == 422
        assert missing.json()["detail"][0]["loc"] == ["query", "agent_id"]
        assert unknown.status_code == 404

    async def test_signature_is_single_use(
        self, emulator_url: tuple[ElevenLabsEmulator, str]
    ) -> None:
        """A signed URL works once; reusing it gets an error event and close 1008."""
        emulator, base = emulator_url
        async with httpx.AsyncClient() as http:
            signed = (
                await http.get(
                    f"{base}/v1/convai/conversation/get-signed-url",
                    params={"agent_id": AGENT_ID},
                    headers={"xi-api-key": API_KEY},
                )
            ).json()["signed_url"]
        async with connect(signed + "&source=python_sdk&version=2.78.0") as ws:
            first = orjson.loads(await ws.recv())
            assert first["type"] == "conversation_initiation_metadata"
        message, code = await first_message_and_close(signed)
        assert code == 1008
        assert message["type"] == "error"
        assert emulator.connection_attempts == 2

    async def test_signature_expires_after_15_minutes(self) -> None:
        """With an injected clock, a URL used after 15 minutes is refused with 1008."""
        now = [1_700_000_000.0]
        emulator = make_emulator(clock=lambda: now[0])
        signature = emulator.issue_signature(AGENT_ID)
        async with serve(mounted(emulator)) as base:
            now[0] += SIGNED_URL_TTL_S + 1
            url = (
                base.replace("http", "ws")
                + MOUNT
                + (
                    f"/v1/convai/conversation?agent_id={AGENT_ID}&conversation_signature={signature}"
                )
            )
            message, code = await first_message_and_close(url)
        assert code == 1008
        assert message["error_event"]["message"] == "conversation signature expired"  # type: ignore[index]

    @pytest.mark.parametrize(
        "query",
        [
            "agent_id=agent_unknown",
            f"agent_id={AGENT_ID}&conversation_signature=forged.123.abc",
        ],
    )
    async def test_unknown_agent_or_bad_signature_closes_1008(
        self, emulator_url: tuple[ElevenLabsEmulator, str], query: str
    ) -> None:
        """An unknown agent or a forged signature gets an error event, then close 1008."""
        _, base = emulator_url
        message, code = await first_message_and_close(
            base.replace("http", "ws") + "/v1/convai/conversation?" + query
        )
        assert code == 1008 and message["type"] == "error"

    async def test_private_agent_requires_signature(self) -> None:
        """With require_signed_url, a bare agent_id is refused."""
        emulator = make_emulator(require_signed_url=True)
        async with serve(mounted(emulator)) as base:
            message, code = await first_message_and_close(
                base.replace("http", "ws") + MOUNT + f"/v1/convai/conversation?agent_id={AGENT_ID}"
            )
        assert code == 1008
        assert message["error_event"]["error_type"] == "authentication_failed"  # type: ignore[index]


class TestWidget:
    async def test_widget_config_has_the_required_keys(
        self, emulator_url: tuple[ElevenLabsEmulator, str]
    ) -> None:
        """The widget endpoint returns a widget_config with every non-optional key."""
        _, base = emulator_url
        async with httpx.AsyncClient() as http:
            response = await http.get(f"{base}/v1/convai/agents/{AGENT_ID}/widget")
            missing = await http.get(f"{base}/v1/convai/agents/agent_nope/widget")
        assert response.status_code == 200 and missing.status_code == 404
        config = response.json()["widget_config"]
        assert {
            "variant",
            "placement",
            "avatar",
            "feedback_mode",
            "language",
            "mic_muting_enabled",
            "transcript_enabled",
            "text_input_enabled",
            "default_expanded",
            "always_expanded",
            "dismissible",
            "text_contents",
            "language_presets",
            "disable_banner",
            "text_only",
            "supports_text_only",
        } <= set(config)
