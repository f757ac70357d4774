"""Notify: tells citizens and agency systems what happened to a dossier, and records the
delivery status of every message."""

from __future__ import annotations

from fastapi import Depends, FastAPI

from core.auth import NOTIFICATIONS_READ, require_scope
from core.dead_letters import dead_events_router
from core.http import create_app, database_ready
from services.notify.api import router
from services.notify.deps import NotifyDeps, compose
from services.notify.settings import NotifySettings
from services.notify.webhooks_api import router as webhooks_router


def build_app(settings: NotifySettings | None = None) -> FastAPI:
    return http_app(compose(settings))


def http_app(deps: NotifyDeps) -> FastAPI:
    """The HTTP application over a composed notify."""
    app = create_app(
        title="Dossier gateway — notify",
        description="Delivery status of the messages sent to citizens and agencies; "
        "webhook subscriptions of agency systems.",
        runtime=deps.runtime,
        deps=deps,
        token_verifier=deps.token_verifier,
    )
    ready = Depends(database_ready)
    app.include_router(router, dependencies=[Depends(require_scope(NOTIFICATIONS_READ)), ready])
    app.include_router(webhooks_router, dependencies=[ready])
    app.include_router(dead_events_router(), dependencies=[ready])
    return app
