"""The operators' console: a small web app for the province's officials who watch the gateway.

Its own process because it holds no dossier data (every page reads routing, notify and the
services' health afresh, with the console's own client credentials), it faces officials'
browsers rather than agency systems, and it can be deployed, scaled and locked down apart
(say, on the province's internal network only) without touching the services.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from prometheus_client import make_asgi_app
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.admission import Admission, AdmissionMiddleware
from core.deps import install
from core.limits import RequestLimits
from services.console import pages
from services.console.deps import ConsoleDeps, compose
from services.console.login import router as login_router
from services.console.settings import ConsoleSettings

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
    return http_app(compose(settings))


def http_app(deps: ConsoleDeps) -> FastAPI:
    """The console's web application over its composition."""
    settings = deps.settings

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await deps.upstream.close()

    app = FastAPI(
        title="Dossier gateway — operators' console",
        lifespan=lifespan,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    install(app, deps=deps)
    admission = Admission(settings.http_max_in_flight, settings.http_queue_budget_s)
    app.add_middleware(AdmissionMiddleware, admission=admission)
    app.add_middleware(RequestLimits, limits=settings.http_limits)
    app.add_middleware(SecurityHeaders)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.mount("/metrics", make_asgi_app())
    pages.install(app)

    @app.get("/health/live", include_in_schema=False, response_model=dict[str, str])
    @app.get("/health/ready", include_in_schema=False, response_model=dict[str, str])
    async def health() -> dict[str, str]:
        # Nothing of its own to be unready about: each page says which service it missed.
        return {"status": "ok"}

    app.include_router(login_router)
    return app
