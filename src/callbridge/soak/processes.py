"""The processes of a soak: PostgreSQL, Redis, nginx, the sandbox and two callbridge servers.

Each is a :class:`Child` the harness starts, stops, kills and restarts on the same
port, logging into the run's directory. PostgreSQL is a throwaway cluster made with
``initdb`` and driven with ``pg_ctl`` (from ``/usr/lib/postgresql/*/bin``, as
``.ci/run`` does; run as the ``postgres`` user when the harness is root, since
PostgreSQL refuses to run as root); Redis is ``redis-server`` with an append-only
file, so a stop loses nothing; nginx runs in the foreground with its own prefix and
configuration (:func:`nginx_config`).
"""

from __future__ import annotations

import asyncio
import glob
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx

from callbridge.bench.procs import answers, clean_env, free_port, stop_process
from callbridge.errors import ConfigError

__all__ = [
    "Child",
    "Nginx",
    "Postgres",
    "Redis",
    "callbridge_argv",
    "clean_env",
    "free_port",
    "missing_programs",
    "nginx_config",
]


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version_key)
    return Path(found[-1]).parent if found else None


def _version_key(path: str) -> tuple[int, ...]:
    parts = path.split("/")
    try:
        return tuple(int(p) for p in parts[4].split("."))
    except (IndexError, ValueError):
        return (0,)


def nginx_binary() -> str | None:
    """``nginx`` on PATH, or ``/usr/sbin/nginx``."""
    found = shutil.which("nginx")
    if found:
        return found
    return "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None


def missing_programs(*, postgres: bool, redis: bool) -> list[str]:
    """The servers the soak needs but cannot find (nginx always; the others when asked)."""
    missing = []
    if nginx_binary() is None:
        missing.append("nginx (apt-get install nginx-light)")
    if postgres and _pg_bin() is None:
        missing.append("PostgreSQL (initdb under /usr/lib/postgresql/*/bin)")
    if redis and shutil.which("redis-server") is None:
        missing.append("redis-server")
    return missing


def callbridge_argv(*args: str) -> list[str]:
    """``callbridge ARGS`` run by this interpreter (the venv's when run from it)."""
    return [sys.executable, "-c", "from callbridge.cli import main; main()", *args]


