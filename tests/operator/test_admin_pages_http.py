"""The /admin pages over HTTP: sign-in, CSRF, rate limit, masking, reveal, security headers."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.operator.conftest import (
    PASSWORD,
    TOKEN,
    VISITOR,
    admin_sandbox,
    csrf_of,
    finished_call,
    info_logs,
    signed_in,
)
from tests.support.app import running_sandbox


async def test_pages_need_a_session(tmp_path: Path) -> None:
    """Every page redirects to the login form (keeping where to go next) without a session."""
    async with admin_sandbox(tmp_path) as sb:
        for path in (
            "/admin",
            "/admin/overview",
            "/admin/dnc",
            "/admin/settings",
            "/admin/calls/call_x",
        ):
            response = await sb.http.get(path)
            assert response.status_code == 303, path
            assert response.headers["location"].startswith("/admin/login?next=")
        rows = await sb.http.get("/admin/calls/rows")
        assert rows.status_code == 401
        forged = await sb.http.get("/admin", headers={"Cookie": "cb_admin=eyJzaWQiOiJ4In0.c2ln"})
        assert forged.status_code == 303


async def test_sign_in_sets_a_strict_http_only_cookie_and_sign_out_revokes_it(
    tmp_path: Path,
) -> None:
    """The session cookie is HttpOnly and SameSite=Strict; after sign-out it opens nothing."""
    async with admin_sandbox(tmp_path) as sb:
        page = await sb.http.get("/admin/login")
        assert page.status_code == 200
        assert "default-src 'none'" in page.headers["content-security-policy"]
        assert page.headers["x-frame-options"] == "DENY"
        response = await sb.http.post(
            "/admin/login", data={"csrf": csrf_of(page.text), "password": PASSWORD}
        )
        assert response.status_code == 303 and response.headers["location"] == "/admin"
        cookie = next(
            v
            for k, v in response.headers.multi_items()
            if k == "set-cookie" and v.startswith("cb_admin=")
        )
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/admin" in cookie
        assert "Secure" not in cookie  # the sandbox is plain http on loopback
        stolen = sb.http.cookies.get("cb_admin")
        assert stolen
        home = await sb.http.get("/admin")
        assert home.status_code == 200 and "Calls" in home.text
        out = await sb.http.post("/admin/logout", data={"csrf": csrf_of(home.text)})
        assert out.status_code == 303
        async with httpx.AsyncClient(base_url=sb.base_url) as thief:
            replay = await thief.get("/admin", headers={"Cookie": f"cb_admin={stolen}"})
        assert replay.status_code == 303


async def test_forms_without_the_csrf_token_are_refused(tmp_path: Path) -> None:
    """Login, logout and reveal refuse a missing or foreign CSRF token with 403."""
    async with admin_sandbox(tmp_path) as sb:
        await sb.http.get("/admin/login")
        no_token = await sb.http.post("/admin/login", data={"password": PASSWORD})
        assert no_token.status_code == 403
        assert "cb_admin=" not in no_token.headers.get("set-cookie", "")
        async with signed_in(sb) as client:
            assert (await client.post("/admin/logout", data={"csrf": "x"})).status_code == 403
            reveal = await client.post("/admin/calls/call_x/reveal", data={})
            assert reveal.status_code == 403
            assert (await client.get("/admin")).status_code == 200  # still signed in


async def test_failed_logins_are_rate_limited_per_address(tmp_path: Path) -> None:
    """After five wrong passwords from one address the sixth try, even the right one, is 429."""
    async with admin_sandbox(tmp_path) as sb:
        page = await sb.http.get("/admin/login")
        token = csrf_of(page.text)
        for _ in range(5):
            wrong = await sb.http.post("/admin/login", data={"csrf": token, "password": "nope"})
            assert wrong.status_code == 401
            assert "That password is not right." in wrong.text
        blocked = await sb.http.post("/admin/login", data={"csrf": token, "password": PASSWORD})
        assert blocked.status_code == 429
        assert int(blocked.headers["retry-after"]) > 0
        assert "Too many failed sign-ins" in blocked.text


async def test_login_is_off_without_a_password(tmp_path: Path) -> None:
    """With no CALLBRIDGE_ADMIN_PASSWORD the login page says how to turn it on; nothing opens."""
    async with running_sandbox(tmp_path=tmp_path) as sb:
        page = await sb.http.get("/admin/login")
        assert "CALLBRIDGE_ADMIN_PASSWORD" in page.text and 'name="password"' not in page.text


async def test_numbers_are_masked_until_revealed_and_the_reveal_is_logged(tmp_path: Path) -> None:
    """List and call page show the number masked; the reveal POST shows it and logs who asked,
    without the number."""
    async with admin_sandbox(tmp_path) as sb:
        placed = await finished_call(sb, name="Ada")
        async with signed_in(sb) as client:
            listing = await client.get("/admin")
            assert placed["call_id"] in listing.text and VISITOR not in listing.text
            assert "0143" in listing.text
            rows = await client.get("/admin/calls/rows", params={"number": "0143"})
            assert placed["call_id"] in rows.text and VISITOR not in rows.text
            page = await client.get(f"/admin/calls/{placed['call_id']}")
            assert page.status_code == 200 and VISITOR not in page.text
            with info_logs() as logs:
                shown = await client.post(
                    f"/admin/calls/{placed['call_id']}/reveal", data={"csrf": csrf_of(page.text)}
                )
            assert shown.status_code == 200 and VISITOR in shown.text
            reveal_logs = [e for e in logs if e["event"] == "number_revealed"]
            assert reveal_logs and reveal_logs[0]["call_id"] == placed["call_id"]
            assert VISITOR not in str(logs)


async def test_settings_page_masks_secrets(tmp_path: Path) -> None:
    """The settings page names every setting but shows no secret and no full phone number."""
    env = {
        "TWILIO_AUTH_TOKEN": "f" * 32,
        "ELEVENLABS_API_KEY": "sk_" + "e" * 40,
        "TARGET_PHONE_NUMBER": "+12025550199",
        "CALLBRIDGE_SECRET_KEY": "k" * 40,
    }
    async with admin_sandbox(tmp_path, env) as sb:
        async with signed_in(sb) as client:
            page = await client.get("/admin/settings")
        assert page.status_code == 200
        for secret in (PASSWORD, TOKEN, "f" * 32, "e" * 40, "k" * 40, "+12025550199"):
            assert secret not in page.text
        assert "TWILIO_AUTH_TOKEN" in page.text and "CALLBRIDGE_RETENTION_DAYS" in page.text
        assert "0199" in page.text


async def test_static_files_are_served_and_nothing_else(tmp_path: Path) -> None:
    """The admin CSS and JS are served; other names under /admin/static are 404."""
    async with admin_sandbox(tmp_path) as sb:
        css = await sb.http.get("/admin/static/admin.css")
        assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
        assert (await sb.http.get("/admin/static/admin.js")).status_code == 200
        for name in ("../admin.py", "base.html", "x.css"):
            response = await sb.http.get(f"/admin/static/{name}")
            assert response.status_code == 404, name


async def test_next_cannot_send_the_operator_off_site(tmp_path: Path) -> None:
    """After sign-in, a ``next`` that is not an /admin path lands on /admin."""
    async with admin_sandbox(tmp_path) as sb:
        page = await sb.http.get("/admin/login")
        response = await sb.http.post(
            "/admin/login",
            data={"csrf": csrf_of(page.text), "password": PASSWORD, "next": "//evil.example/x"},
        )
        assert response.headers["location"] == "/admin"
