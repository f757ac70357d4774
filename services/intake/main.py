"""Intake: agency systems and portals submit dossiers here (REST, OpenAPI 3.1)."""

from __future__ import annotations

from fastapi import Depends, FastAPI

from core.backlog import backlog_gate
from core.dead_letters import dead_events_router
from core.http import create_app, database_ready
from core.maintenance import writes_allowed
from services.intake.api import router
from services.intake.deps import IntakeDeps, compose
from services.intake.settings import IntakeSettings


def build_app(settings: IntakeSettings | None = None) -> FastAPI:
    return http_app(compose(settings))


def http_app(deps: IntakeDeps) -> FastAPI:
    """The HTTP application over a composed intake."""
    app = create_app(
        title="Dossier gateway — intake",
        description="Submit administrative dossiers and follow their inter-agency journey.",
        runtime=deps.runtime,
        deps=deps,
        token_verifier=deps.token_verifier,
    )
    # In maintenance, or while the pipeline is too far behind, dossiers are read as usual
    # but none is taken in (503, Retry-After).
    app.include_router(
        router,
        dependencies=[
            Depends(database_ready),
            Depends(writes_allowed),
            Depends(backlog_gate(deps.backlog)),
        ],
    )
    app.include_router(dead_events_router(), dependencies=[Depends(database_ready)])
    return app
