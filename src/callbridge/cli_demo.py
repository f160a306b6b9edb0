"""``callbridge demo --workers N``: the sandbox across processes, as a busy site runs it.

One ``callbridge sandbox`` process serves the emulators (so every server's price lookup
reaches the emulator that placed the call), and N ``callbridge serve`` processes share
what several processes must share: one ``CALLBRIDGE_SECRET_KEY`` (generated for the
run), one database (migrated once, here, before they start), one Redis (``REDIS_URL``,
or a ``redis-server`` started for the run when one is installed), and the emulators'
account. Each server is printed with its address; a load balancer goes in front of
them for a real site (``deploy/`` has an nginx site).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from types import FrameType

from rich.console import Console

from callbridge.errors import ConfigError
from callbridge.settings import Settings

#: How long a child may take to listen before the run is given up.
START_TIMEOUT_S = 60.0

_CLI = "from callbridge.cli import main; main()"


class WorkersFailed(Exception):
    """A child process did not start or stopped; the message says which."""


def shared_environment(
    settings: Settings, *, host: str, sandbox_port: int, redis_url: str | None
) -> dict[str, str]:
    """The settings every process of the run shares (over the caller's environment)."""
    sandbox_base = f"http://{host}:{sandbox_port}"
    token = settings.twilio_auth_token
    return {
        "CALLBRIDGE_SANDBOX": "true",
        "CALLBRIDGE_SECRET_KEY": settings.secret_key.get_secret_value()
        if settings.secret_key
        else secrets.token_hex(32),
        "TWILIO_ACCOUNT_SID": settings.twilio_account_sid or "AC" + secrets.token_hex(16),
        "TWILIO_AUTH_TOKEN": token.get_secret_value() if token else secrets.token_hex(16),
        "TWILIO_API_BASE_URL": f"{sandbox_base}/sandbox/twilio",
        "ELEVENLABS_API_BASE_URL": f"{sandbox_base}/sandbox/elevenlabs",
        "DATABASE_URL": settings.database_url,
        **({"REDIS_URL": redis_url} if redis_url else {}),
    }


def run_workers(
    settings: Settings,
    *,
    host: str,
    port: int,
    workers: int,
    sandbox_port: int,
    admin_password: str | None,
    console: Console,
) -> int:
    """Run the emulators and ``workers`` servers until interrupted or one of them stops.

    Returns the exit code: 0 after an interrupt, 1 when a process stopped by itself.

    Raises:
        ConfigError: several servers and no Redis to share (none set, none installed).
    """
    from callbridge.adapters.db.migrate import upgrade_sync

    children: list[tuple[str, subprocess.Popen[bytes]]] = []
    redis_url = settings.redis_url
    if redis_url is None and workers > 1:
        redis_url = _start_redis(host, children)
    env = {
        **os.environ,
        **shared_environment(settings, host=host, sandbox_port=sandbox_port, redis_url=redis_url),
    }
    if admin_password is not None:
        env["CALLBRIDGE_ADMIN_PASSWORD"] = admin_password
    stopping = False

    def stop(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        upgrade_sync(settings.database_url)  # once, before several processes race to it
        servers = [f"http://{host}:{port + i}" for i in range(workers)]
        sandbox_env = {**env, "PUBLIC_BASE_URL": servers[0]}  # post-call webhooks' target
        _spawn(
            "sandbox",
            ["sandbox", "--host", host, "--port", str(sandbox_port)],
            sandbox_env,
            children,
        )
        _wait_listening(host, sandbox_port, children)
        for i, base in enumerate(servers):
            args = ["serve", "--host", host, "--port", str(port + i)]
            _spawn(f"server {i + 1}", args, {**env, "PUBLIC_BASE_URL": base}, children)
        for i in range(workers):
            _wait_listening(host, port + i, children)
        _announce(
            console,
            servers,
            sandbox_port,
            host,
            env,
            redis_url,
            started_redis=(settings.redis_url is None and redis_url is not None),
        )
        while not stopping:
            for name, child in children:
                if child.poll() is not None:
                    console.print(f"[bold red]callbridge:[/] {name} stopped ({child.returncode}).")
                    return 1
            time.sleep(0.2)
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        _stop_all(children)


def _start_redis(host: str, children: list[tuple[str, subprocess.Popen[bytes]]]) -> str:
    server = shutil.which("redis-server")
    if server is None:
        raise ConfigError(
            "Several servers share quotas, tokens and live events through Redis: set "
            "REDIS_URL, or install redis-server and callbridge starts one for the run."
        )
    redis_port = _free_port(host)
    children.append(
        (
            "redis-server",
            subprocess.Popen(  # noqa: S603 - our own argument list, no shell
                [
                    server,
                    "--bind",
                    host,
                    "--port",
                    str(redis_port),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ],
                stdout=subprocess.DEVNULL,
            ),
        )
    )
    _wait_listening(host, redis_port, children)
    return f"redis://{host}:{redis_port}/0"


def _spawn(
    name: str,
    args: list[str],
    env: Mapping[str, str],
    children: list[tuple[str, subprocess.Popen[bytes]]],
) -> None:
    command = [sys.executable, "-c", _CLI, *args]
    children.append((name, subprocess.Popen(command, env=dict(env))))  # noqa: S603


def _wait_listening(
    host: str, port: int, children: list[tuple[str, subprocess.Popen[bytes]]]
) -> None:
    """Wait until something accepts connections on ``port``.

    Raises:
        WorkersFailed: a child stopped meanwhile, or nothing listened in time.
    """
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        for name, child in children:
            if child.poll() is not None:
                raise WorkersFailed(f"{name} stopped before it started ({child.returncode}).")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise WorkersFailed(f"nothing listened on {host}:{port} after {START_TIMEOUT_S:.0f} s.")


def _stop_all(children: list[tuple[str, subprocess.Popen[bytes]]]) -> None:
    """SIGTERM every child (servers drain), then kill what is left after 15 s."""
    for _name, child in reversed(children):
        if child.poll() is None:
            child.terminate()
    deadline = time.monotonic() + 15
    for _name, child in reversed(children):
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _announce(
    console: Console,
    servers: list[str],
    sandbox_port: int,
    host: str,
    env: Mapping[str, str],
    redis_url: str | None,
    *,
    started_redis: bool,
) -> None:
    lines = [
        f"[bold green]callbridge sandbox, {len(servers)} servers[/] — Twilio and ElevenLabs "
        f"are emulated once, at http://{host}:{sandbox_port}; no real calls are placed.",
        *(f"  server {i + 1}: [bold]{base}/[/]" for i, base in enumerate(servers)),
        f"  database: {_masked_url(env['DATABASE_URL'])}",
    ]
    if redis_url:
        lines.append(
            f"  Redis: {_masked_url(redis_url)}"
            + (" (started for this run)" if started_redis else "")
        )
    lines.append(
        "  A load balancer goes in front of the servers for a real site: see deploy/ "
        "(nginx routes /api/call/media-stream with the WebSocket upgrade)."
    )
    console.print("\n".join(lines))


def _masked_url(url: str) -> str:
    """``url`` without its password."""
    scheme, sep, rest = url.partition("://")
    if "@" not in rest:
        return url
    auth, _, tail = rest.rpartition("@")
    user = auth.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{tail}"
