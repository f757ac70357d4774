"""The sandbox as one ASGI app: every demo agency, the mail relay, an SMS gateway, the e-ID
provider under /oidc, the population registry (gRPC, beside it), a webhook receiver and a
liveness probe."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from sandbox.agency import AgencyOffice, agency_router
from sandbox.agency_inbox import AgencyInboxServer, KafkaInbox
from sandbox.agency_ledger import AgencyLedger
from sandbox.mail import MailServer, MailStore, mail_router
from sandbox.oidc import create_oidc_app
from sandbox.oidc_models import Client
from sandbox.portal import PortalStore, portal_router
from sandbox.registry import serve_registry
from sandbox.settings import SandboxSettings
from sandbox.sms import SmsStore, sms_router
from sandbox.state import open_state
from sandbox.webhooks import WebhookStore, webhooks_router


def oidc_clients(settings: SandboxSettings) -> list[Client]:
    """The relying parties configured through SANDBOX_OIDC_CLIENT_* (citizens' e-ID login)
    and SANDBOX_OIDC_CONSOLE_* (officials' console login), if any."""
    clients = []
    if settings.oidc_client_id:
        jwks = None
        if settings.oidc_client_jwks_file:
            jwks = json.loads(Path(settings.oidc_client_jwks_file).read_text(encoding="utf-8"))
        redirect_uris = _split(settings.oidc_redirect_uris)
        secret = settings.oidc_client_secret or None
        clients.append(
            Client(settings.oidc_client_id, redirect_uris, client_secret=secret, jwks=jwks)
        )
    if settings.oidc_console_client_id:
        clients.append(
            Client(
                settings.oidc_console_client_id,
                _split(settings.oidc_console_redirect_uris),
                client_secret=settings.oidc_console_client_secret,
                people="officials",
            )
        )
    return clients


def _split(values: str) -> list[str]:
    return [v.strip() for v in values.split(",") if v.strip()]


def create_app(settings: SandboxSettings | None = None, base_url: str | None = None) -> FastAPI:
    """`base_url` is where the app is reachable, which the e-ID provider's issuer names."""
    settings = settings or SandboxSettings()
    base_url = base_url or f"http://{settings.host}:{settings.http_port}"
    # One database for every stand-in: what they took and still owe outlives the process.
    state = open_state(settings.state_dir or None)
    office = AgencyOffice(settings, AgencyLedger(state))
    store = MailStore(state)
    mail_server = MailServer(store, settings.host, settings.smtp_port)
    inbox_server = AgencyInboxServer(office)
    topics = [t.strip() for t in settings.agency_inbox_topics.split(",") if t.strip()]
    kafka_inbox = KafkaInbox(office, settings.kafka_bootstrap_servers, topics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await mail_server.start()
        registry, app.state.registry_port = await serve_registry(
            settings.host, settings.registry_grpc_port
        )
        if settings.agency_grpc_port is not None:
            await inbox_server.start(settings.host, settings.agency_grpc_port)
        if settings.kafka_bootstrap_servers and topics:
            kafka_inbox.start()
        office.resume()
        try:
            yield
        finally:
            await kafka_inbox.stop()
            await inbox_server.stop()
            await registry.stop(grace=1.0)
            # Callbacks first: they may still be talking to a gateway that is going away too.
            await office.close()
            await mail_server.stop()
            state.close()

    app = FastAPI(
        title="Sandbox of national systems",
        description="Stand-ins of agency back-offices and the mail relay, for development only.",
        lifespan=lifespan,
        max_body_size=settings.http_max_body_bytes,
    )
    app.state.settings = settings
    app.state.agency_office = office
    app.state.mail_store = store
    app.state.mail_server = mail_server
    app.include_router(agency_router(office))
    app.include_router(mail_router(store))
    app.include_router(sms_router(SmsStore(state)))
    app.include_router(portal_router(PortalStore(state)))
    app.include_router(webhooks_router(WebhookStore(state)))
    app.state.agency_inbox_server = inbox_server
    app.state.oidc = create_oidc_app(f"{base_url}/oidc", oidc_clients(settings))
    app.mount("/oidc", app.state.oidc)

    @app.get("/health/live", tags=["health"])
    async def live() -> dict[str, str]:
        return {"status": "ok"}

    return app
