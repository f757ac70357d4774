"""Identity: citizens' e-ID login, population-registry reads with consent, and the access
log of every read (issue 3). HTTP for citizens, gRPC for the other services."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI

from core.catalogue import load_catalogue
from core.grpc import GrpcServer
from core.http import create_app, database_ready
from core.personal_id import MIN_PSEUDONYM_KEY_BYTES
from core.runtime import Runtime
from gateway.v1 import identity_pb2, identity_pb2_grpc
from services.identity import models
from services.identity.api import router
from services.identity.citizens import Citizens
from services.identity.consents import Consents
from services.identity.eid import EidClient, RelyingParty
from services.identity.grpc_api import CitizenIdentityServicer
from services.identity.registry import RegistryClient
from services.identity.settings import IdentitySettings


def eid_client(settings: IdentitySettings) -> EidClient:
    key_file = settings.eid_client_key_file
    return EidClient(
        issuer=settings.eid_issuer,
        client_id=settings.eid_client_id,
        redirect_uri=settings.eid_redirect_uri,
        client_secret=settings.eid_client_secret.get_secret_value(),
        private_key=json.loads(Path(key_file).read_text(encoding="utf-8")) if key_file else None,
        scope=settings.eid_scope,
        algorithms=tuple(a.strip() for a in settings.eid_algorithms.split(",") if a.strip()),
        leeway_s=settings.eid_leeway_s,
    )


def pseudonym_key(settings: IdentitySettings) -> bytes:
    """Checked at start-up rather than at the first login: no key, no access log."""
    try:
        key = bytes.fromhex(settings.pseudonym_key.get_secret_value())
    except ValueError:
        key = b""
    if len(key) < MIN_PSEUDONYM_KEY_BYTES:
        raise SystemExit(
            f"PSEUDONYM_KEY must be at least {MIN_PSEUDONYM_KEY_BYTES} bytes in hex, kept "
            "secret and stable (e.g. `openssl rand -hex 32` into a secret store)"
        )
    return key


def build_app(settings: IdentitySettings | None = None) -> FastAPI:
    settings = settings or IdentitySettings()
    runtime = Runtime(settings, name="identity", metadata=models.metadata)
    key = pseudonym_key(settings)
    citizens = Citizens(
        runtime.sessions, key, settings.eid_login_ttl_s, settings.citizen_session_ttl_s
    )
    registry = RegistryClient(settings.registry_grpc_target, settings.registry_timeout_s)
    consents = Consents(runtime.sessions, load_catalogue(), registry, citizens)
    servicer = CitizenIdentityServicer(runtime.sessions, citizens, consents)
    grpc_server = GrpcServer(
        [lambda server: identity_pb2_grpc.add_CitizenIdentityServicer_to_server(servicer, server)],
        [identity_pb2.DESCRIPTOR.services_by_name["CitizenIdentity"].full_name],
    )
    relying_party = RelyingParty(eid_client(settings))

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        await grpc_server.start(settings.http_host, settings.grpc_port)
        try:
            yield
        finally:
            await grpc_server.stop()
            await relying_party.close()
            await registry.close()
            await runtime.stop()

    app = create_app(
        title="Dossier gateway — identity",
        description="Citizens' e-ID login, consented reads of the population registry and "
        "the log of who read what.",
        runtime=runtime,
        lifespan=lifespan,
    )
    app.state.sessions = runtime.sessions
    app.state.citizens = citizens
    app.state.consents = consents
    app.state.relying_party = relying_party
    app.state.cookie_secure = settings.citizen_cookie_secure
    app.include_router(router, dependencies=[Depends(database_ready)])
    return app
