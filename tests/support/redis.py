"""A ``redis-server`` of the tests' own: the session's shared one, or a test's private one
that the test may kill and start again on the same port (an outage)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from tests.support.need import missing
from tests.support.server import free_port

_INSTALL = "apt-get install -y --no-install-recommends redis-server"


def redis_server_binary(purpose: str) -> str:
    """The ``redis-server`` program; without it the test is skipped, or fails in CI
    (``CI`` set), where every test must run."""
    binary = shutil.which("redis-server")
    if binary is None:
        missing(f"{purpose} need redis-server ({_INSTALL})")
    return binary


def empty_redis(url: str) -> None:
    """Delete every key in the database of ``url`` (``FLUSHDB``)."""
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()


class RedisServer:
    """``redis-server`` on a free loopback port, with no persistence.

    :meth:`stop` kills it, as a crash does (its data is gone), and :meth:`start` starts
    it again, empty, on the same port.
    """

    def __init__(self, folder: Path | None = None, *, purpose: str = "These tests") -> None:
        self._binary = redis_server_binary(purpose)
        self._folder = folder or Path(tempfile.gettempdir())
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> None:
        """Start the server and wait until it answers PING."""
        argv = [self._binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        argv += ["--save", "", "--appendonly", "no", "--dir", str(self._folder)]
        self._process = process = subprocess.Popen(  # noqa: S603 - a fixed argv
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"redis-server exited with status {process.returncode}")
            if self._answers():
                return
            time.sleep(0.05)
        raise RuntimeError(f"redis-server did not answer PING within {timeout:.0f} s")

    def stop(self, timeout: float = 15.0) -> None:
        """Kill the server and wait until its port refuses connections (idempotent)."""
        if self._process is not None:
            self._process.kill()
            self._process.wait(timeout=10)
            self._process = None
        deadline = time.monotonic() + timeout
        while self._answers():
            if time.monotonic() >= deadline:
                raise RuntimeError(f"port {self.port} still answers {timeout:.0f} s after a kill")
            time.sleep(0.05)

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False
