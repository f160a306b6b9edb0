"""The reference deployment on loopback: deploy/'s nginx site with TLS in front of
callbridge processes, on PostgreSQL and Redis, with the standalone sandbox.

The site is ``deploy/nginx/callbridge.conf.template`` itself, rendered with this
run's ports and paths (:func:`render_site`); only the outer ``nginx.conf`` (pid,
temp paths, a JSON access log naming the upstream of each request) is the test's.
The processes are the soak's (:class:`callbridge.soak.processes.Child`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from callbridge.bench.procs import free_port

__all__ = ["free_ports", "nginx_main_conf", "render_site"]

REPO = Path(__file__).resolve().parents[2]
SITE_TEMPLATE = REPO / "deploy" / "nginx" / "callbridge.conf.template"
_PLACEHOLDER = re.compile(r"\$\{(CALLBRIDGE_NGINX_[A-Z_]+)\}")


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


def free_ports(n: int) -> list[int]:
    """``n`` distinct free loopback ports."""
    ports: set[int] = set()
    while len(ports) < n:
        ports.add(free_port())
    return sorted(ports)
