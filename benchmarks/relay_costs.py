"""What each step of a Python relay's media path costs per frame, in microseconds.

The baseline relay (``baseline_relay.py``) handles every 20 ms callee frame in four
steps: websockets parses (and unmasks) the incoming frame, ``json.loads`` reads the
Twilio ``media`` message, ``json.dumps`` writes ``user_audio_chunk``, and websockets
masks and frames it for the agent. This times each step in isolation, on the
sans-I/O protocol objects (no sockets, no event loop), beside leaner ways of doing
it (orjson, slicing the payload out without parsing, websockets with an unmasked or
preassembled frame), and scales them to CPU seconds per call-minute (50 frames a
second toward the agent) so they can be set against ``callbridge bench``'s
``server CPU s / call-minute``. Whatever these steps do not account for is the event
loop, the transports' system calls and the relay's own coroutine switching.

Usage: ``.venv/bin/python benchmarks/relay_costs.py [--number 20000]``
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import timeit
from collections.abc import Callable

import orjson
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

FRAMES_PER_MINUTE = 50 * 60
PAYLOAD = base64.b64encode(bytes(range(160))).decode()
MESSAGE = json.dumps(
    {
        "event": "media",
        "sequenceNumber": "1234",
        "media": {"track": "inbound", "chunk": "1233", "timestamp": "24660", "payload": PAYLOAD},
        "streamSid": "MZ" + "0" * 32,
    },
    separators=(",", ":"),
)


def _open_server() -> ServerProtocol:
    """A server protocol past its handshake (frames can be fed to it)."""
    server = ServerProtocol()
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        "GET /media-stream HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    server.receive_data(request.encode())
    handshake = server.events_received()[0]
    server.send_response(server.accept(handshake))  # type: ignore[arg-type]
    server.data_to_send()
    return server


def _open_client() -> ClientProtocol:
    """A client protocol in the OPEN state (its frames can be sent)."""
    from websockets.protocol import OPEN

    client = ClientProtocol(parse_uri("ws://127.0.0.1/agent"))
    client.state = OPEN
    return client


def steps() -> dict[str, Callable[[], object]]:
    """Each step of the to-agent path, and the leaner alternatives."""
    server = _open_server()
    client = _open_client()
    masked = Frame(Opcode.TEXT, MESSAGE.encode()).serialize(mask=True, extensions=[])
    outgoing = json.dumps({"user_audio_chunk": PAYLOAD})
    data = json.loads(MESSAGE)
    prefix, suffix = b'{"user_audio_chunk":"', b'"}'

    def ws_receive() -> object:
        server.receive_data(masked)
        return server.events_received()

    def ws_send_masked() -> object:
        client.send_text(outgoing.encode())
        return client.data_to_send()

    def start_of(message: str) -> str:
        at = message.index('"payload":"') + 11
        return message[at : message.index('"', at)]

    return {
        "websockets: parse + unmask one incoming frame": ws_receive,
        "json.loads(media message)": lambda: json.loads(MESSAGE),
        "json.dumps(user_audio_chunk)": lambda: json.dumps(
            {"user_audio_chunk": data["media"]["payload"]}
        ),
        "websockets: mask + frame one outgoing message": ws_send_masked,
        "  of which secrets.token_bytes(4) (the mask key)": lambda: secrets.token_bytes(4),
        "alt: orjson.loads(media message)": lambda: orjson.loads(MESSAGE),
        "alt: orjson.dumps(user_audio_chunk)": lambda: orjson.dumps(
            {"user_audio_chunk": data["media"]["payload"]}
        ),
        "alt: slice the payload out, no parsing": lambda: start_of(MESSAGE),
        "alt: bytes template for the outgoing message": lambda: prefix + PAYLOAD.encode() + suffix,
        "alt: os.urandom(4) for the mask key": lambda: os.urandom(4),
    }


def main() -> None:
    """Time every step and print µs per frame and CPU s per call-minute."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=20000, help="frames per timing")
    args = parser.parse_args()
    print(f"{'step':<52} {'µs/frame':>9} {'CPU s/call-min':>15}")
    for name, step in steps().items():
        best = min(timeit.repeat(step, number=args.number, repeat=5)) / args.number
        print(f"{name:<52} {best * 1e6:>9.2f} {best * FRAMES_PER_MINUTE:>15.4f}")


if __name__ == "__main__":
    main()
