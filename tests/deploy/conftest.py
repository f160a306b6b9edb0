"""The reference deployment, started once for this package's tests (see :mod:`.stack`).

nginx, PostgreSQL (``DATABASE_URL_TEST_PG``) and Redis are needed; without one of
them the tests are skipped locally and fail in CI (``CI`` set): nothing skips there.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import pytest
import trustme

from callbridge.soak.processes import Child, callbridge_argv, clean_env, nginx_binary
from tests.deploy.stack import free_ports, nginx_main_conf, render_site
from tests.support.need import missing
from tests.support.redis import empty_redis

AGENT_ID = "agent_deploy_test"
#: Short calls: answered at once (consent is off), a few seconds of talk.
CALLEE = "answer=0.3,speak,hangup=15"


@dataclass
class Deployment:
    """What the tests reach: nginx's public origin, the processes behind it, the secrets."""

    public: str
    http_port: int
    control_ports: list[int]
    media_ports: list[int]
    ca: trustme.CA
    ca_file: Path
    auth_token: str
    admin_token: str
    access_log: Path
    processes: list[Child] = field(default_factory=list)

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts only the test CA."""
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context

    def access(self) -> list[dict[str, object]]:
        """nginx's access log so far, one dict per request."""
        return [json.loads(line) for line in self.access_log.read_text().splitlines() if line]