class Child:
    """One child process that can be stopped, killed and started again the same way.

    Args:
        name: its label in logs and the summary.
        argv: the command.
        env: its environment.
        log: the file its output is appended to.
        ready_url: a URL that answers 200 once it is ready (or ``None``).
        ready_port: a loopback port that accepts connections once it is ready.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        log: Path,
        ready_url: str | None = None,
        ready_port: int | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env)
        self.log = log
        self.ready_url = ready_url
        self.ready_port = ready_port
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def pid(self) -> int | None:
        """The running process's id, if any."""
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def spawn(self) -> None:
        """Start the process (does not wait for it to be ready)."""
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(  # noqa: S603 - our own argv, no shell
                self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        self.starts += 1

    async def start(self, within: float = 60.0) -> None:
        """Start the process and wait until it is ready.

        Raises:
            ConfigError: it exited or was not ready within ``within`` seconds.
        """
        self.spawn()
        await self.wait_ready(within)

    async def wait_ready(self, within: float = 60.0) -> None:
        """Wait until the process answers (see the class arguments).

        Raises:
            ConfigError: it exited or was not ready within ``within`` seconds.
        """
        deadline = time.monotonic() + within
        async with httpx.AsyncClient(timeout=2.0) as http:
            while time.monotonic() < deadline:
                if self.proc is None or self.proc.poll() is not None:
                    raise ConfigError(f"{self.name} exited at start-up:\n{self.tail()}")
                if await self.is_ready(http):
                    return
                await asyncio.sleep(0.1)
        raise ConfigError(f"{self.name} was not ready in {within:.0f} s:\n{self.tail()}")

    async def is_ready(self, http: httpx.AsyncClient) -> bool:
        """Whether it answers now."""
        return await answers(http, url=self.ready_url, port=self.ready_port)

    def tail(self, chars: int = 3000) -> str:
        """The end of its log."""
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def kill(self) -> None:
        """``kill -9``: no clean-up at all."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self, grace: float = 10.0, sig: int = signal.SIGINT) -> None:
        """Stop it with ``sig``, then SIGKILL after ``grace`` seconds (idempotent)."""
        stop_process(self.proc, sig, grace)


class Postgres:
    """A throwaway PostgreSQL cluster on a free loopback port.

    Raises:
        ConfigError: ``initdb`` is missing, or the harness is root and there is no
            ``postgres`` user to run it as.
    """

    def __init__(self, log: Path) -> None:
        bin_dir = _pg_bin()
        if bin_dir is None:
            raise ConfigError("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb).")
        self._bin = bin_dir
        self._log = log
        self.port = free_port()
        self._user: str | None = None
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                raise ConfigError(
                    "PostgreSQL will not run as root and there is no 'postgres' user."
                ) from None
            self._user = "postgres"
        self.data = Path(tempfile.mkdtemp(prefix="callbridge-soak-pg."))
        if self._user is not None:
            shutil.chown(self.data, self._user)

    @property
    def url(self) -> str:
        """The SQLAlchemy URL of its ``postgres`` database."""
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *argv: str) -> None:
        command = [str(self._bin / argv[0]), *argv[1:]]
        if self._user is not None:
            command = ["runuser", "-u", self._user, "--", *command]
        with self._log.open("ab") as log:
            subprocess.run(  # noqa: S603 - fixed argv, no shell
                command, check=True, stdout=log, stderr=subprocess.STDOUT, timeout=120
            )

    def init(self) -> None:
        """Create the cluster (trust authentication, loopback only)."""
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-N")

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = (
            f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c max_connections=200"
        )
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.data / "server.log"),
            "-w",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: connections are cut, as in an outage)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def destroy(self) -> None:
        """Stop it if running and remove its files."""
        try:
            self.stop("immediate")
        except (subprocess.SubprocessError, OSError):
            pass
        shutil.rmtree(self.data, ignore_errors=True)


class Redis(Child):
    """``redis-server`` on a free loopback port, with an append-only file in ``workdir``."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        data = workdir / "redis"
        data.mkdir(exist_ok=True)
        argv = [
            shutil.which("redis-server") or "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(data),
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--protected-mode",
            "no",
        ]
        super().__init__(
            "redis", argv, env=clean_env({}), log=workdir / "redis.log", ready_port=self.port
        )

    @property
    def url(self) -> str:
        """Its URL."""
        return f"redis://127.0.0.1:{self.port}/0"


def nginx_config(prefix: Path, port: int, upstreams: Sequence[int], access_log: Path) -> str:
    """nginx in front of the servers: HTTP and the media-stream WebSocket, JSON access log.

    Each access-log line is one JSON object (``escape=json``) with the time, status,
    method, path, the upstream(s) tried with their statuses, and the request body,
    which for Twilio's status callbacks holds ``CallSid``, ``CallStatus`` and
    ``SequenceNumber``.
    """
    servers = "\n".join(
        f"        server 127.0.0.1:{p} max_fails=1 fail_timeout=2s;" for p in upstreams
    )
    user = "user root;" if os.geteuid() == 0 else ""
    return f"""{user}
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    log_format soak escape=json '{{"t":$msec,"status":$status,"method":"$request_method",'
        '"uri":"$uri","args":"$args","upstream":"$upstream_addr",'
        '"upstream_status":"$upstream_status","rt":$request_time,"body":"$request_body"}}';
    access_log {access_log} soak;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    client_body_buffer_size 64k;
    client_max_body_size 1m;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
    upstream callbridge {{
{servers}
        keepalive 32;
        # Below uvicorn's 5 s keep-alive, so nginx never reuses a connection the
        # server is closing (that race would be a 502 of ours, not of the product).
        keepalive_timeout 4s;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://callbridge;
            proxy_http_version 1.1;
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $http_host;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_read_timeout 300s;
            proxy_next_upstream error timeout;
        }}
        location = /api/call/media-stream {{
            proxy_pass http://callbridge;
            proxy_http_version 1.1;
            proxy_set_header Host $http_host;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $http_host;
            proxy_read_timeout 3600s;
            proxy_send_timeout 3600s;
        }}
    }}
}}
"""


class Nginx(Child):
    """nginx in the foreground with its own prefix, proxying to ``upstreams``."""

    def __init__(self, workdir: Path, upstreams: Sequence[int]) -> None:
        binary = nginx_binary()
        if binary is None:
            raise ConfigError("nginx is not installed (apt-get install nginx-light).")
        self.port = free_port()
        prefix = workdir / "nginx"
        prefix.mkdir(exist_ok=True)
        self.access_log = prefix / "access.log"
        conf = prefix / "nginx.conf"
        conf.write_text(nginx_config(prefix, self.port, upstreams, self.access_log))
        super().__init__(
            "nginx",
            [binary, "-p", str(prefix), "-c", str(conf)],
            env=clean_env({}),
            log=workdir / "nginx.log",
            ready_port=self.port,
        )

    @property
    def url(self) -> str:
        """Its public base URL (what Twilio and the visitors reach)."""
        return f"http://127.0.0.1:{self.port}"

    def stop(self, grace: float = 10.0, sig: int = signal.SIGQUIT) -> None:
        """Stop gracefully (SIGQUIT), then SIGKILL."""
        super().stop(grace, sig)
