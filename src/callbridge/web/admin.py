"""The operator's doors: the ``/admin`` pages and the ``/api/admin`` JSON API.

Pages (server-rendered, Jinja2 templates in ``templates/admin/``, CSS and JS in
``static/admin/``, nothing from a CDN, a strict Content-Security-Policy):

- ``/admin/login`` (GET form, POST sign-in), ``POST /admin/logout``;
- ``/admin`` — the call list, newest first, filtered by status or outcome, day and
  number; ``static/admin/admin.js`` re-reads ``/admin/calls/rows`` (an HTML fragment)
  when ``/admin/calls/stream`` (Server-Sent Events of every call's changes) says
  something changed, and polls slowly only while that stream is down. Times are
  ``<time>`` elements the script shows in the operator's time zone (UTC on hover);
- ``/admin/calls/{id}`` — one call; ``POST /admin/calls/{id}/reveal`` shows its number;
- ``/admin/overview`` — charts drawn as SVG on the server;
- ``/admin/dnc`` (``POST`` adds or removes a number: CSRF-checked, audited) and
  ``/admin/settings`` (the abuse limits and quiet hours admission enforces).

API (``Authorization: Bearer $CALLBRIDGE_ADMIN_TOKEN``): ``GET /api/admin/calls``,
``GET /api/admin/calls/{call_id}``, ``GET /api/admin/calls/{call_id}/live`` (statuses
and transcript turns as they happen, for ``callbridge call``; open without a token only
in a sandbox that has none), ``GET /api/admin/overview`` (today's spend) and
``POST /api/admin/calls/self-test`` (a test call to ``TARGET_PHONE_NUMBER``, for
``callbridge call --self-test``). Routes translate; the work is
:class:`~callbridge.services.operator.OperatorService`'s.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlencode

import jinja2
import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from fastapi.security import HTTPBearer
from markupsafe import Markup
from pydantic import BaseModel, Field

from callbridge.adapters.db.queries import CallFilter
from callbridge.bootstrap import Container
from callbridge.domain.call import LISTED_STATUSES
from callbridge.domain.price import format_price
from callbridge.domain.privacy import mask_number
from callbridge.errors import (
    AuthRejected,
    CallbridgeError,
    ConfigError,
    Conflict,
    NotFound,
    PolicyRejected,
    ValidationFailed,
)
from callbridge.services.admin_auth import COOKIE, PRE_COOKIE, AdminSession
from callbridge.services.live_feed import CALLS_CHANNEL
from callbridge.services.operator import (
    PolicyInForce,
    call_summary,
    detail_view,
    settings_view,
    summaries,
)
from callbridge.services.self_test import place_self_test
from callbridge.web.admin_charts import bar_chart, day_chart, rate_chart
from callbridge.web.api_calls import _with_keepalive
from callbridge.web.requests import client_ip, read_body

_HERE = Path(__file__).resolve().parent
_TEMPLATES = _HERE / "templates" / "admin"
_STATIC = _HERE / "static" / "admin"
_STATIC_FILES = {"admin.css": "text/css", "admin.js": "text/javascript"}
_CSP = (
    "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_PAGE_HEADERS = {
    "Content-Security-Policy": _CSP,
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}
_MAX_FORM = 4096
_STATUSES = list(LISTED_STATUSES)


# The API's documented shapes ------------------------------------------------------------


class CallSummaryOut(BaseModel):
    """One call in a list (the number masked)."""

    call_id: str
    to: str
    status: str
    mode: str
    created_at: str
    answered_at: str | None
    ended_at: str | None
    duration_s: int | None
    price: str | None
    price_unit: str | None
    answered_by: str | None
    amd_duration_ms: int | None = None
    """How long Twilio's answering machine detection took to give ``answered_by``."""
    message_left: bool | None = None
    """Whether a message was left on an answering machine (None: no machine answered)."""
    failure_code: str | None
    failure_reason: str | None
    provider_error_code: int | None
    test: bool = Field(False, description="Placed by `callbridge call --self-test`.")
    scheduled_for: str | None = Field(None, description="Call me later: when it is due (UTC).")
    retry_of: str | None = Field(None, description="The call this one retries, if any.")
    attempt: int = Field(1, description="1 for a first call, 2 for its first retry, …")


