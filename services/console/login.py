"""Officials log in to the console with the province's OpenID provider, and out."""

from __future__ import annotations

import logging
import secrets
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from services.console import pages
from services.console.deps import Deps
from services.console.oidc import LoginFailed
from services.console.session import (
    CSRF_FIELD,
    LOGIN_COOKIE,
    SESSION_COOKIE,
    csrf_ok,
    roles_from,
    safe_next,
)
from services.console.views import current_official

log = logging.getLogger("console")
router = APIRouter()
# These answer with a redirect (or, when refused, a page saying why).
SEE_OTHER: dict[int | str, dict[str, Any]] = {303: {"description": "Redirected"}}


@router.get("/login", response_class=RedirectResponse, responses=SEE_OTHER)
async def login(deps: Deps, next: str | None = None) -> Response:
    """To the OpenID provider (303), or a page saying it cannot be reached (503)."""
    signer = deps.signer
    try:
        started = await deps.relying_party.start()
    except Exception as exc:  # the provider is down or misconfigured: say so, plainly
        log.warning("cannot reach the OpenID provider: %r", exc)
        return pages.message(503, "Không kết nối được máy chủ đăng nhập. Vui lòng thử lại.")
    answer = RedirectResponse(started.url, status_code=303)
    cookie = signer.new_login(started.state, started.nonce, started.verifier, safe_next(next))
    answer.set_cookie(
        LOGIN_COOKIE,
        cookie,
        max_age=600,
        httponly=True,
        samesite="lax",
        secure=deps.secure_cookies,
        path="/auth/",
    )
    return answer


@router.get("/auth/callback", response_class=RedirectResponse, responses=SEE_OTHER)
async def callback(request: Request, deps: Deps) -> Response:
    """Back from the provider: the session cookie, and to the page asked for first (303)."""
    settings, signer = deps.settings, deps.signer
    started = signer.login(request.cookies.get(LOGIN_COOKIE))
    state = request.query_params.get("state", "")
    code = request.query_params.get("code", "")
    if started is None or not code or not secrets.compare_digest(started["state"], state):
        return pages.message(
            400, "Phiên đăng nhập không hợp lệ hoặc đã hết hạn. Vui lòng đăng nhập lại."
        )
    try:
        claims = await deps.relying_party.finish(code, started["verifier"], started["nonce"])
    except LoginFailed as exc:
        log.warning("login refused: %s", exc)
        return pages.message(401, "Đăng nhập không thành công.")
    roles = roles_from(claims, settings.console_roles_claim)
    name = str(claims.get("name") or claims.get("preferred_username") or claims["sub"])
    answer = RedirectResponse(started["next"], status_code=303)
    answer.set_cookie(
        SESSION_COOKIE,
        signer.new_session(str(claims["sub"]), name, roles),
        max_age=settings.console_session_ttl_s,
        httponly=True,
        samesite="lax",
        secure=deps.secure_cookies,
    )
    answer.delete_cookie(LOGIN_COOKIE, path="/auth/")
    return answer


@router.post("/logout", response_class=RedirectResponse, responses=SEE_OTHER)
async def logout(request: Request) -> Response:
    # Any official may log out, operator or not; the CSRF token still has to match.
    official = current_official(request)
    form = dict(parse_qsl((await request.body()).decode(errors="replace")))
    if official is None or not csrf_ok(official, form.get(CSRF_FIELD)):
        return pages.message(403, "Yêu cầu không hợp lệ (thiếu mã chống giả mạo).")
    answer = RedirectResponse("/logged-out", status_code=303)
    answer.delete_cookie(SESSION_COOKIE)
    return answer


@router.get("/logged-out", response_class=HTMLResponse)
async def logged_out() -> Response:
    return pages.message(200, "Bạn đã đăng xuất.", link=("/login", "Đăng nhập lại"))
