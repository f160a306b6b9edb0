"""Twilio's set-up work in a process of its own, so it never delays a measured frame.

Every frame's send and receive time is taken by the media endpoints (the callees'
streams, the :class:`~callbridge.bench.callee.FrameClock` and the agent peer) in the
bench's own process. Twilio's side of a call's set-up (the REST peer the server
creates calls at, the session and outbound POSTs, the signed status callbacks and
TwiML fetches, :mod:`callbridge.bench.twilio_flow`) is busy work in bursts while
calls arrive; on the same event loop it delayed the frame clock and the receive
timestamps (frame lateness p99 20–55 ms in callbridge runs, 4–8 ms in the relays'
runs, which have no set-up), and that delay was charged to callbridge alone.

So the flow runs here, in a child process (same core; the kernel schedules the two
apart, and the child runs at a lower priority so a frame due in the media process
goes first), and the two speak newline-delimited JSON over a socket pair:

* bench → driver: ``init`` (account SID, auth token, REST port: never on the command
  line), ``run`` (target and :class:`FlowConfig`), ``call`` (index, number),
  ``ended`` (index, stream seconds), ``end_run``;
* driver → bench: ``ready`` (REST port), ``placed`` (index, the server's call id,
  POST and create times), ``stream`` (index, URL, ``<Parameter>``s, call SID and the
  handshake's signature header), ``done`` (index, error or null), ``run_ended``.

``time.monotonic_ns`` is the system-wide ``CLOCK_MONOTONIC`` on Linux, so the times
the driver takes (``setup_ms``) are on the bench's clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any

import httpx
import orjson

from callbridge.bench.callee import CalleeStream
from callbridge.bench.probe import CallProbe, Registry
from callbridge.bench.rest_peer import CreatedCall, RestPeer
from callbridge.bench.twilio_flow import FlowConfig, TwilioFlow
from callbridge.tasks import cancel_and_wait

__all__ = ["FlowDriver", "child_main"]

#: How much lower the driver's priority is (``nice``): the media process goes first.
DRIVER_NICE = 10
_START_TIMEOUT_S = 30.0
_LIMIT = 1 << 20


def _line(message: dict[str, Any]) -> bytes:
    return orjson.dumps(message) + b"\n"


class FlowDriver:
    """The bench's handle on the driver process: start it, run calls through it."""

    def __init__(self) -> None:
        self.port = 0
        self.pid: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._ready: asyncio.Future[int] | None = None
        self._run_ended: asyncio.Future[None] | None = None
        self._done: dict[int, asyncio.Future[str | None]] = {}
        self._streams: set[asyncio.Task[None]] = set()
        self._registry: Registry | None = None
        self._run_stream: Callable[[CalleeStream], Awaitable[None]] | None = None
        self._account_sid = ""

    @property
    def base_url(self) -> str:
        """What ``TWILIO_API_BASE_URL`` must be for a server to reach the REST peer."""
        return f"http://127.0.0.1:{self.port}"

    async def start(self, *, account_sid: str, auth_token: str, rest_port: int = 0) -> None:
        """Start the driver (it inherits this process's core) and its REST peer."""
        ours, theirs = socket.socketpair()
        try:
            # Our own interpreter and module; the fd is the socket pair's other end.
            self._proc = subprocess.Popen(  # noqa: S603, ASYNC220
                [
                    sys.executable,
                    "-c",
                    "from callbridge.bench.flow_process import child_main; child_main()",
                    str(theirs.fileno()),
                ],
                pass_fds=(theirs.fileno(),),
            )
        finally:
            theirs.close()
        self.pid = self._proc.pid
        reader, self._writer = await asyncio.open_connection(sock=ours, limit=_LIMIT)
        loop = asyncio.get_running_loop()
        self._ready = loop.create_future()
        self._reader_task = loop.create_task(self._read(reader))
        self._account_sid = account_sid
        await self._send(
            {"op": "init", "account_sid": account_sid, "auth_token": auth_token, "port": rest_port}
        )
        self.port = await asyncio.wait_for(self._ready, _START_TIMEOUT_S)

    async def begin(
        self,
        *,
        target: str,
        config: FlowConfig,
        registry: Registry,
        run_stream: Callable[[CalleeStream], Awaitable[None]],
    ) -> None:
        """Set up a run: calls go to ``target``; each stream is run by ``run_stream``."""
        self._registry = registry
        self._run_stream = run_stream
        await self._send({"op": "run", "target": target, "flow": asdict(config)})

    async def call(self, probe: CallProbe) -> None:
        """Place ``probe``'s call through the driver and wait for its end."""
        done: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._done[probe.index] = done
        try:
            await self._send({"op": "call", "index": probe.index, "number": probe.number})
            error = await done
        finally:
            self._done.pop(probe.index, None)
        if error is not None:
            probe.fail(error)
        probe.completed = probe.error is None

    async def end(self) -> None:
        """End the run: the driver closes its HTTP client; stray streams are stopped."""
        for task in list(self._streams):
            await cancel_and_wait(task)
        self._run_ended = asyncio.get_running_loop().create_future()
        await self._send({"op": "end_run"})
        await asyncio.wait_for(self._run_ended, 30)
        self._registry = self._run_stream = None

    async def aclose(self) -> None:
        """Stop the driver process."""
        if self._writer is not None:
            with contextlib.suppress(OSError):
                self._writer.close()
            self._writer = None
        await cancel_and_wait(self._reader_task)
        proc, self._proc = self._proc, None
        if proc is not None:
            try:
                await asyncio.wait_for(asyncio.to_thread(proc.wait), 10)
            except TimeoutError:
                proc.kill()
                await asyncio.to_thread(proc.wait)

    async def _send(self, message: dict[str, Any]) -> None:
        if self._writer is None:
            raise RuntimeError("the flow driver is not running")
        self._writer.write(_line(message))
        await self._writer.drain()

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while line := await reader.readline():
                self._dispatch(orjson.loads(line))
        finally:
            gone = RuntimeError("the flow driver process ended")
            for future in (self._ready, self._run_ended, *self._done.values()):
                if future is not None and not future.done():
                    future.set_exception(gone)

    def _dispatch(self, message: dict[str, Any]) -> None:
        event = message.get("ev")
        if event == "ready" and self._ready is not None and not self._ready.done():
            self._ready.set_result(int(message["port"]))
        elif event == "run_ended" and self._run_ended is not None and not self._run_ended.done():
            self._run_ended.set_result(None)
        elif event == "done":
            future = self._done.get(int(message["index"]))
            if future is not None and not future.done():
                future.set_result(message.get("error"))
        elif event == "placed" and self._registry is not None:
            probe = self._registry.by_index.get(int(message["index"]))
            if probe is not None:
                probe.post_ns = message["post_ns"]
                probe.created_ns = message["created_ns"]
                call_id = message.get("call_id")
                if isinstance(call_id, str):
                    self._registry.rename(probe, call_id)  # the agent finds the call by it
        elif event == "stream" and self._registry is not None:
            probe = self._registry.by_index.get(int(message["index"]))
            if probe is not None:
                task = asyncio.get_running_loop().create_task(self._stream(probe, message))
                self._streams.add(task)
                task.add_done_callback(self._streams.discard)

    async def _stream(self, probe: CallProbe, message: dict[str, Any]) -> None:
        assert self._run_stream is not None
        stream = CalleeStream(
            probe,
            url=message["url"],
            parameters=message["parameters"],
            call_sid=message["call_sid"],
            account_sid=self._account_sid,
            headers=message["headers"],
        )
        try:
            await self._run_stream(stream)
        finally:
            seconds = 0
            if probe.stream_start_ns is not None and probe.end_ns is not None:
                seconds = round((probe.end_ns - probe.stream_start_ns) / 1e9)
            with contextlib.suppress(OSError, RuntimeError):
                await self._send({"op": "ended", "index": probe.index, "seconds": seconds})


