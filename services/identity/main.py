"""Identity: citizens' e-ID login, population-registry reads with consent, and the access
log of every read (issue 3). HTTP for citizens, gRPC for the other services."""

from __future__ import annotations

from fastapi import Depends, FastAPI

from core.http import create_app, database_ready
from services.identity.api import CITIZEN_SCHEME, router
from services.identity.deps import IdentityDeps, compose, eid_client
from services.identity.settings import IdentitySettings
from services.identity.token_api import router as token_router
from services.identity.token_contract import CLIENT_SCHEME

# eid_client: how the e-ID settings become a client (checked by tests/unit/test_eid_policy.py).
__all__ = ["build_app", "eid_client", "http_app"]


def build_app(settings: IdentitySettings | None = None) -> FastAPI:
    return http_app(compose(settings))


def http_app(deps: IdentityDeps) -> FastAPI:
    """The HTTP application over a composed identity."""
    app = create_app(
        title="Dossier gateway — identity",
        description="Agency access tokens; citizens' e-ID login, consented reads of the "
        "population registry and the log of who read what.",
        runtime=deps.runtime,
        deps=deps,
        token_verifier=deps.token_verifier,
        security_schemes={**CITIZEN_SCHEME, **CLIENT_SCHEME},
    )
    app.include_router(token_router)
    app.include_router(router, dependencies=[Depends(database_ready)])
    return app
