"""Real outages for the reconciler's tests: a TCP relay in front of PostgreSQL that can
be cut and restored. (A Redis of the test's own that can be killed and started again is
tests/support/redis.py.)"""

from __future__ import annotations

import asyncio
import contextlib
from functools import partial

from sqlalchemy.engine import make_url

from tests.support.server import free_port


class Relay:
    """Forwards a loopback port to a server; :meth:`cut` is the server vanishing (the port
    refuses, open connections drop), :meth:`restore` its return on the same port."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        #: Bumped by each cut: a connection accepted before it belongs to the old server.
        self._generation = 0

    @classmethod
    def for_database(cls, url: str) -> tuple[Relay, str]:
        """A relay to the database at ``url``, and the URL that goes through it."""
        parsed = make_url(url)
        relay = cls(parsed.host or "127.0.0.1", parsed.port or 5432)
        through = parsed.set(host="127.0.0.1", port=relay.port)
        return relay, through.render_as_string(hide_password=False)

    async def restore(self) -> None:
        """Accept connections again."""
        self._server = await asyncio.start_server(
            partial(self._handle, self._generation), "127.0.0.1", self.port
        )

    async def cut(self) -> None:
        """Refuse new connections and drop every open one."""
        self._generation += 1
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _handle(
        self, generation: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        # A connection accepted before a cut but still being set up when it came (its
        # handler not yet run, or still connecting upstream) is not in ``_writers`` for
        # the cut to drop: it must drop here, or it outlives the outage.
        if generation != self._generation:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        if generation != self._generation:
            writer.transport.abort()
            up_writer.transport.abort()
            return
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            self._writers -= {writer, up_writer}
