"""Behind a load balancer (REDIS_URL), sign-in state is shared: a session signed out on
one server is refused by the other, and failed logins count across servers."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis

from tests.operator.conftest import PASSWORD, admin_sandbox, csrf_of, signed_in

pytestmark = pytest.mark.redis

_SHARED_KEY = "k" * 48


def _folders(tmp_path: Path) -> tuple[Path, Path]:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    return tmp_path / "a", tmp_path / "b"


async def _forget_failures(url: str) -> None:
    client = aioredis.Redis.from_url(url)
    try:
        await client.delete("callbridge:admin:fail:127.0.0.1")
    finally:
        await client.aclose()


async def test_a_session_signed_out_on_one_server_is_refused_by_the_other(
    tmp_path: Path,
    redis_url: str,  # noqa: F811
) -> None:
    """Sign in on A, use the cookie on B, sign out on A: B refuses the copied cookie.
    (With per-process revocation B would still accept it for twelve hours.)"""
    env = {"REDIS_URL": redis_url, "CALLBRIDGE_SECRET_KEY": _SHARED_KEY}
    first, second = _folders(tmp_path)
    async with (
        admin_sandbox(first, env) as a,
        admin_sandbox(second, env) as b,
        signed_in(a) as client,
    ):
        cookie = client.cookies.get("cb_admin")
        assert cookie
        headers = {"Cookie": f"cb_admin={cookie}"}
        async with httpx.AsyncClient(base_url=b.base_url) as other:
            assert (await other.get("/admin", headers=headers)).status_code == 200
            home = await client.get("/admin")
            out = await client.post("/admin/logout", data={"csrf": csrf_of(home.text)})
            assert out.status_code == 303
            assert (await other.get("/admin", headers=headers)).status_code == 303


async def test_failed_logins_count_across_servers(
    tmp_path: Path,
    redis_url: str,  # noqa: F811
) -> None:
    """Three wrong passwords on A and two on B use up the address's five: the next try
    on either server, even with the right password, is 429."""
    await _forget_failures(redis_url)
    env = {"REDIS_URL": redis_url, "CALLBRIDGE_SECRET_KEY": _SHARED_KEY}
    first, second = _folders(tmp_path)
    try:
        async with admin_sandbox(first, env) as a, admin_sandbox(second, env) as b:
            for sb, tries in ((a, 3), (b, 2)):
                token = csrf_of((await sb.http.get("/admin/login")).text)
                for _ in range(tries):
                    wrong = await sb.http.post(
                        "/admin/login", data={"csrf": token, "password": "nope"}
                    )
                    assert wrong.status_code == 401
            for sb in (a, b):
                token = csrf_of((await sb.http.get("/admin/login")).text)
                blocked = await sb.http.post(
                    "/admin/login", data={"csrf": token, "password": PASSWORD}
                )
                assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) > 0
    finally:
        await _forget_failures(redis_url)
