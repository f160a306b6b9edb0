"""The baseline relay's job with what a Python relay can shed: how close Python gets to Node.

Same command line and the same behaviour as ``baseline_relay.py`` (and
``node_relay/relay.mjs``); three things differ, each a per-frame cost the baseline
pays (``relay_costs.py`` times them one by one):

* the event loop is uvloop (libuv, as Node's) instead of asyncio's default loop;
* messages are read with orjson, and the callee's audio is sliced out of the
  ``media`` message instead of parsed (a ``media`` message is by far the most
  common, and Twilio writes ``payload`` as a plain base64 string);
* outgoing messages are assembled from byte templates, sent as text frames.

Measure it with ``callbridge bench --baseline-script benchmarks/lean_relay.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import orjson
import uvloop
import websockets
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve

_PAYLOAD = '"payload":"'
_TO_AGENT = (b'{"user_audio_chunk":"', b'"}')


async def relay(twilio: ServerConnection, agent_url: str) -> None:
    """Bridge one media stream to one agent conversation."""
    stream_sid = None
    params: dict[str, str] = {}
    async for message in twilio:
        data = orjson.loads(message)
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
            orjson.dumps(
                {"type": "conversation_initiation_client_data", "dynamic_variables": params}
            ),
            text=True,
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
    head, tail = _TO_AGENT
    try:
        async for message in twilio:
            assert isinstance(message, str)
            if message.startswith('{"event":"media"'):
                at = message.find(_PAYLOAD)
                if at >= 0:
                    at += len(_PAYLOAD)
                    payload = message[at : message.index('"', at)]
                    await agent.send(head + payload.encode() + tail, text=True)
                    continue
            data = orjson.loads(message)
            if data["event"] == "media":
                await agent.send(
                    orjson.dumps({"user_audio_chunk": data["media"]["payload"]}), text=True
                )
            elif data["event"] == "stop":
                return
    except websockets.ConnectionClosed:
        return


async def agent_to_twilio(agent: ClientConnection, twilio: ServerConnection, sid: str) -> None:
    """Agent audio, interruptions and pings until the agent hangs up."""
    media = (b'{"event":"media","streamSid":"' + sid.encode() + b'","media":{"payload":"', b'"}}')
    clear = orjson.dumps({"event": "clear", "streamSid": sid})
    try:
        async for message in agent:
            data = orjson.loads(message)
            kind = data.get("type")
            if kind == "audio":
                payload = data["audio_event"]["audio_base_64"].encode()
                await twilio.send(media[0] + payload + media[1], text=True)
            elif kind == "interruption":
                await twilio.send(clear, text=True)
            elif kind == "ping":
                event_id = data["ping_event"]["event_id"]
                await agent.send(orjson.dumps({"type": "pong", "event_id": event_id}), text=True)
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
    uvloop.run(main())
