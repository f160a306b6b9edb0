"""The media stream's uvicorn protocol (uvicorn's sans-I/O one on a lighter inbox and flag)."""

from __future__ import annotations

import asyncio

import websockets
from starlette.types import Receive, Scope, Send

from callbridge.web.stream_protocol import Inbox, MediaStreamProtocol, WriteFlag
from tests.support.server import serve


async def _echo(scope: Scope, receive: Receive, send: Send) -> None:
    """Accept, answer each text with its number and text, until the client leaves."""
    if scope["type"] != "websocket":
        return
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    headers = dict(scope["headers"])
    await send({"type": "websocket.send", "text": headers[b"x-twilio-signature"].decode()})
    count = 0
    while (message := await receive())["type"] == "websocket.receive":
        count += 1
        await send({"type": "websocket.send", "text": f"{count}:{message['text']}"})


async def test_a_stream_on_the_protocol_answers_every_message_in_order() -> None:
    """Messages sent in a burst through a real uvicorn on MediaStreamProtocol are all
    received by the app, in order, and its answers reach the client in order; the
    handshake's headers are in the app's scope (the protocol lets uvicorn's copy go)."""
    async with serve(_echo, ws=MediaStreamProtocol) as base:
        url = base.replace("http://", "ws://") + "/media"
        signed = {"X-Twilio-Signature": "c2lnbmVk"}
        async with websockets.connect(url, compression=None, additional_headers=signed) as ws:
            assert await ws.recv() == "c2lnbmVk"
            for i in range(200):
                await ws.send(f"frame {i}")
            answers = [await ws.recv() for _ in range(200)]
    assert answers == [f"{i + 1}:frame {i}" for i in range(200)]


async def test_a_getter_cancelled_after_its_wake_up_passes_the_item_on() -> None:
    """As with asyncio.Queue: the first getter is woken for an item, then cancelled
    before it takes it; the next getter gets the item instead of waiting forever."""
    inbox: Inbox[str] = Inbox()
    first = asyncio.create_task(inbox.get())
    second = asyncio.create_task(inbox.get())
    await asyncio.sleep(0)  # both wait
    inbox.put_nowait("item")
    first.cancel()
    assert await asyncio.wait_for(second, 5) == "item"
    assert first.cancelled()
    assert inbox.empty()


async def test_the_write_flag_holds_writers_until_it_is_set_again() -> None:
    """wait() returns at once while set; after clear() every writer waits until set()."""
    flag = WriteFlag()
    assert await flag.wait()
    flag.clear()
    writers = [asyncio.create_task(flag.wait()) for _ in range(3)]
    await asyncio.sleep(0)
    assert not any(w.done() for w in writers)
    flag.set()
    assert await asyncio.wait_for(asyncio.gather(*writers), 5) == [True, True, True]