class CallListOut(BaseModel):
    """Calls, newest first."""

    calls: list[CallSummaryOut]


class EventOut(BaseModel):
    """One entry of the status timeline."""

    at: str
    source: str
    status: str
    sequence_number: int | None
    detail: dict[str, Any]


class TurnOut(BaseModel):
    """One transcript turn; ``heard_text`` is what the callee heard before barging in."""

    at: str
    role: str
    text: str
    heard_text: str | None
    interrupted: bool


class ContextOut(BaseModel):
    """The web chat's context the agent received."""

    visitor_name: str | None
    reason: str | None
    summary: str | None
    conversation_id: str | None


class CallDetailOut(CallSummaryOut):
    """A call in full."""

    call_sid: str | None
    dialled: str
    consent: str | None
    agent_conversation_id: str | None
    context: ContextOut
    timeline: list[EventOut]
    transcript: list[TurnOut]
    analysis: Any


_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="AdminToken",
    description="`Authorization: Bearer $CALLBRIDGE_ADMIN_TOKEN`",
)
_API_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or wrong token"},
    403: {"description": "The admin API is off (no CALLBRIDGE_ADMIN_TOKEN)"},
}


# Formatting for the templates -----------------------------------------------------------


def _fmt_dt(value: datetime | str | None) -> str:
    if value is None:
        return "—"
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    whole = round(seconds)
    if whole < 60:
        return f"{seconds:.1f} s" if seconds < 10 and seconds != whole else f"{whole} s"
    return f"{whole // 60} min {whole % 60:02d} s"


def _fmt_money(value: Decimal | str | None, unit: str | None = None) -> str:
    return format_price(value, unit) or "—"


