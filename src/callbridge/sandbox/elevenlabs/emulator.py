"""A local, protocol-faithful stand-in for the ElevenLabs Agents API.

Serves, under whatever path it is mounted at (``/sandbox/elevenlabs`` in the app):

- ``WS  /v1/convai/conversation?agent_id=…[&conversation_signature=…]`` — the
  conversation socket (subprotocol ``convai`` accepted; ``source``/``version``
  and other unknown parameters ignored), played by the demo agent in
  :mod:`.agent`
  (https://elevenlabs.io/docs/agents-platform/api-reference/agents-platform/websocket).
- ``GET /v1/convai/conversation/get-signed-url`` and the deprecated
  ``/get_signed_url`` (header ``xi-api-key``) — single-use signed URLs valid
  for 15 minutes (https://elevenlabs.io/docs/agents-platform/customization/authentication).
- ``GET /v1/convai/agents/{agent_id}/widget`` — a minimal ``widget_config``
  (protocols.md §5.2).
- When a conversation ends: the ``post_call_transcription`` webhook, signed with
  ``ElevenLabs-Signature`` (https://elevenlabs.io/docs/agents-platform/workflows/post-call-webhooks).
- The Conversations API (``GET /v1/convai/conversations[/{conversation_id}]``, ``DELETE``
  one), in :mod:`.conversations_api`.
- The Agents and Tools APIs (``GET|PATCH /v1/convai/agents/{agent_id}``,
  ``/v1/convai/tools[/{tool_id}]``), in :mod:`.agents_api`.

A conversation sends only the events the agent's ``client_events`` lists, and the demo
agent calls only the client tools the agent has (the sandbox's default agent has all
that callbridge needs; a test may start from :func:`.agents_api.fresh_agent`).

Close codes follow protocols.md §4.7: 1008 for a bad agent id or signature (after
an ``error`` message; the ``error_type`` names used there are [U]), 1002 after
``input_timeout`` seconds without user input, 1000 at ``max_duration_seconds``
or when the ``end_call`` tool ran.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import quote

import httpx
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from callbridge.adapters.elevenlabs.webhook_signature import HEADER, sign
from callbridge.media.transcode import parse_format
from callbridge.sandbox.elevenlabs.agent import ConversationRecord, DemoAgent, TurnListener
from callbridge.sandbox.elevenlabs.agents_api import CLIENT_EVENTS, AgentsApi, configured_agent
from callbridge.sandbox.elevenlabs.conversations_api import ConversationsApi
from callbridge.sandbox.elevenlabs.voice import Voice
from callbridge.sandbox.elevenlabs.webhook import post_call_transcription

__all__ = ["SIGNED_URL_TTL_S", "ElevenLabsEmulator"]

#: How long a signed URL may be used (the conversation may then run longer).
SIGNED_URL_TTL_S = 15 * 60

_SendErrors = (WebSocketDisconnect, RuntimeError, OSError)


class _Session:
    """One live conversation socket: serialised sends, background tasks, one close."""

    def __init__(self, websocket: WebSocket, record: ConversationRecord) -> None:
        self.websocket = websocket
        self.record = record
        self.done = asyncio.Event()
        self.last_input = time.monotonic()
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._group: asyncio.TaskGroup | None = None

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        assert self._group is not None
        task = self._group.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def send(self, message: dict[str, Any]) -> None:
        if self.done.is_set():
            return
        async with self._lock:
            try:
                await self.websocket.send_text(orjson.dumps(message).decode())
            except _SendErrors:
                await self.finish(None, "client gone", by="client")

    async def finish(self, code: int | None, reason: str, *, by: str = "server") -> None:
        """Close once; ``code=None`` means the peer already closed."""
        if self.done.is_set():
            return
        self.done.set()
        self.record.closed_by = by
        if code is not None:
            self.record.close_code = code
            self.record.close_reason = reason
            try:
                await self.websocket.close(code, reason)
            except _SendErrors:
                pass

    async def run(self, body: Callable[[_Session], list[Coroutine[Any, Any, None]]]) -> None:
        async with asyncio.TaskGroup() as group:
            self._group = group
            for coro in body(self):
                self.spawn(coro)
            await self.done.wait()
            for task in list(self._tasks):
                task.cancel()


class ElevenLabsEmulator:
    """The ElevenLabs Agents API for one agent, as an ASGI app (:attr:`asgi_app`).

    Args:
        agent_id: the only agent id accepted.
        api_key: required ``xi-api-key`` for REST calls; ``None`` accepts any.
        output_format: the agent's TTS format (``ulaw_8000`` for Twilio pass-through).
        input_format: the agent's ASR format.
        webhook_url: where to POST ``post_call_transcription``; ``None`` sends nothing.
        webhook_secret: HMAC secret for ``ElevenLabs-Signature``; ``None`` sends unsigned.
        ping_interval: seconds between pings.
        http: client for the webhook (one is created per delivery if ``None``).
        require_signed_url: refuse sockets without a valid ``conversation_signature``.
        input_timeout: seconds without user input before closing with 1002.
        max_duration_seconds: conversation length limit (close 1000).
        clock: wall-clock unix seconds (signed-URL expiry, webhook timestamps).
        voice: the demo agent's voice (espeak-ng if installed, else tones).
        stream_speed: how many times faster than real time audio is streamed.
        init_wait: how long to wait for ``conversation_initiation_client_data``
            before sending the metadata and the greeting without it.
        agent: the agent's configuration as the Agents API serves it (its audio formats
            then replace ``output_format``/``input_format``); ``None``: the agent as
            ``callbridge setup`` leaves it, with the three client tools linked.
        on_turn: told of every conversation's turns as they are sent (the sandbox
            phone's captions); ``None``: nobody.

    Attributes:
        conversations: every conversation so far, by ``conversation_id``.
        refuse_connections: refuse the WebSocket handshake (HTTP 403).
        connect_delay: seconds to wait before accepting a socket.
        chunk_ms: audio per ``audio`` message of new conversations (200; e.g. 65
            gives μ-law chunks of 520 bytes, not a whole number of 20 ms frames).
        turn_timeout: seconds of user silence after the agent's words end (by its own
            clock) before it asks "Are you still there?"; ``user_activity`` and speech
            reset it (ElevenLabs' default is 7; ``None``, the default here: never).
        connection_attempts: WebSocket connections attempted so far.
        webhook_deliveries: ``(conversation_id, status or None)`` per webhook sent.
        suppress_webhooks: drop every post-call webhook (a lost delivery, for tests).
        suppressed_webhooks: conversation ids whose post-call webhook is dropped.
        dropped_webhooks: the conversations whose webhook was dropped, in order.
        conversations_api: the Conversations REST routes (``status_overrides``, ``requests``).
        agents_api: the Agents/Tools REST routes (``agent``, ``tools``, ``patches``).
    """

    def __init__(
        self,
        *,
        agent_id: str,
        api_key: str | None = None,
        output_format: str = "ulaw_8000",
        input_format: str = "ulaw_8000",
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
        ping_interval: float = 2.0,
        http: httpx.AsyncClient | None = None,
        require_signed_url: bool = False,
        input_timeout: float = 60.0,
        max_duration_seconds: float = 600.0,
        clock: Callable[[], float] = time.time,
        voice: Voice | None = None,
        stream_speed: float = 4.0,
        init_wait: float = 1.0,
        agent: dict[str, Any] | None = None,
        on_turn: TurnListener | None = None,
    ) -> None:
        self._on_turn = on_turn
        self.agent_id = agent_id
        self.api_key = api_key
        self.output_format = parse_format(output_format)
        self.input_format = parse_format(input_format)
        self.webhook_url = webhook_url
        self.webhook_secret = webhook_secret
        self.ping_interval = ping_interval
        self.require_signed_url = require_signed_url
        self.input_timeout = input_timeout
        self.max_duration_seconds = max_duration_seconds
        self.stream_speed = stream_speed
        self.init_wait = init_wait
        self.voice = voice or Voice()
        self.conversations: dict[str, ConversationRecord] = {}
        self.refuse_connections = False
        self.connect_delay = 0.0
        self.chunk_ms = 200
        self.turn_timeout: float | None = None
        self.connection_attempts = 0
        self.webhook_deliveries: list[tuple[str, int | None]] = []
        self.suppress_webhooks = False
        self.suppressed_webhooks: set[str] = set()
        self.dropped_webhooks: list[str] = []
        self._http = http
        self._clock = clock
        self._secret = secrets.token_bytes(32)
        self._signatures: dict[str, float] = {}  # unused nonce -> expiry
        self._live: dict[str, _Session] = {}
        self.conversations_api = ConversationsApi(
            self.conversations, authorize=self._api_key_error, clock=clock
        )
        if agent is not None:
            config = agent.get("conversation_config") or {}
            self.input_format = parse_format(
                (config.get("asr") or {}).get("user_input_audio_format") or "pcm_16000"
            )
            self.output_format = parse_format(
                (config.get("tts") or {}).get("agent_output_audio_format") or "pcm_16000"
            )
        self.agents_api = AgentsApi(
            {**(agent or configured_agent(agent_id)), "agent_id": agent_id},
            authorize=self._api_key_error,
            clock=clock,
            formats=lambda: (str(self.input_format), str(self.output_format)),
            set_formats=self._set_formats,
            link_bridge_tools=agent is None,
        )
        self.asgi_app = Starlette(
            routes=[
                WebSocketRoute("/v1/convai/conversation", self._conversation),
                Route("/v1/convai/conversation/get-signed-url", self._signed_url),
                Route("/v1/convai/conversation/get_signed_url", self._signed_url),
                Route("/v1/convai/agents/{agent_id}/widget", self._widget),
                *self.conversations_api.routes,
                *self.agents_api.routes,
            ]
        )

    def _set_formats(self, input_format: str, output_format: str) -> None:
        """The agent's formats changed (Agents API PATCH): new conversations use them."""
        self.input_format = parse_format(input_format)
        self.output_format = parse_format(output_format)

    # --- test controls ----------------------------------------------------------------

    async def drop_all(self, code: int = 1011) -> None:
        """Close every live conversation with ``code`` (1011: internal error)."""
        for session in list(self._live.values()):
            await session.finish(code, "dropped by the emulator")

    @property
    def live(self) -> list[str]:
        """Ids of the conversations whose socket is open."""
        return list(self._live)

    # --- signed URLs ------------------------------------------------------------------

    def issue_signature(self, agent_id: str) -> str:
        """Create a single-use ``conversation_signature`` for ``agent_id``."""
        nonce = secrets.token_urlsafe(12)
        expires = int(self._clock()) + SIGNED_URL_TTL_S
        mac = self._mac(f"{agent_id}.{nonce}.{expires}")
        self._signatures[nonce] = expires
        return f"{nonce}.{expires}.{mac}"

    def _mac(self, text: str) -> str:
        return hmac.new(self._secret, text.encode(), hashlib.sha256).hexdigest()[:32]

    def _consume_signature(self, signature: str, agent_id: str) -> str | None:
        """Return why ``signature`` is refused, or ``None`` (and use it up) if valid."""
        parts = signature.split(".")
        if len(parts) != 3 or not parts[1].isdigit():
            return "malformed conversation signature"
        nonce, expires, mac = parts
        if not hmac.compare_digest(self._mac(f"{agent_id}.{nonce}.{expires}"), mac):
            return "invalid conversation signature"
        if self._signatures.pop(nonce, None) is None:
            return "conversation signature already used"
        if self._clock() > int(expires):
            return "conversation signature expired"
        return None

    def _api_key_error(self, request: Request) -> JSONResponse | None:
        if self.api_key is None or request.headers.get("xi-api-key") == self.api_key:
            return None
        return JSONResponse(
            {"detail": {"status": "invalid_api_key", "message": "Invalid API key"}},
            status_code=401,
        )

    async def _signed_url(self, request: Request) -> JSONResponse:
        refused = self._api_key_error(request)
        if refused is not None:
            return refused
        agent_id = request.query_params.get("agent_id")
        if not agent_id:
            return JSONResponse(
                {
                    "detail": [
                        {"loc": ["query", "agent_id"], "msg": "Field required", "type": "missing"}
                    ]
                },
                status_code=422,
            )
        if agent_id != self.agent_id:
            return _not_found(agent_id)
        scheme = "wss" if request.url.scheme in ("https", "wss") else "ws"
        host = request.headers.get("host") or f"{request.url.hostname}:{request.url.port}"
        root = request.scope.get("root_path", "")
        url = (
            f"{scheme}://{host}{root}/v1/convai/conversation?agent_id={quote(agent_id, safe='')}"
            f"&conversation_signature={self.issue_signature(agent_id)}"
        )
        return JSONResponse({"signed_url": url})

    async def _widget(self, request: Request) -> JSONResponse:
        agent_id = request.path_params["agent_id"]
        if agent_id != self.agent_id:
            return _not_found(agent_id)
        return JSONResponse(
            {"agent_id": agent_id, "widget_config": _widget_config()},
            headers={"Access-Control-Allow-Origin": "*"},
        )

    # --- the conversation socket ------------------------------------------------------

    async def _conversation(self, websocket: WebSocket) -> None:
        self.connection_attempts += 1
        if self.refuse_connections:
            await websocket.close(1008)  # before accept: the handshake gets HTTP 403
            return
        if self.connect_delay:
            await asyncio.sleep(self.connect_delay)
        wanted = websocket.scope.get("subprotocols") or []
        await websocket.accept(subprotocol="convai" if "convai" in wanted else None)
        params = websocket.query_params
        agent_id = params.get("agent_id", "")
        signature = params.get("conversation_signature") or params.get("token")
        problem: tuple[str, str] | None = None
        if agent_id != self.agent_id:
            problem = ("invalid_agent_id", f"Agent {agent_id[:64]!r} does not exist")
        elif signature:
            why = self._consume_signature(signature, agent_id)
            if why is not None:
                problem = ("authentication_failed", why)
        elif self.require_signed_url:
            problem = ("authentication_failed", "This agent requires a signed URL")
        if problem is not None:
            await _refuse(websocket, *problem)
            return
        await self._converse(websocket, agent_id, "signed_url" if signature else "public")

    async def _converse(self, websocket: WebSocket, agent_id: str, auth: str) -> None:
        conversation_id = "conv_" + secrets.token_hex(13)
        record = ConversationRecord(conversation_id, agent_id, self._clock(), auth)
        self.conversations[conversation_id] = record
        session = _Session(websocket, record)
        listed = self.agents_api.client_events()

        async def send(message: dict[str, Any]) -> None:
            # The server sends a client only the events the agent lists (``error`` is
            # not a client event and always goes).
            if message.get("type") not in CLIENT_EVENTS or message["type"] in listed:
                await session.send(message)

        agent = DemoAgent(
            record,
            send=send,
            spawn=session.spawn,
            end=session.finish,
            output_format=self.output_format,
            input_format=self.input_format,
            voice=self.voice,
            chunk_ms=self.chunk_ms,
            stream_speed=self.stream_speed,
            turn_timeout=self.turn_timeout,
            tools=self.agents_api.client_tools(),
            on_turn=self._on_turn,
        )
        self._live[conversation_id] = session
        try:
            await session.run(
                lambda s: [
                    self._receive(s, agent),
                    self._script(s, agent),
                    self._watchdog(s),
                ]
            )
        finally:
            del self._live[conversation_id]
            record.ended_at = self._clock()
        if self.webhook_url:
            if self.suppress_webhooks or conversation_id in self.suppressed_webhooks:
                self.dropped_webhooks.append(conversation_id)
            else:
                await self._deliver_webhook(record)

    async def _receive(self, session: _Session, agent: DemoAgent) -> None:
        while True:
            try:
                message = await session.websocket.receive()
            except _SendErrors:
                await session.finish(None, "client gone", by="client")
                return
            if message["type"] == "websocket.disconnect":
                session.record.close_code = int(message.get("code", 1005))
                session.record.close_reason = str(message.get("reason") or "")
                await session.finish(None, "client closed", by="client")
                return
            text = message.get("text")
            try:
                data = orjson.loads(text if text is not None else message.get("bytes") or b"")
            except orjson.JSONDecodeError:
                data = None
            if not isinstance(data, dict):
                await session.send(_error_event(1008, "invalid_message", "Invalid message"))
                await session.finish(1008, "Invalid message")
                return
            if data.get("type") != "pong":
                session.last_input = time.monotonic()
            await agent.on_message(data)

    async def _script(self, session: _Session, agent: DemoAgent) -> None:
        try:
            await asyncio.wait_for(agent.init_received.wait(), self.init_wait)
        except TimeoutError:
            pass
        await session.send(agent.metadata())
        session.spawn(agent.pinger(self.ping_interval))
        if self.turn_timeout is not None:
            session.spawn(agent.turn_timer())
        agent.say(agent.greeting())

    async def _watchdog(self, session: _Session) -> None:
        started = time.monotonic()
        while True:
            now = time.monotonic()
            if now - started >= self.max_duration_seconds:
                await session.finish(1000, "max_duration_exceeded")
                return
            if now - session.last_input >= self.input_timeout:
                await session.send(
                    _error_event(
                        1002,
                        "transport_receive_timeout",
                        f"No user input for {self.input_timeout:g} seconds",
                    )
                )
                await session.finish(1002, "transport_receive_timeout")
                return
            wait = min(started + self.max_duration_seconds, session.last_input + self.input_timeout)
            await asyncio.sleep(max(0.01, wait - now))

    # --- post-call webhook ------------------------------------------------------------

    async def send_webhook(self, conversation_id: str) -> int | None:
        """(Re)send one conversation's post-call webhook now; the HTTP status (None: no answer)."""
        assert self.webhook_url is not None, "no webhook_url configured"
        record = self.conversations[conversation_id]
        await self._deliver_webhook(record)
        return record.webhook_status

    async def _deliver_webhook(self, record: ConversationRecord) -> None:
        assert self.webhook_url is not None
        now = int(self._clock())
        body = orjson.dumps(post_call_transcription(record, now=now))
        headers = {"Content-Type": "application/json"}
        if self.webhook_secret:
            headers[HEADER] = sign(body, self.webhook_secret, now)
        status: int | None
        try:
            if self._http is not None:
                response = await self._http.post(self.webhook_url, content=body, headers=headers)
            else:
                async with httpx.AsyncClient(timeout=10) as client:
                    response = await client.post(self.webhook_url, content=body, headers=headers)
            status = response.status_code
        except httpx.HTTPError:
            status = None
        record.webhook_status = status
        self.webhook_deliveries.append((record.conversation_id, status))


async def _refuse(websocket: WebSocket, error_type: str, message: str) -> None:
    try:
        await websocket.send_text(orjson.dumps(_error_event(1008, error_type, message)).decode())
        await websocket.close(1008, message[:120])
    except _SendErrors:
        pass


def _error_event(code: int, error_type: str, message: str) -> dict[str, Any]:
    return {
        "type": "error",
        "error_event": {
            "code": code,
            "message": message,
            "error_type": error_type,
            "reason": message,
        },
    }


def _not_found(agent_id: str) -> JSONResponse:
    return JSONResponse(
        {
            "detail": {
                "status": "agent_not_found",
                "message": f"Agent {agent_id[:64]!r} was not found",
            }
        },
        status_code=404,
    )


def _widget_config() -> dict[str, Any]:
    return {
        "variant": "compact",
        "placement": "bottom-right",
        "avatar": {"type": "orb", "color_1": "#2792dc", "color_2": "#9ce6e6"},
        "feedback_mode": "none",
        "language": "en",
        "mic_muting_enabled": False,
        "transcript_enabled": True,
        "text_input_enabled": True,
        "default_expanded": False,
        "always_expanded": False,
        "dismissible": True,
        "text_contents": {},
        "language_presets": {},
        "disable_banner": False,
        "text_only": False,
        "supports_text_only": True,
        "first_message": "Hi! This is the callbridge demo agent.",
    }
