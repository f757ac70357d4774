"""Identity: citizens' e-ID login, population-registry reads with consent, agency tokens
(issue 3). HTTP for browsers and agency systems, gRPC for the other services."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from core.auth import Fetch, TokenVerifier, token_verifier
from core.auth_grpc import AuthInterceptor
from core.grpc import GrpcServer
from core.http import create_app
from core.runtime import Runtime
from services.identity import models
from services.identity.clients import CLIENTS_FILE, load_clients
from services.identity.keys import SigningKeys, load_signing_keys
from services.identity.oauth import AgencyTokens, oauth_router
from services.identity.settings import IdentitySettings

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# Every method of identity's gRPC services and the scope it needs ("/package.Service/Method").
GRPC_SCOPES: Mapping[str, str] = {}


def build_app(settings: IdentitySettings | None = None) -> FastAPI:
    settings = settings or IdentitySettings()
    runtime = Runtime(
        settings,
        name="identity",
        metadata=models.metadata,
        migrations=MIGRATIONS,
    )
    keys = load_signing_keys(
        settings.token_signing_key,
        settings.token_signing_key_file,
        settings.token_retired_key_file,
        required=settings.token_signing_key_required,
        grace_s=settings.access_token_ttl_s * 2,
    )
    tokens = AgencyTokens(
        issuer=settings.auth_issuer,
        audience=settings.auth_audience,
        clients=load_clients(Path(settings.agency_clients_file or CLIENTS_FILE)),
        keys=keys,
        ttl_s=settings.access_token_ttl_s,
    )
    # Like every service; tests running it in-process may give a fixed JWKS (AUTH_JWKS).
    verifier = (
        token_verifier(settings).verifier
        if settings.auth_jwks
        else TokenVerifier(
            issuer=settings.auth_issuer,
            audience=settings.auth_audience,
            fetch=_published(keys),
            leeway_s=settings.auth_leeway_s,
        )
    )
    grpc_server = GrpcServer([], [], [AuthInterceptor(verifier, GRPC_SCOPES)])

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        await grpc_server.start(settings.http_host, settings.grpc_port)
        try:
            yield
        finally:
            await grpc_server.stop()
            await runtime.stop()

    app = create_app(
        title="Dossier gateway — identity",
        description="Agency access tokens; citizens' e-ID login and consented registry reads.",
        runtime=runtime,
        lifespan=lifespan,
    )
    app.state.agency_tokens = tokens
    app.state.token_verifier = verifier
    app.include_router(oauth_router(tokens))
    return app


def _published(keys: SigningKeys) -> Fetch:
    """Identity checks tokens like every service, against what it publishes, minus the HTTP."""

    async def fetch() -> dict[str, Any]:
        return keys.public_jwks()

    return fetch
