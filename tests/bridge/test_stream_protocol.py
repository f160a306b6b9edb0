"""The media stream's uvicorn protocol (uvicorn's sans-I/O one on a lighter inbox and flag)."""

from __future__ import annotations

import asyncio

import websockets
from starlette.types import Receive, Scope, Send

from callbridge.web.media_socket import AsgiMediaSocket
from callbridge.web.stream_protocol import SEND_MANY, Inbox, MediaStreamProtocol, WriteFlag
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


async def _batches(scope: Scope, receive: Receive, send: Send) -> None:
    """Accept; say whether SEND_MANY is offered; then, for each text "n", send n numbered
    messages through a socket that uses it when offered; after the client's last, close."""
    if scope["type"] != "websocket":
        return
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    offered = SEND_MANY in scope["extensions"]
    socket = AsgiMediaSocket(receive, send, send_many=offered)
    await socket.send("offered" if offered else "not offered")
    sent = 0
    while isinstance(message := await socket.recv(), str):
        if message == "bye":
            break
        count = int(message)
        await socket.send_many([f"message {sent + i}" for i in range(count)])
        sent += count
    await socket.close(1000)
    await socket.send_many(["after the close"])  # nothing, and no error


async def _run_batches(ws_protocol: object) -> tuple[str, list[str], int | None]:
    async with serve(_batches, ws=ws_protocol) as base:
        url = base.replace("http://", "ws://") + "/media"
        async with websockets.connect(url, compression=None) as ws:
            offered = str(await ws.recv())
            for count in (11, 1, 0, 30):
                await ws.send(str(count))
            received = [str(await ws.recv()) for _ in range(42)]
            await ws.send("bye")
            await ws.wait_closed()
            return offered, received, ws.close_code


async def test_send_many_writes_each_message_as_its_own_frame_in_order() -> None:
    """On MediaStreamProtocol the extension is offered, and a batch arrives as that many
    WebSocket messages, in order, batches in order; sending after the close is a no-op.
    Without the protocol (uvicorn's own) the socket sends one by one: the same messages."""
    ours = await _run_batches(MediaStreamProtocol)
    theirs = await _run_batches("websockets-sansio")
    expected = [f"message {i}" for i in range(42)]
    assert ours == ("offered", expected, 1000)
    assert theirs == ("not offered", expected, 1000)


async def test_send_many_is_one_write_to_the_transport() -> None:
    """The eleven messages of a batch reach the transport in one write (one system call
    where uvicorn's websocket.send makes eleven)."""
    writes: list[bytes] = []

    class Counting(MediaStreamProtocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            write = transport.write

            def counted(data: bytes | bytearray | memoryview) -> None:
                writes.append(bytes(data))
                write(data)

            transport.write = counted  # type: ignore[method-assign]
            super().connection_made(transport)

    async with serve(_batches, ws=Counting) as base:
        url = base.replace("http://", "ws://") + "/media"
        async with websockets.connect(url, compression=None) as ws:
            assert await ws.recv() == "offered"
            before = len(writes)
            await ws.send("11")
            got = [await ws.recv() for _ in range(11)]
            assert len(writes) == before + 1
            assert got == [f"message {i}" for i in range(11)]
            await ws.send("bye")


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
