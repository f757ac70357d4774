"""Rendering: Jinja2 templates, Vietnamese dates and durations, and the operator check every
page goes through (a session, then the operator role; a refusal is audited)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlencode

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from core.audit import record_refusal
from core.calendar import VIETNAM
from core.deps import deps_of
from services.console.deps import ConsoleDeps, Deps
from services.console.session import CSRF_FIELD, SESSION_COOKIE, Official, csrf_ok

templates = Jinja2Templates(directory=Path(__file__).resolve().parent / "templates")


def vn_time(value: str | None) -> str:
    """An API's ISO instant as officials read it: Hà Nội time, day first."""
    if not value:
        return "—"
    instant = datetime.fromisoformat(value)
    return instant.astimezone(VIETNAM).strftime("%d/%m/%Y %H:%M:%S")


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = max(0, int(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [(days, "ngày"), (hours, "giờ"), (minutes, "phút")]
    shown = [f"{n} {unit}" for n, unit in parts if n]
    return " ".join(shown[:2]) if shown else f"{secs} giây"


templates.env.filters["vn_time"] = vn_time
templates.env.filters["duration"] = duration


def page(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, name, context, status_code=status)


class NeedLogin(Exception):
    def __init__(self, path: str) -> None:
        self.path = path


class NotOperator(Exception):
    def __init__(self, official: Official) -> None:
        self.official = official


class BadCsrf(Exception):
    pass


@dataclass(frozen=True)
class _Caller:
    """An official as core.audit names callers: the provider's subject, no agency."""

    client_id: str
    agency_code: str = ""


def current_official(request: Request) -> Official | None:
    signer = deps_of(request.app, ConsoleDeps).signer
    return signer.session(request.cookies.get(SESSION_COOKIE))


async def operator(request: Request, deps: Deps) -> Official:
    """Every page's gate: logged in, and holding the operator role."""
    official = current_official(request)
    if official is None:
        query = f"?{request.url.query}" if request.url.query else ""
        raise NeedLogin(request.url.path + query)
    settings = deps.settings
    if not official.has_role(settings.console_operator_role):
        record_refusal(
            _Caller(f"official:{official.subject}"),
            action=f"{request.method} {request.url.path}",
            target="console",
            reason=f"missing-role: {settings.console_operator_role}",
        )
        raise NotOperator(official)
    return official


Operator = Annotated[Official, Depends(operator)]


async def posted_form(request: Request, official: Operator) -> dict[str, str]:
    """A POST's urlencoded fields, once its CSRF token matched the session's."""
    body = (await request.body()).decode(errors="replace")
    form = dict(parse_qsl(body, keep_blank_values=True))
    if not csrf_ok(official, form.get(CSRF_FIELD)):
        record_refusal(
            _Caller(f"official:{official.subject}"),
            action=f"POST {request.url.path}",
            target="console",
            reason="csrf-token-missing-or-wrong",
        )
        raise BadCsrf
    return form


Form = Annotated[dict[str, str], Depends(posted_form)]


def install_errors(app: Any) -> None:
    async def need_login(request: Request, exc: Exception) -> RedirectResponse:
        assert isinstance(exc, NeedLogin)
        return RedirectResponse("/login?" + urlencode({"next": exc.path}), status_code=303)

    async def not_operator(request: Request, exc: Exception) -> HTMLResponse:
        assert isinstance(exc, NotOperator)
        return page(request, "forbidden.html", 403, official=exc.official)

    async def bad_csrf(request: Request, exc: Exception) -> HTMLResponse:
        return page(
            request,
            "message.html",
            403,
            official=current_official(request),
            text="Yêu cầu không hợp lệ (thiếu mã chống giả mạo). Vui lòng tải lại trang.",
        )

    app.add_exception_handler(NeedLogin, need_login)
    app.add_exception_handler(NotOperator, not_operator)
    app.add_exception_handler(BadCsrf, bad_csrf)
