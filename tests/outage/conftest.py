"""Stores that a test may stop and start again: a private PostgreSQL cluster, a private Redis.

The shared servers of the other suites must never be stopped, so these are the
test's own: ``initdb`` in a folder under /tmp and ``pg_ctl`` on a free loopback port
(as ``.ci/run`` does; run as the ``postgres`` user when the tests run as root), and a
``redis-server`` (tests/support/redis.py) that the test kills and starts again on the
same port. Without the binaries the
tests are skipped, except in CI (``CI`` set), where they fail.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.need import missing
from tests.support.redis import RedisServer
from tests.support.server import free_port


def _wait_port(port: int, up: bool, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                if up:
                    return
        except OSError:
            if not up:
                return
        time.sleep(0.05)
    raise RuntimeError(f"port {port} did not go {'up' if up else 'down'} in {timeout} s")


class PrivateCluster:
    """A throwaway PostgreSQL cluster that the test may stop and start."""

    def __init__(self, bindir: Path, data: Path, port: int) -> None:
        self._bindir = bindir
        self._data = data
        self.port = port
        self.url = f"postgresql+asyncpg://postgres@127.0.0.1:{port}/postgres"

    def _run(self, *args: str) -> None:
        command = [str(self._bindir / args[0]), *args[1:]]
        if os.geteuid() == 0:  # initdb and postgres refuse to run as root
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def init(self) -> None:
        """Create the cluster's files."""
        self._run("initdb", "-D", str(self._data), "-A", "trust", "-U", "postgres")

    def start(self) -> None:
        """Start the server and wait until it takes connections."""
        options = f"-p {self.port} -k {self._data} -c listen_addresses=127.0.0.1"
        self._run(
            "pg_ctl",
            "-D",
            str(self._data),
            "-o",
            options,
            "-l",
            str(self._data / "log"),
            "-w",
            "start",
        )
        _wait_port(self.port, up=True)

    def stop(self) -> None:
        """Stop the server at once (fast mode: sessions are cut), as an outage does."""
        self._run("pg_ctl", "-D", str(self._data), "-m", "fast", "-w", "stop")
        _wait_port(self.port, up=False)


@pytest.fixture
def private_postgres() -> Iterator[PrivateCluster]:
    """A running private PostgreSQL cluster, removed afterwards."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    initdb = found[-1] if found else shutil.which("initdb")
    if not initdb:
        missing("PostgreSQL (initdb) is not installed: the outage tests need their own server")
    assert initdb is not None
    data = Path(tempfile.mkdtemp(prefix="callbridge-outage-pg-", dir="/tmp"))
    if os.geteuid() == 0:
        shutil.chown(data, "postgres")
    cluster = PrivateCluster(Path(initdb).parent, data, free_port())
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        try:
            cluster.stop()
        except (subprocess.CalledProcessError, RuntimeError):
            pass  # already stopped
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A running private Redis, stopped afterwards."""
    server = RedisServer(purpose="The outage tests")
    server.start()
    try:
        yield server
    finally:
        server.stop()
