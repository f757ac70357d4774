"""Routing: takes submitted dossiers across the agencies of their procedure."""

from __future__ import annotations

from fastapi import Depends, FastAPI

from core.clock import SYSTEM_CLOCK, Clock
from core.http import create_app, database_ready
from services.routing import api
from services.routing.deps import RoutingDeps, compose, install
from services.routing.settings import RoutingSettings


def build_app(settings: RoutingSettings | None = None, *, clock: Clock = SYSTEM_CLOCK) -> FastAPI:
    return application(compose(settings, clock=clock))


def application(deps: RoutingDeps) -> FastAPI:
    """The HTTP service of a composition: its runtime's lifespan, health and metrics, and
    every route of services/routing/api/, answering 503 until the schema and catalogue are."""
    app = create_app(
        title="Dossier gateway — routing",
        description="Agency systems report the outcome of the steps delivered to them.",
        runtime=deps.runtime,
    )
    install(app, deps)
    api.include(app, ready=[Depends(database_ready)])
    return app
