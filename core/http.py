"""The FastAPI application every HTTP service starts from.

Problem details, liveness/readiness, maintenance mode, Prometheus /metrics (with each
route's requests and latency), one SERVER span per request, and the
request limits of the settings (core.limits): an oversized body or over-deep JSON is refused
before any route sees it.
ASGI receive/send sub-spans are excluded: they cost ~17 µs each and say nothing an
operator needs; health and metrics scrapes are not traced at all.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from prometheus_client import make_asgi_app

from core.admission import Admission, AdmissionMiddleware
from core.auth import SCOPES, TokenVerifier, token_url
from core.deps import install
from core.http_metrics import RequestMetrics
from core.limits import RequestLimits
from core.maintenance import maintenance_router
from core.openapi import install_openapi, operation_id
from core.problems import Problem, install_problem_handlers
from core.runtime import Runtime, runtime_of
from core.telemetry import redact_request_span

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


def create_app(
    *,
    title: str,
    description: str,
    runtime: Runtime,
    deps: object = None,
    token_verifier: TokenVerifier | None = None,
    lifespan: Lifespan | None = None,
    security_schemes: Mapping[str, Any] | None = None,
) -> FastAPI:
    """`deps`: the service's composition (its deps.py), which its routes reach through
    core.deps; `token_verifier`: what checks agency tokens (core.auth's dependencies);
    `security_schemes`: those of the service's own beside the agency token's."""
    app = FastAPI(
        title=title,
        description=description,
        version="1.0.0",
        lifespan=lifespan or runtime_lifespan(runtime),
        generate_unique_id_function=operation_id,
    )
    install(
        app,
        deps=deps,
        runtime=runtime,
        token_verifier=token_verifier,
        maintenance=runtime.maintenance,
    )
    install_problem_handlers(app)
    settings = runtime.settings
    install_openapi(
        app,
        server_url=settings.openapi_server_url,
        token_url=token_url(settings.auth_issuer),
        scopes=SCOPES,
        extra_schemes=security_schemes,
    )
    admission = Admission(settings.http_max_in_flight, settings.http_queue_budget_s)
    app.add_middleware(AdmissionMiddleware, admission=admission)
    # Added last, so it runs first: an oversized or over-deep body is refused without taking
    # a place, and a place is taken only once the body has arrived (a slow client cannot
    # hold one while it trickles).
    app.add_middleware(RequestLimits, limits=settings.http_limits)
    # Outermost: refusals by the limits and admission are counted and timed too.
    app.add_middleware(RequestMetrics)

    @app.get("/health/live", tags=["health"], include_in_schema=False)
    async def live() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/health/ready", tags=["health"], include_in_schema=False)
    async def ready() -> JSONResponse:
        checks = await runtime.readiness()
        checks["admission"] = "saturated: shedding requests" if admission.saturated else "ok"
        ok = all(v == "ok" for v in checks.values())
        # Still 200 in maintenance: load balancers keep sending reads, which are answered.
        maintenance = await runtime.maintenance.state()
        body: dict[str, Any] = {"status": "ok" if ok else "unavailable"}
        if maintenance.on:
            body["status"] = "maintenance" if ok else "unavailable"
            body["maintenance"] = {
                "reason": maintenance.reason,
                "since": maintenance.changed_at and maintenance.changed_at.isoformat(),
                "by": maintenance.changed_by,
            }
        body["checks"] = checks
        return JSONResponse(body, status_code=200 if ok else 503)

    app.include_router(maintenance_router(), dependencies=[Depends(database_ready)])

    app.mount("/metrics", make_asgi_app())
    FastAPIInstrumentor.instrument_app(
        app,
        # Token requests are not part of any dossier's journey, and a storm of them (every
        # agency's token expiring at once) would cost a span each: Prometheus counts them.
        excluded_urls="health/,metrics,oauth2/token",
        exclude_spans=["receive", "send"],
        server_request_hook=redact_request_span,
    )
    return app


async def database_ready(request: Request) -> None:
    """Route dependency: answer 503 instead of failing while the schema is being created or
    a gate of the service is closed (routing's catalogue not loaded yet)."""
    runtime = runtime_of(request)
    if runtime.serving:
        return
    try:
        await asyncio.wait_for(runtime.until_serving(), runtime.settings.schema_wait_s)
    except TimeoutError:
        raise Problem(
            503,
            "service-unavailable",
            "Service temporarily unavailable",
            "starting up",
            headers={"Retry-After": "2"},
        ) from None


def runtime_lifespan(runtime: Runtime) -> Lifespan:
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    return lifespan
