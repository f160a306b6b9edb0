"""One soak run from start to verdict: start the stack, play the day, inject faults, judge.

The stack: PostgreSQL and Redis (started here unless URLs are given), the standalone
sandbox (``callbridge sandbox``) as Twilio and ElevenLabs, two ``callbridge serve``
processes started at the same moment on the empty database, and nginx in front of
them at the public URL Twilio and the visitors use. Everything runs on loopback in a
fresh directory, which keeps every log; it is removed after a passing run unless
``keep`` is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import shutil
import signal
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from callbridge.errors import ConfigError
from callbridge.soak import evidence as collect
from callbridge.soak.faults import FaultInjector
from callbridge.soak.invariants import Context, judge
from callbridge.soak.processes import (
    Child,
    Nginx,
    Postgres,
    Redis,
    callbridge_argv,
    clean_env,
    free_port,
    missing_programs,
)
from callbridge.soak.profile import SoakProfile
from callbridge.soak.report import SoakResult
from callbridge.soak.traffic import TrafficGenerator, callee_book, plan_traffic

AGENT_ID = "agent_soak"
_FINAL = {"completed", "busy", "no-answer", "failed", "canceled"}


@dataclass(frozen=True, slots=True)
class SoakOptions:
    """How to run: the profile, and what to use instead of starting it."""

    profile: SoakProfile
    database_url: str | None = None
    redis_url: str | None = None
    workdir: Path | None = None
    keep: bool = False


@dataclass(slots=True)
class _Stack:
    postgres: Postgres | None
    redis: Redis | None
    database_url: str
    redis_url: str
    sandbox: Child
    nginx: Nginx
    servers: list[Child]
    account_sid: str
    auth_token: str
    key: bytes
    twilio_base: str
    start_failures: list[str]


def _server_env(
    options: SoakOptions,
    stack_urls: dict[str, str],
    secrets_: dict[str, str],
    limits: dict[str, str],
) -> dict[str, str]:
    profile = options.profile
    return clean_env(
        {
            "CALLBRIDGE_SANDBOX": "true",
            "TWILIO_ACCOUNT_SID": secrets_["sid"],
            "TWILIO_AUTH_TOKEN": secrets_["token"],
            "TWILIO_API_BASE_URL": stack_urls["twilio"],
            "ELEVENLABS_API_BASE_URL": stack_urls["elevenlabs"],
            "ELEVENLABS_AGENT_ID": AGENT_ID,
            "ELEVENLABS_WEBHOOK_SECRET": secrets_["webhook"],
            "CALLBRIDGE_SECRET_KEY": secrets_["key"],
            "PUBLIC_BASE_URL": stack_urls["public"],
            "DATABASE_URL": stack_urls["database"],
            "REDIS_URL": stack_urls["redis"],
            "CALLBRIDGE_TRUSTED_PROXIES": "127.0.0.1/32",
            "CALLBRIDGE_TIME_LIMIT": str(profile.time_limit_s),
            "CALLBRIDGE_RING_TIMEOUT": str(profile.ring_timeout_s),
            "CALLBRIDGE_GREETING": profile.greeting,
            "CALLBRIDGE_QUIET_HOURS": "off",
            "CALLBRIDGE_DRAIN_SECONDS": "5",
            "CALLBRIDGE_POSTCALL_RECONCILE_MINUTES": str(profile.postcall_reconcile_minutes),
            "CALLBRIDGE_LOG_FORMAT": "json",
            **limits,
            **profile.extra_env,
        }
    )


@contextlib.asynccontextmanager
async def _stack(options: SoakOptions, workdir: Path) -> AsyncIterator[_Stack]:
    """Start everything; stop everything when the block ends, whatever happens."""
    missing = missing_programs(
        postgres=options.database_url is None, redis=options.redis_url is None
    )
    if missing:
        raise ConfigError("The soak needs " + ", ".join(missing) + ".")
    profile = options.profile
    postgres = None if options.database_url else Postgres(workdir / "postgres.log")
    redis = None if options.redis_url else Redis(workdir)
    children: list[Child] = []
    try:
        if postgres is not None:
            await asyncio.to_thread(postgres.init)
            await asyncio.to_thread(postgres.start)
        if redis is not None:
            await redis.start()
        database_url = options.database_url or (postgres.url if postgres else "")
        redis_url = options.redis_url or (redis.url if redis else "")
        sandbox_port = free_port()
        server_ports = [free_port(), free_port()]
        nginx = Nginx(workdir, server_ports)
        secrets_ = {
            "sid": "AC" + secrets.token_hex(16),
            "token": secrets.token_hex(16),
            "key": secrets.token_hex(32),
            "webhook": secrets.token_hex(16),
        }
        sandbox_base = f"http://127.0.0.1:{sandbox_port}"
        urls = {
            "twilio": f"{sandbox_base}/sandbox/twilio",
            "elevenlabs": f"{sandbox_base}/sandbox/elevenlabs",
            "public": nginx.url,
            "database": database_url,
            "redis": redis_url,
        }
        sandbox = Child(
            "sandbox",
            callbridge_argv("sandbox", "--host", "127.0.0.1", "--port", str(sandbox_port)),
            env=clean_env(
                {
                    "TWILIO_ACCOUNT_SID": secrets_["sid"],
                    "TWILIO_AUTH_TOKEN": secrets_["token"],
                    "ELEVENLABS_AGENT_ID": AGENT_ID,
                    "ELEVENLABS_WEBHOOK_SECRET": secrets_["webhook"],
                    "PUBLIC_BASE_URL": nginx.url,
                    "CALLBRIDGE_SANDBOX_CALLEE": profile.behaviours[0].script,
                    "CALLBRIDGE_SANDBOX_CALLEES": callee_book(profile),
                }
            ),
            log=workdir / "sandbox.log",
            ready_port=sandbox_port,
        )
        children.append(sandbox)
        await sandbox.start()
        children.append(nginx)
        await nginx.start()
        env = _server_env(options, urls, secrets_, profile.limits())
        servers = [
            Child(
                name,
                callbridge_argv("serve", "--host", "127.0.0.1", "--port", str(port)),
                env=env,
                log=workdir / f"{name}.log",
                ready_url=f"http://127.0.0.1:{port}/readyz",
            )
            for name, port in zip(("server-a", "server-b"), server_ports, strict=True)
        ]
        children.extend(servers)
        for server in servers:  # at the same moment, on the empty database
            server.spawn()
        start_failures = []
        for server in servers:
            try:
                await server.wait_ready(90)
            except ConfigError as exc:
                start_failures.append(f"{server.name}: {_last_error(str(exc))}")
                await server.start(90)
        yield _Stack(
            postgres,
            redis,
            database_url,
            redis_url,
            sandbox,
            nginx,
            servers,
            secrets_["sid"],
            secrets_["token"],
            secrets_["key"].encode(),
            urls["twilio"],
            start_failures,
        )
    finally:
        for child in reversed(children):
            await asyncio.to_thread(child.stop)
        if redis is not None:
            await asyncio.to_thread(redis.stop, 10.0, 15)
        if postgres is not None:
            await asyncio.to_thread(postgres.destroy)


def _last_error(text: str) -> str:
    """The most telling line of a start-up failure (an exception's name and message)."""
    found = re.findall(r"([A-Za-z_.]*(?:Error|Exception|Violation)[^\n]{0,120})", text)
    return found[-1] if found else text.strip().splitlines()[0][:160]


async def _bridged_by(server: Child) -> int | None:
    """How many calls ``server`` bridges now (its ``callbridge_calls_in_progress``)."""
    if server.ready_url is None:
        return None
    url = server.ready_url.replace("/readyz", "/metrics")
    try:
        async with httpx.AsyncClient(timeout=2.0) as http:
            body = (await http.get(url)).text
    except httpx.HTTPError:
        return None
    match = re.search(r"^callbridge_calls_in_progress\s+([0-9.e+]+)$", body, re.M)
    return int(float(match.group(1))) if match else None


async def _wait_twilio_done(stack: _Stack, within: float) -> None:
    """Until the emulator has no live call (or ``within`` seconds)."""
    deadline = time.time() + within
    while time.time() < deadline:
        try:
            calls = await collect.twilio_calls(
                stack.twilio_base, stack.account_sid, stack.auth_token
            )
        except httpx.HTTPError:
            calls = {}
        if calls and all(c.status in _FINAL for c in calls.values()):
            return
        await asyncio.sleep(2.0)


@contextlib.contextmanager
def _cancel_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into a cancellation of the running task, so the stack is stopped
    (servers, nginx, PostgreSQL, Redis) instead of left running without its parent."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    try:
        loop.add_signal_handler(signal.SIGTERM, task.cancel if task else lambda: None)
    except (NotImplementedError, RuntimeError):  # not the main thread: nothing to catch
        yield
        return
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


async def run_soak(options: SoakOptions) -> SoakResult:
    """Run the soak and judge it (SIGTERM stops everything it started, then cancels it).

    Raises:
        ConfigError: a server it needs is missing, or could not be started.
    """
    with _cancel_on_sigterm():
        return await _run(options)


async def _run(options: SoakOptions) -> SoakResult:
    began = time.time()
    workdir = options.workdir or Path(tempfile.mkdtemp(prefix="callbridge-soak."))
    workdir.mkdir(parents=True, exist_ok=True)
    profile = options.profile
    plan = plan_traffic(profile)
    ev = collect.Evidence()
    async with _stack(options, workdir) as stack:
        engine = collect.make_engine(stack.database_url)
        watcher = collect.CallWatcher(engine)
        watching = asyncio.create_task(watcher.run())
        traffic = TrafficGenerator(stack.nginx.url, plan)
        faults = FaultInjector(stack.servers, stack.postgres, stack.redis, _bridged_by)
        started = time.time() + 1.0
        try:
            await asyncio.gather(
                traffic.run(started),
                faults.run(
                    started,
                    kill_at=profile.kill_at * profile.duration_s,
                    restart_after_s=profile.restart_after_s,
                    postgres_at=profile.postgres_at * profile.duration_s,
                    redis_at=profile.redis_at * profile.duration_s,
                    outage_s=profile.outage_s,
                ),
            )
            await _wait_twilio_done(stack, profile.time_limit_s + 30)
            ev.twilio = await collect.twilio_calls(
                stack.twilio_base, stack.account_sid, stack.auth_token
            )
            last_end = max(
                (c.end_time.timestamp() for c in ev.twilio.values() if c.end_time),
                default=time.time(),
            )
            # Until every call is terminal, its spend settled to Twilio's price (in the
            # ledger and the day counter) and every bridged call has its transcript (or
            # the longest of the documented delays).
            deadline = last_end + profile.settle_s + 3
            final_deadline = last_end + max(profile.settle_s, profile.postcall_wait_s) + 3
            while time.time() < final_deadline:
                await watcher.poll()
                terminal = bool(watcher.statuses) and len(watcher.first_terminal) == len(
                    watcher.statuses
                )
                if not terminal and time.time() >= deadline:
                    break
                if (
                    terminal
                    and not await collect.unsettled(engine)
                    and not await collect.spend_drift(engine, stack.redis_url)
                ):
                    break
                await asyncio.sleep(1.0)
        finally:
            watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watching
        ev.first_terminal = dict(watcher.first_terminal)
        ev.twilio = await collect.twilio_calls(
            stack.twilio_base, stack.account_sid, stack.auth_token
        )
        await collect.database(engine, ev)
        await engine.dispose()
        await collect.redis_state(stack.redis_url, ev)
        ev.nginx = collect.nginx_log(stack.nginx.access_log)
        collect.dump(ev, workdir / "evidence.json")
        crashed = [
            f"{child.name} exited with {child.proc.returncode}"
            for child in (*stack.servers, stack.sandbox, stack.nginx)
            if child.proc is not None and child.proc.poll() is not None
        ]
        killed = stack.servers[0].ready_url or ""
        context = Context(
            profile=profile,
            attempts=traffic.attempts,
            faults=faults.records,
            limits=profile.limits(),
            key=stack.key,
            killed_upstream=killed.split("//", 1)[-1].split("/", 1)[0],
            start_failures=stack.start_failures,
            crashed=crashed,
        )
        invariants = judge(ev, context)
        result = SoakResult(
            traffic.attempts, ev, faults.records, invariants, time.time() - began, str(workdir)
        )
    if result.passed and not options.keep and options.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return result