class _Child:
    """The driver process's side: the REST peer and one :class:`TwilioFlow` per run."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._rest: RestPeer | None = None
        self._flow: TwilioFlow | None = None
        self._http: httpx.AsyncClient | None = None
        self._ended: dict[int, asyncio.Future[int]] = {}
        self._calls: set[asyncio.Task[None]] = set()
        self._account_sid = ""
        self._auth_token = ""

    def _send(self, message: dict[str, Any]) -> None:
        self._writer.write(_line(message))

    def _created(self, created: CreatedCall) -> None:
        if self._flow is not None:
            self._flow.on_create(created)

    async def serve(self) -> None:
        try:
            while line := await self._reader.readline():
                await self._handle(orjson.loads(line))
        finally:
            await self._end_run()
            if self._rest is not None:
                await self._rest.aclose()

    async def _handle(self, message: dict[str, Any]) -> None:
        op = message.get("op")
        if op == "init":
            self._account_sid = message["account_sid"]
            self._auth_token = message["auth_token"]
            self._rest = RestPeer(
                account_sid=self._account_sid, auth_token=self._auth_token, on_create=self._created
            )
            await self._rest.start(int(message["port"]))
            self._send({"ev": "ready", "port": self._rest.port})
        elif op == "run":
            await self._end_run()
            config = FlowConfig(**message["flow"])
            limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
            self._http = httpx.AsyncClient(timeout=config.step_timeout_s, limits=limits)
            self._flow = TwilioFlow(
                target=message["target"],
                account_sid=self._account_sid,
                auth_token=self._auth_token,
                http=self._http,
                on_placed=self._placed,
                config=config,
                run_stream=self._run_stream,
            )
        elif op == "call" and self._flow is not None:
            probe = CallProbe(index=int(message["index"]), call_id="", number=message["number"])
            task = asyncio.get_running_loop().create_task(self._call(self._flow, probe))
            self._calls.add(task)
            task.add_done_callback(self._calls.discard)
        elif op == "ended":
            future = self._ended.get(int(message["index"]))
            if future is not None and not future.done():
                future.set_result(int(message["seconds"]))
        elif op == "end_run":
            await self._end_run()
            self._send({"ev": "run_ended"})
        await self._writer.drain()

    async def _end_run(self) -> None:
        for task in list(self._calls):
            await cancel_and_wait(task)
        self._flow = None
        http, self._http = self._http, None
        if http is not None:
            await http.aclose()

    async def _call(self, flow: TwilioFlow, probe: CallProbe) -> None:
        await flow.call(probe)
        self._send({"ev": "done", "index": probe.index, "error": probe.error})

    def _placed(self, probe: CallProbe, call_id: str | None) -> None:
        self._send(
            {
                "ev": "placed",
                "index": probe.index,
                "call_id": call_id,
                "post_ns": probe.post_ns,
                "created_ns": probe.created_ns,
            }
        )

    async def _run_stream(self, stream: CalleeStream) -> None:
        """Hand the stream to the bench's media endpoints; wait until it has ended there."""
        probe = stream.probe
        ended: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._ended[probe.index] = ended
        self._send(
            {
                "ev": "stream",
                "index": probe.index,
                "url": stream.url,
                "parameters": stream.parameters,
                "call_sid": stream.call_sid,
                "headers": stream.headers,
            }
        )
        try:
            seconds = await ended
        finally:
            self._ended.pop(probe.index, None)
        # Only what the ``completed`` callback's CallDuration needs.
        probe.stream_start_ns = 0
        probe.end_ns = seconds * 1_000_000_000


async def _child(fd: int) -> None:
    sock = socket.socket(fileno=fd)
    reader, writer = await asyncio.open_connection(sock=sock, limit=_LIMIT)
    await _Child(reader, writer).serve()


def child_main() -> None:
    """The driver process's entry point: ``argv[1]`` is its end of the socket pair."""
    with contextlib.suppress(OSError):
        os.nice(DRIVER_NICE)
    try:
        import uvloop

        factory: Any = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvicorn[standard] brings uvloop
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(_child(int(sys.argv[1])))
