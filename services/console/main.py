"""The operators' console: a small web app for the province's officials who watch the gateway.

Its own process because it holds no dossier data (every page reads routing, notify and the
services' health afresh, with the console's own client credentials), it faces officials'
browsers rather than agency systems, and it can be deployed, scaled and locked down apart
(say, on the province's internal network only) without touching the services.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import make_asgi_app
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.admission import Admission, AdmissionMiddleware
from core.auth import token_url
from core.limits import RequestLimits
from core.tokens import ServiceTokens
from services.console import pages
from services.console.oidc import LoginFailed, RelyingParty
from services.console.session import (
    CSRF_FIELD,
    LOGIN_COOKIE,
    SESSION_COOKIE,
    SessionSigner,
    csrf_ok,
    roles_from,
    safe_next,
)
from services.console.settings import ConsoleSettings
from services.console.upstream import SCOPE, Upstream
from services.console.views import current_official

log = logging.getLogger("console")
HERE = Path(__file__).resolve().parent
# No script, no style or frame from anywhere but the console itself; forms post only here.
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    # A receipt code in a URL stays on the console.
    (b"referrer-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
]


class SecurityHeaders:
    """ASGI middleware: the headers above on every answer, pages and errors alike."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)


def build_app(settings: ConsoleSettings | None = None) -> FastAPI:
    settings = settings or ConsoleSettings()
    key = settings.console_session_key
    if not key:
        log.warning("CONSOLE_SESSION_KEY is unset: a key made now signs sessions until exit")
        key = secrets.token_urlsafe(48)
    signer = SessionSigner(key, settings.console_session_ttl_s)
    relying_party = RelyingParty(
        settings.console_oidc_issuer,
        settings.console_oidc_client_id,
        settings.console_oidc_client_secret,
        settings.redirect_uri,
        settings.console_oidc_scope,
    )
    tokens = ServiceTokens(
        token_url(settings.auth_issuer),
        settings.auth_client_id,
        settings.auth_client_secret,
        SCOPE,
    )
    upstream = Upstream(settings.services, tokens, settings.console_api_timeout_s)
    secure = settings.console_public_url.startswith("https://")

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await upstream.close()

    app = FastAPI(
        title="Dossier gateway — operators' console",
        lifespan=lifespan,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.signer = signer
    app.state.upstream = upstream
    admission = Admission(settings.http_max_in_flight, settings.http_queue_budget_s)
    app.add_middleware(AdmissionMiddleware, admission=admission)
    app.add_middleware(RequestLimits, limits=settings.http_limits)
    app.add_middleware(SecurityHeaders)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.mount("/metrics", make_asgi_app())
    pages.install(app)

    @app.get("/health/live", include_in_schema=False)
    @app.get("/health/ready", include_in_schema=False)
    async def health() -> dict[str, str]:
        # Nothing of its own to be unready about: each page says which service it missed.
        return {"status": "ok"}

    @app.get("/login")
    async def login(next: str | None = None) -> Response:
        try:
            started = await relying_party.start()
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
            secure=secure,
            path="/auth/",
        )
        return answer

    @app.get("/auth/callback")
    async def callback(request: Request) -> Response:
        started = signer.login(request.cookies.get(LOGIN_COOKIE))
        state = request.query_params.get("state", "")
        code = request.query_params.get("code", "")
        if started is None or not code or not secrets.compare_digest(started["state"], state):
            return pages.message(
                400, "Phiên đăng nhập không hợp lệ hoặc đã hết hạn. Vui lòng đăng nhập lại."
            )
        try:
            claims = await relying_party.finish(code, started["verifier"], started["nonce"])
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
            secure=secure,
        )
        answer.delete_cookie(LOGIN_COOKIE, path="/auth/")
        return answer

    @app.post("/logout")
    async def logout(request: Request) -> Response:
        # Any official may log out, operator or not; the CSRF token still has to match.
        official = current_official(request)
        form = dict(parse_qsl((await request.body()).decode(errors="replace")))
        if official is None or not csrf_ok(official, form.get(CSRF_FIELD)):
            return pages.message(403, "Yêu cầu không hợp lệ (thiếu mã chống giả mạo).")
        answer = RedirectResponse("/logged-out", status_code=303)
        answer.delete_cookie(SESSION_COOKIE)
        return answer

    @app.get("/logged-out", response_class=HTMLResponse)
    async def logged_out() -> Response:
        return pages.message(200, "Bạn đã đăng xuất.", link=("/login", "Đăng nhập lại"))

    return app
