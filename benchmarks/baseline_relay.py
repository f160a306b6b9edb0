"""The baseline: the simplest Twilio ⇄ ElevenLabs relay, as the public samples write it.

``json`` and ``websockets`` and nothing else: no database, no signatures, no
tokens, no marks, no transcoding, no pre-warming. It is what ElevenLabs' own
"Twilio custom server" sample does (protocols.md §6.1), minus its race (it
waits for ``start`` before it opens the agent, so the call id arrives with the
initiation data):

* the media stream's ``start`` → open the agent WebSocket, send
  ``conversation_initiation_client_data`` with ``customParameters`` as
  dynamic variables;
* Twilio ``media`` → ``{"user_audio_chunk": payload}``;
* agent ``audio`` → Twilio ``media``; ``interruption`` → ``clear``;
  ``ping`` → ``pong``;
* either side ends → close the other.

The benchmark's load generator connects its media streams straight to this
relay (there is no REST API or TwiML here) and serves the agent socket itself.

Usage: ``python benchmarks/baseline_relay.py --port 8200 --agent-url ws://127.0.0.1:8102/…``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal

import websockets
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve


async def relay(twilio: ServerConnection, agent_url: str) -> None:
    """Bridge one media stream to one agent conversation."""
    stream_sid = None
    params: dict[str, str] = {}
    async for message in twilio:
        data = json.loads(message)
        if data["event"] == "start":
            stream_sid = data["start"]["streamSid"]
            params = data["start"].get("customParameters", {})
            break
        if data["event"] == "stop":
            return
    if stream_sid is None:
        return
    async with connect(agent_url, compression=None, ping_interval=None) as agent:
        await agent.send(
            json.dumps({"type": "conversation_initiation_client_data", "dynamic_variables": params})
        )
        to_agent = asyncio.create_task(twilio_to_agent(twilio, agent))
        to_twilio = asyncio.create_task(agent_to_twilio(agent, twilio, stream_sid))
        done, pending = await asyncio.wait({to_agent, to_twilio}, return_when="FIRST_COMPLETED")
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    await twilio.close()


async def twilio_to_agent(twilio: ServerConnection, agent: ClientConnection) -> None:
    """Caller audio to the agent until the callee hangs up."""
    try:
        async for message in twilio:
            data = json.loads(message)
            if data["event"] == "media":
                await agent.send(json.dumps({"user_audio_chunk": data["media"]["payload"]}))
            elif data["event"] == "stop":
                return
    except websockets.ConnectionClosed:
        return


async def agent_to_twilio(agent: ClientConnection, twilio: ServerConnection, sid: str) -> None:
    """Agent audio, interruptions and pings until the agent hangs up."""
    try:
        async for message in agent:
            data = json.loads(message)
            kind = data.get("type")
            if kind == "audio":
                payload = data["audio_event"]["audio_base_64"]
                await twilio.send(
                    json.dumps({"event": "media", "streamSid": sid, "media": {"payload": payload}})
                )
            elif kind == "interruption":
                await twilio.send(json.dumps({"event": "clear", "streamSid": sid}))
            elif kind == "ping":
                event_id = data["ping_event"]["event_id"]
                await agent.send(json.dumps({"type": "pong", "event_id": event_id}))
    except websockets.ConnectionClosed:
        return


async def main() -> None:
    """Serve until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8200)
    parser.add_argument("--agent-url", required=True, help="the agent's conversation ws:// URL")
    args = parser.parse_args()
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.cancel)

    async def handler(ws: ServerConnection) -> None:
        await relay(ws, args.agent_url)

    async with serve(handler, args.host, args.port, compression=None, ping_interval=None):
        try:
            await stop
        except asyncio.CancelledError:
            pass


if __name__ == "__main__":
    asyncio.run(main())
