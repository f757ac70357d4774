"""Identity: citizens' e-ID login, population-registry reads with consent, agency tokens
(issue 3). HTTP for browsers and agency systems, gRPC for the other services."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from core.grpc import GrpcServer
from core.http import create_app
from core.runtime import Runtime
from services.identity import models
from services.identity.settings import IdentitySettings

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def build_app(settings: IdentitySettings | None = None) -> FastAPI:
    settings = settings or IdentitySettings()
    runtime = Runtime(
        settings,
        name="identity",
        metadata=models.metadata,
        migrations=MIGRATIONS,
    )
    grpc_server = GrpcServer([], [])

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        await grpc_server.start(settings.http_host, settings.grpc_port)
        try:
            yield
        finally:
            await grpc_server.stop()
            await runtime.stop()

    return create_app(
        title="Dossier gateway — identity",
        description="Citizens' e-ID login and consented reads of the population registry.",
        runtime=runtime,
        lifespan=lifespan,
    )