def _fmt_when(value: datetime | str | None) -> Markup:
    """A ``<time>`` the page's script shows in the operator's own time zone (UTC on hover);
    without the script it reads as UTC."""
    if value is None:
        return Markup("—")
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    utc = value.astimezone(UTC)
    text = utc.strftime("%Y-%m-%d %H:%M:%S") + " UTC"
    return Markup('<time datetime="{}" title="{}" class="when">{}</time>').format(
        utc.isoformat(), text, text
    )


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(_TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["dt"] = _fmt_dt
    env.filters["duration"] = _fmt_duration
    env.filters["money"] = _fmt_money
    env.filters["when"] = _fmt_when
    env.filters["pretty"] = lambda v: json.dumps(v, indent=2, ensure_ascii=False, sort_keys=True)
    return env


def _since_utc(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _day(value: str | None) -> date | None:
    try:
        return date.fromisoformat(value) if value else None
    except ValueError:
        return None


def _page_filter(status: str | None, day: str | None, number: str | None) -> CallFilter:
    on = _day(day)
    start = datetime.combine(on, datetime.min.time(), UTC) if on else None
    return CallFilter(
        status=status if status in _STATUSES else None,
        since=start,
        until=start + timedelta(days=1) if start else None,
        number=(number or "").strip()[:32] or None,
        limit=200,
    )


def build_admin_router(container: Container) -> APIRouter:
    """The operator's pages and API, bound to ``container``."""
    operator = container.operator.service
    settings = container.settings
    auth = container.operator.admin_auth
    env = _environment()
    router = APIRouter()

    def render(
        name: str,
        request: Request,
        session: AdminSession | None,
        http_status: int = 200,
        **context: Any,
    ) -> HTMLResponse:
        page = env.get_template(name).render(
            site_name=settings.site_name,
            sandbox=container.sandbox is not None,
            draining=container.draining,
            path=request.url.path,
            csrf=auth.csrf_for(session.sid) if session else "",
            signed_in=session is not None,
            **context,
        )
        return HTMLResponse(page, status_code=http_status, headers=_PAGE_HEADERS)

    async def session_of(request: Request) -> AdminSession | None:
        return await auth.session_of(request.cookies.get(COOKIE))

    def to_login(request: Request) -> RedirectResponse:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(
            "/admin/login?" + urlencode({"next": target}), status_code=303, headers=_PAGE_HEADERS
        )

    async def form_of(request: Request) -> dict[str, str]:
        raw = await read_body(request, _MAX_FORM)
        pairs = parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True)
        return dict(pairs)

    def set_cookie(response: Response, name: str, value: str, max_age: int) -> None:
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            path="/admin",
            httponly=True,
            samesite="strict",
            secure=auth.secure_cookie,
        )

    # Static files -----------------------------------------------------------------------

    @router.get("/admin/static/{name}", include_in_schema=False)
    async def static(name: str) -> Response:
        media = _STATIC_FILES.get(name)
        if media is None:
            raise NotFound("No such file.")
        return FileResponse(
            _STATIC / name, media_type=media, headers={"Cache-Control": "public, max-age=300"}
        )

    # Sign-in ------------------------------------------------------------------------------

    def login_page(
        request: Request, *, error: str | None = None, status: int = 200, next_: str = "/admin"
    ) -> HTMLResponse:
        pre = request.cookies.get(PRE_COOKIE) or ""
        fresh = not pre or len(pre) > 64
        if fresh:
            import secrets

            pre = secrets.token_urlsafe(24)
        response = render(
            "login.html",
            request,
            None,
            http_status=status,
            error=error,
            login_csrf=auth.csrf_for("login|" + pre),
            login_enabled=auth.login_enabled,
            next=next_ if next_.startswith("/admin") else "/admin",
        )
        if fresh:
            set_cookie(response, PRE_COOKIE, pre, 3600)
        return response

    @router.get("/admin/login", include_in_schema=False)
    async def login_form(request: Request, next: str = "/admin") -> Response:  # noqa: A002
        if await session_of(request) is not None:
            return RedirectResponse("/admin", status_code=303)
        return login_page(request, next_=next)

    @router.post("/admin/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        form = await form_of(request)
        next_ = form.get("next", "/admin")
        pre = request.cookies.get(PRE_COOKIE)
        ip = client_ip(request, settings.trusted_proxies) or "unknown"
        try:
            auth.check_csrf("login|" + pre if pre else None, form.get("csrf"))
            await auth.check_password(form.get("password", ""), ip)
        except PolicyRejected as exc:
            refused = login_page(request, error=exc.message, status=429, next_=next_)
            refused.headers["Retry-After"] = str(exc.retry_after or 60)
            return refused
        except AuthRejected as exc:
            return login_page(request, error=exc.message, status=exc.http_status, next_=next_)
        session, cookie = auth.new_session()
        target = next_ if next_.startswith("/admin") and not next_.startswith("//") else "/admin"
        response = RedirectResponse(target, status_code=303, headers=_PAGE_HEADERS)
        lifetime = session.expires - int(datetime.now(UTC).timestamp())
        set_cookie(response, COOKIE, cookie, max(1, lifetime))
        response.delete_cookie(PRE_COOKIE, path="/admin")
        return response

    @router.post("/admin/logout", include_in_schema=False)
    async def logout(request: Request) -> Response:
        session = await session_of(request)
        if session is not None:
            form = await form_of(request)
            auth.check_csrf(session.sid, form.get("csrf"))
            await auth.revoke(session)
        response = RedirectResponse("/admin/login", status_code=303, headers=_PAGE_HEADERS)
        response.delete_cookie(COOKIE, path="/admin")
        return response

    # The call list ------------------------------------------------------------------------

    @router.get("/admin", include_in_schema=False)
    async def call_list(
        request: Request,
        status: str | None = None,
        day: str | None = None,
        number: str | None = None,
    ) -> Response:
        session = await session_of(request)
        if session is None:
            return to_login(request)
        calls = await operator.calls(_page_filter(status, day, number))
        given = (("status", status), ("day", day), ("number", number))
        query = urlencode({k: v for k, v in given if v})
        return render(
            "calls.html",
            request,
            session,
            calls=summaries(calls),
            statuses=_STATUSES,
            status=status or "",
            day=day or "",
            number=number or "",
            query=query,
            now=datetime.now(UTC),
        )

    @router.get("/admin/calls/rows", include_in_schema=False)
    async def call_rows(
        request: Request,
        status: str | None = None,
        day: str | None = None,
        number: str | None = None,
    ) -> Response:
        session = await session_of(request)
        if session is None:
            return JSONResponse({"signed_in": False}, status_code=401, headers=_PAGE_HEADERS)
        calls = await operator.calls(_page_filter(status, day, number))
        return render("_rows.html", request, session, calls=summaries(calls))

    @router.get("/admin/calls/stream", include_in_schema=False)
    async def call_changes(request: Request) -> Response:
        """Server-Sent Events: one ``change`` per status change of any call, for the list."""
        session = await session_of(request)
        if session is None:
            return JSONResponse({"signed_in": False}, status_code=401, headers=_PAGE_HEADERS)
        changes = await container.events.subscribe(CALLS_CHANNEL)

        async def announced() -> AsyncIterator[dict[str, object]]:
            async for change in changes:
                yield dict(change)

        async def stream() -> AsyncIterator[bytes]:
            yield b"retry: 3000\n\n"
            try:
                async for change in _with_keepalive(announced()):
                    if change is None:
                        yield b": keep-alive\n\n"
                        continue
                    yield b"event: change\ndata: " + orjson.dumps(change) + b"\n\n"
            finally:
                await changes.aclose()

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={**_PAGE_HEADERS, "X-Accel-Buffering": "no"},
        )

    # One call -----------------------------------------------------------------------------

    async def call_page(
        request: Request, session: AdminSession, call_id: str, revealed: str | None
    ) -> HTMLResponse:
        try:
            detail = await operator.call(call_id)
        except NotFound:
            return render("missing.html", request, session, http_status=404, call_id=call_id)
        view = detail_view(detail)
        start = detail.call.created_at
        timeline = [
            {**e, "offset": (datetime.fromisoformat(e["at"]) - start).total_seconds()}
            for e in view["timeline"]
        ]
        analysis = view["analysis"]
        return render(
            "call.html",
            request,
            session,
            call=view,
            number=revealed or mask_number(detail.call.to_number),
            revealed=revealed is not None,
            timeline=timeline,
            transcript=view["transcript"],
            analysis=analysis,
            analysis_pairs=_analysis_pairs(analysis),
            context_items=[
                (label, view["context"][key])
                for label, key in (
                    ("Visitor's name", "visitor_name"),
                    ("Reason", "reason"),
                    ("Chat summary", "summary"),
                    ("Web conversation", "conversation_id"),
                )
                if view["context"][key]
            ],
        )

    @router.get("/admin/calls/{call_id}", include_in_schema=False)
    async def call_detail(request: Request, call_id: str) -> Response:
        session = await session_of(request)
        if session is None:
            return to_login(request)
        return await call_page(request, session, call_id, None)

    @router.post("/admin/calls/{call_id}/reveal", include_in_schema=False)
    async def reveal(request: Request, call_id: str) -> Response:
        session = await session_of(request)
        if session is None:
            return to_login(request)
        form = await form_of(request)
        auth.check_csrf(session.sid, form.get("csrf"))
        try:
            number = await operator.reveal(call_id, who=session.who)
        except NotFound:
            return render("missing.html", request, session, http_status=404, call_id=call_id)
        return await call_page(request, session, call_id, number)

    # Scheduled calls ---------------------------------------------------------------------

    @router.get("/admin/scheduled", include_in_schema=False)
    async def scheduled(request: Request, all: str | None = None) -> Response:  # noqa: A002
        session = await session_of(request)
        if session is None:
            return to_login(request)
        within = None if all else timedelta(hours=24)
        calls = await container.jobs.scheduler.upcoming(within)
        return render(
            "scheduled.html", request, session, calls=summaries(calls), all=bool(all), message=""
        )

    @router.post("/admin/calls/{call_id}/cancel", include_in_schema=False)
    async def cancel_scheduled(request: Request, call_id: str) -> Response:
        session = await session_of(request)
        if session is None:
            return to_login(request)
        form = await form_of(request)
        auth.check_csrf(session.sid, form.get("csrf"))
        await container.jobs.scheduler.cancel(call_id, by=session.who)
        back = "/admin/scheduled" if form.get("back") == "/admin/scheduled" else "/admin"
        return RedirectResponse(back, status_code=303, headers=_PAGE_HEADERS)

    # Overview, do-not-call, settings ------------------------------------------------------

    @router.get("/admin/overview", include_in_schema=False)
    async def overview(request: Request) -> Response:
        session = await session_of(request)
        if session is None:
            return to_login(request)
        data = await operator.overview(days=14)
        return render(
            "overview.html",
            request,
            session,
            o=data,
            calls_chart=day_chart(data.days),
            rate_chart=rate_chart(data.days),
            refusals_chart=bar_chart(list(data.refusals.items())),
            status_chart=bar_chart(list(data.statuses.items())),
            live_refusals=operator.live_refusals(),
            spend=await operator.spend_today(),
        )

    @router.get("/admin/dnc", include_in_schema=False)
    async def dnc(request: Request) -> Response:
        session = await session_of(request)
        if session is None:
            return to_login(request)
        return await dnc_page(request, session)

    async def dnc_page(
        request: Request,
        session: AdminSession,
        *,
        done: str | None = None,
        error: str | None = None,
        http_status: int = 200,
    ) -> HTMLResponse:
        return render(
            "dnc.html",
            request,
            session,
            http_status=http_status,
            entries=await operator.do_not_call(),
            changes=await operator.do_not_call_changes(),
            done=done,
            error=error,
        )

    @router.post("/admin/dnc", include_in_schema=False)
    async def dnc_change(request: Request) -> Response:
        session = await session_of(request)
        if session is None:
            return to_login(request)
        form = await form_of(request)
        auth.check_csrf(session.sid, form.get("csrf"))
        add = form.get("action") == "add"
        if not add and form.get("number_hash"):
            removed = await operator.remove_do_not_call_entry(form["number_hash"], who=session.who)
            done = f"{removed} is off the list." if removed else "That entry was already gone."
            return await dnc_page(request, session, done=done)
        try:
            masked, changed = await operator.change_do_not_call(
                form.get("number", ""), add=add, who=session.who
            )
        except (ValidationFailed, ConfigError) as exc:
            return await dnc_page(request, session, error=exc.message, http_status=422)
        if add:
            done = f"{masked} is on the list." if changed else f"{masked} was already on it."
        else:
            done = f"{masked} is off the list." if changed else f"{masked} was not on it."
        return await dnc_page(request, session, done=done)

    @router.get("/admin/settings", include_in_schema=False)
    async def settings_page(request: Request) -> Response:
        session = await session_of(request)
        if session is None:
            return to_login(request)
        policy = PolicyInForce(
            limits=container.admission.limits,
            quiet_hours=container.admission.quiet_hours,
            sandbox=container.sandbox is not None,
        )
        return render("settings.html", request, session, items=settings_view(settings, policy))

    # The JSON API -------------------------------------------------------------------------

    def api_auth(request: Request, _doc: Any = Depends(_bearer)) -> None:  # noqa: B008
        auth.check_bearer(request.headers.get("authorization"))

    @router.get(
        "/api/admin/calls",
        tags=["admin"],
        summary="Calls, newest first (numbers masked)",
        response_model=CallListOut,
        responses=_API_ERRORS,
        dependencies=[Depends(api_auth)],
    )
    async def api_calls(
        status: Annotated[str | None, Query(description="Only calls with this status.")] = None,
        since: Annotated[
            str | None, Query(description="Only calls created at or after (ISO 8601).")
        ] = None,
        until: Annotated[
            str | None, Query(description="Only calls created before (ISO 8601).")
        ] = None,
        number: Annotated[
            str | None, Query(description="A full number, or its last digits.", max_length=32)
        ] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> JSONResponse:
        calls = await operator.calls(
            CallFilter(
                status=status,
                since=_since_utc(since),
                until=_since_utc(until),
                number=number,
                limit=limit,
            )
        )
        return JSONResponse({"calls": [call_summary(c) for c in calls]})

    @router.get(
        "/api/admin/calls/{call_id}",
        tags=["admin"],
        summary="A call: timeline, transcript, the web chat's context, analysis",
        response_model=CallDetailOut,
        responses={**_API_ERRORS, 404: {"description": "No such call"}},
        dependencies=[Depends(api_auth)],
    )
    async def api_call(call_id: str) -> JSONResponse:
        return JSONResponse(detail_view(await operator.call(call_id)))

    @router.get(
        "/api/admin/calls/{call_id}/live",
        tags=["admin"],
        summary="Follow a call live: statuses and transcript turns (Server-Sent Events)",
        responses={**_API_ERRORS, 404: {"description": "No such call"}},
    )
    async def api_call_live(
        request: Request,
        call_id: str,
        _doc: Any = Depends(_bearer),  # noqa: B008
    ) -> StreamingResponse:
        """``status`` events (the statuses already passed first) and ``turn`` events (what
        the agent says and the callee said), ending after a terminal status.

        In the sandbox with no ``CALLBRIDGE_ADMIN_TOKEN``, no token is asked for: its calls
        reach only the emulated callee, whose words are the stand-in transcript that the
        sandbox phone page shows anyway, and ``callbridge call`` can then show the turns
        right after ``make demo``.
        """
        if container.sandbox is None or settings.admin_token is not None:
            auth.check_bearer(request.headers.get("authorization"))
        await operator.call(call_id)  # 404 before the stream starts
        live = container.operator.live

        async def stream() -> AsyncIterator[bytes]:
            yield b"retry: 2000\n\n"
            try:
                async for item in _with_keepalive(live.follow(call_id)):
                    if item is None:
                        yield b": keep-alive\n\n"
                        continue
                    kind = str(item.get("kind", "status"))
                    yield f"event: {kind}\ndata: ".encode() + orjson.dumps(item) + b"\n\n"
            except CallbridgeError:
                return

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    @router.post(
        "/api/admin/calls/{call_id}/cancel",
        tags=["admin"],
        summary="Cancel a scheduled call and its pending retries",
        responses={**_API_ERRORS, 409: {"description": "The call is not scheduled"}},
        dependencies=[Depends(api_auth)],
    )
    async def api_cancel(call_id: str) -> JSONResponse:
        cancelled = await container.jobs.scheduler.cancel(call_id, by="operator:api")
        if not cancelled:
            raise Conflict("That call is no longer scheduled, so it can't be cancelled.")
        return JSONResponse({"success": True, "cancelled": [c.id for c in cancelled]})

    @router.post(
        "/api/admin/calls/self-test",
        tags=["admin"],
        summary="Place a test call to TARGET_PHONE_NUMBER (the abuse policy applies)",
        responses={**_API_ERRORS, 409: {"description": "TARGET_PHONE_NUMBER is not set"}},
        dependencies=[Depends(api_auth)],
    )
    async def api_self_test() -> JSONResponse:
        placed = await place_self_test(container.placing, container.settings.target_phone_number)
        return JSONResponse(dict(placed.body), status_code=placed.http_status)

    @router.get(
        "/api/admin/overview",
        tags=["admin"],
        summary="Today's spend (settled and still reserved) against the daily cap",
        responses=_API_ERRORS,
        dependencies=[Depends(api_auth)],
    )
    async def api_overview() -> JSONResponse:
        return JSONResponse({"spend_today": (await operator.spend_today()).as_json()})

    return router


def _analysis_pairs(analysis: Any) -> list[tuple[str, str]]:
    """Readable top-level facts of a post-call analysis (the rest stays in the raw JSON)."""
    if not isinstance(analysis, Mapping):
        return []
    pairs: list[tuple[str, str]] = []
    for key, value in analysis.items():
        label = str(key).replace("_", " ").capitalize()
        if isinstance(value, str | int | float | bool):
            pairs.append((label, str(value)))
        elif isinstance(value, Mapping) and all(
            isinstance(v, str | int | float | bool) for v in value.values()
        ):
            pairs.append((label, ", ".join(f"{k}: {v}" for k, v in value.items())))
    return pairs[:12]