async def _create_db(server: str, name: str) -> None:
    conn = await asyncpg.connect(server.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def _drop_db(server: str, name: str) -> None:
    conn = await asyncpg.connect(server.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def _start(process: Child, deployment: Deployment) -> None:
    # Listed before it starts, so the fixture's clean-up stops it whatever happens next.
    deployment.processes.append(process)
    process.spawn()


def _wait_ready(process: Child) -> None:
    """Wait for it from this synchronous fixture (ConfigError if it exits or stalls)."""
    asyncio.run(process.wait_ready(within=90))


@pytest.fixture(scope="package")
def deployment(
    redis_server: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Deployment]:
    """nginx (TLS) → one control and two media processes, PostgreSQL, Redis, the sandbox."""
    nginx = nginx_binary()
    if nginx is None:
        missing("nginx is not installed (apt-get install nginx-light)")
    pg_server = os.environ.get("DATABASE_URL_TEST_PG")
    if not pg_server:
        missing("DATABASE_URL_TEST_PG is not set: the deployment runs on PostgreSQL")
    assert nginx is not None and pg_server is not None
    empty_redis(redis_server)  # the calls' quotas start from nothing, as on a new site
    work = tmp_path_factory.mktemp("deploy")
    db_name = "cb_deploy_" + secrets.token_hex(6)
    asyncio.run(_create_db(pg_server, db_name))
    database_url = f"{pg_server.rpartition('/')[0]}/{db_name}"

    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    cert, key, ca_file = work / "fullchain.pem", work / "privkey.pem", work / "ca.pem"
    leaf.private_key_pem.write_to_path(str(key))
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    for extra in leaf.cert_chain_pems[1:]:
        with cert.open("ab") as out:
            out.write(extra.bytes())
    ca.cert_pem.write_to_path(str(ca_file))

    http_port, https_port, sandbox_port, control, media_a, media_b = free_ports(6)
    public = f"https://127.0.0.1:{https_port}"
    upstreams = work / "upstreams"
    upstreams.mkdir()
    (upstreams / "control.servers").write_text(f"server 127.0.0.1:{control};\n")
    (upstreams / "media.servers").write_text(
        "".join(f"server 127.0.0.1:{p};\n" for p in (media_a, media_b))
    )
    site = work / "callbridge.conf"
    site.write_text(
        render_site(
            {
                "CALLBRIDGE_NGINX_SERVER_NAME": "127.0.0.1 localhost",
                "CALLBRIDGE_NGINX_PUBLIC_ORIGIN": public,
                "CALLBRIDGE_NGINX_HTTP_LISTEN": f"127.0.0.1:{http_port}",
                "CALLBRIDGE_NGINX_HTTPS_LISTEN": f"127.0.0.1:{https_port}",
                "CALLBRIDGE_NGINX_TLS_CERT": str(cert),
                "CALLBRIDGE_NGINX_TLS_KEY": str(key),
                "CALLBRIDGE_NGINX_UPSTREAMS_DIR": str(upstreams),
            }
        )
    )
    prefix = work / "nginx"
    prefix.mkdir()
    main_conf = prefix / "nginx.conf"
    main_conf.write_text(nginx_main_conf(prefix, site))

    sid, token = "AC" + secrets.token_hex(16), secrets.token_hex(16)
    admin_token, webhook = secrets.token_urlsafe(24), secrets.token_hex(16)
    sandbox_base = f"http://127.0.0.1:{sandbox_port}"
    shared = {
        "TWILIO_ACCOUNT_SID": sid,
        "TWILIO_AUTH_TOKEN": token,
        "ELEVENLABS_AGENT_ID": AGENT_ID,
        "ELEVENLABS_WEBHOOK_SECRET": webhook,
        "PUBLIC_BASE_URL": public,
    }
    server_env = shared | {
        "CALLBRIDGE_SANDBOX": "true",
        "TWILIO_API_BASE_URL": f"{sandbox_base}/sandbox/twilio",
        "ELEVENLABS_API_BASE_URL": f"{sandbox_base}/sandbox/elevenlabs",
        "CALLBRIDGE_SECRET_KEY": secrets.token_hex(32),
        "CALLBRIDGE_ADMIN_TOKEN": admin_token,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_server,
        "CALLBRIDGE_TRUSTED_PROXIES": "127.0.0.1/32",
        "CALLBRIDGE_QUIET_HOURS": "off",
        "CALLBRIDGE_CONSENT": "off",
        "CALLBRIDGE_GREETING": "Hello.",
        "CALLBRIDGE_DRAIN_SECONDS": "0",
        "CALLBRIDGE_LOG_FORMAT": "json",
    }
    deployment = Deployment(
        public=public,
        http_port=http_port,
        control_ports=[control],
        media_ports=[media_a, media_b],
        ca=ca,
        ca_file=ca_file,
        auth_token=token,
        admin_token=admin_token,
        access_log=prefix / "access.log",
    )
    try:
        # The emulated Twilio reaches us at the https URL: it trusts the test CA.
        sandbox = Child(
            "sandbox",
            callbridge_argv("sandbox", "--host", "127.0.0.1", "--port", str(sandbox_port)),
            env=clean_env(
                shared | {"CALLBRIDGE_SANDBOX_CALLEE": CALLEE, "SSL_CERT_FILE": str(ca_file)}
            ),
            log=work / "sandbox.log",
            ready_port=sandbox_port,
        )
        _start(sandbox, deployment)
        _wait_ready(sandbox)
        servers = [("control", control), ("media", media_a), ("media", media_b)]
        started = []
        for role, port in servers:
            argv = callbridge_argv(
                "serve", "--role", role, "--host", "127.0.0.1", "--port", str(port)
            )
            process = Child(
                f"{role}-{port}",
                argv,
                env=clean_env(server_env),
                log=work / f"{role}-{port}.log",
                ready_url=f"http://127.0.0.1:{port}/readyz",
            )
            _start(process, deployment)
            started.append(process)
            if role == "control":  # it migrates the empty database; the others find it done
                _wait_ready(process)
        for process in started:
            _wait_ready(process)
        proxy = Child(
            "nginx",
            [nginx, "-p", str(prefix), "-c", str(main_conf)],
            env=clean_env({}),
            log=work / "nginx.log",
            ready_port=https_port,
        )
        _start(proxy, deployment)
        _wait_ready(proxy)
        yield deployment
    finally:
        for process in reversed(deployment.processes):
            process.stop(grace=15, sig=signal.SIGTERM)
        asyncio.run(_drop_db(pg_server, db_name))
