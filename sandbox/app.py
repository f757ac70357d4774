"""The sandbox as one ASGI app: every demo agency, the mail relay, an SMS gateway and a
liveness probe."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from sandbox.agency import AgencyOffice, agency_router
from sandbox.agency_inbox import AgencyInboxServer, KafkaInbox
from sandbox.mail import MailServer, MailStore, mail_router
from sandbox.portal import PortalStore, portal_router
from sandbox.settings import SandboxSettings
from sandbox.sms import SmsStore, sms_router


def create_app(settings: SandboxSettings | None = None) -> FastAPI:
    settings = settings or SandboxSettings()
    office = AgencyOffice(settings)
    store = MailStore()
    mail_server = MailServer(store, settings.host, settings.smtp_port)
    inbox_server = AgencyInboxServer(office)
    topics = [t.strip() for t in settings.agency_inbox_topics.split(",") if t.strip()]
    kafka_inbox = KafkaInbox(office, settings.kafka_bootstrap_servers, topics)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await mail_server.start()
        if settings.agency_grpc_port is not None:
            await inbox_server.start(settings.host, settings.agency_grpc_port)
        if settings.kafka_bootstrap_servers and topics:
            kafka_inbox.start()
        try:
            yield
        finally:
            await kafka_inbox.stop()
            await inbox_server.stop()
            # Callbacks first: they may still be talking to a gateway that is going away too.
            await office.close()
            await mail_server.stop()

    app = FastAPI(
        title="Sandbox of national systems",
        description="Stand-ins of agency back-offices and the mail relay, for development only.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.agency_office = office
    app.state.mail_store = store
    app.state.mail_server = mail_server
    app.include_router(agency_router(office))
    app.include_router(mail_router(store))
    app.include_router(sms_router(SmsStore()))
    app.include_router(portal_router(PortalStore()))
    app.state.agency_inbox_server = inbox_server

    @app.get("/health/live", tags=["health"])
    async def live() -> dict[str, str]:
        return {"status": "ok"}

    return app
