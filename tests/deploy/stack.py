"""The reference deployment on loopback: deploy/'s nginx site with TLS in front of
callbridge processes, on PostgreSQL and Redis, with the standalone sandbox.

The site is ``deploy/nginx/callbridge.conf.template`` itself, rendered with this
run's ports and paths (:func:`render_site`); only the outer ``nginx.conf`` (pid,
temp paths, a JSON access log naming the upstream of each request) is the test's.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx

from callbridge.bench.procs import clean_env, free_port, python

__all__ = ["Process", "nginx_binary", "nginx_main_conf", "render_site"]

REPO = Path(__file__).resolve().parents[2]
SITE_TEMPLATE = REPO / "deploy" / "nginx" / "callbridge.conf.template"
_PLACEHOLDER = re.compile(r"\$\{(CALLBRIDGE_NGINX_[A-Z_]+)\}")


def nginx_binary() -> str | None:
    """``nginx`` on PATH, or Debian's ``/usr/sbin/nginx``."""
    found = shutil.which("nginx")
    if found:
        return found
    return "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None


def render_site(values: Mapping[str, str]) -> str:
    """The site template with its ``${CALLBRIDGE_NGINX_*}`` filled in, as envsubst would.

    Raises:
        KeyError: a placeholder has no value (the template grew one the test lacks).
    """
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], SITE_TEMPLATE.read_text())


def nginx_main_conf(prefix: Path, site: Path) -> str:
    """A minimal main configuration around the site, all state under ``prefix``."""
    user = "user root;" if os.geteuid() == 0 else ""
    return f"""{user}
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    log_format deploytest escape=json '{{"status":$status,"uri":"$uri",'
        '"upstream":"$upstream_addr","scheme":"$scheme"}}';
    access_log {prefix}/access.log deploytest;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    include {site};
}}
"""


def callbridge_argv(*args: str) -> list[str]:
    """``callbridge ARGS`` with this interpreter."""
    return [python(), "-c", "from callbridge.cli import main; main()", *args]


class Process:
    """A child process started now and stopped by :meth:`stop` (SIGTERM, then SIGKILL)."""

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str], log: Path) -> None:
        self.name = name
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(  # noqa: S603 - our own argv
                list(argv), env=clean_env(env), stdout=out, stderr=subprocess.STDOUT
            )

    def wait_ready(
        self, url: str | None = None, port: int | None = None, within: float = 90
    ) -> None:
        """Wait until ``url`` answers 200 (or ``port`` accepts a connection).

        Raises:
            RuntimeError: it exited, or was not ready in time (with its log's end).
        """
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.tail()}")
            try:
                if url is not None:
                    if httpx.get(url, timeout=2, verify=False).status_code == 200:  # noqa: S501
                        return
                else:
                    import socket

                    with socket.create_connection(("127.0.0.1", port or 0), timeout=1):
                        return
            except (httpx.HTTPError, OSError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} was not ready in {within:.0f} s:\n{self.tail()}")

    def tail(self, chars: int = 3000) -> str:
        """The end of its log."""
        return self.log.read_text(errors="replace")[-chars:]

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop it (idempotent)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def free_ports(n: int) -> list[int]:
    """``n`` distinct free loopback ports."""
    ports: set[int] = set()
    while len(ports) < n:
        ports.add(free_port())
    return sorted(ports)
