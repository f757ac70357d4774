"""Routing: takes submitted dossiers across the agencies of their procedure."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI

from core.auth import JOURNEYS_READ, token_verifier
from core.auth_grpc import AuthInterceptor
from core.calendar import WorkingCalendar
from core.catalogue import load_catalogue
from core.consumer import EventConsumer
from core.grpc import GrpcServer
from core.http import create_app, database_ready
from core.outbox import Outbox
from core.runtime import Runtime
from gateway.v1 import routing_pb2, routing_pb2_grpc
from services.routing import dead_letters, models
from services.routing.api import router
from services.routing.delivery import DeliveryWorker
from services.routing.grpc_api import RoutingServicer
from services.routing.journeys import JourneyService
from services.routing.settings import RoutingSettings

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def build_app(settings: RoutingSettings | None = None) -> FastAPI:
    settings = settings or RoutingSettings()
    outbox = Outbox(models.outbox, settings.dossier_events_topic)
    runtime = Runtime(
        settings,
        name="routing",
        metadata=models.metadata,
        migrations=MIGRATIONS,
        outbox=outbox,
    )
    catalogue = load_catalogue(variables={"DEMO_AGENCY_BASE_URL": settings.demo_agency_base_url})
    journeys = JourneyService(runtime.sessions, outbox, catalogue, WorkingCalendar())
    consumer = EventConsumer(
        settings,
        group_id="routing",
        event_types={"vn.gov.dossier.submitted.v1"},
        handle=journeys.take_in,
        producer=runtime.producer,
    )
    delivery = DeliveryWorker(
        settings, runtime.engine, runtime.sessions, outbox, catalogue, journeys
    )
    runtime.add_worker("dossier-consumer", consumer.run)
    runtime.add_worker("delivery", delivery.run)
    servicer = RoutingServicer(runtime.sessions, catalogue)
    verification = token_verifier(settings)
    service_name = routing_pb2.DESCRIPTOR.services_by_name["RoutingService"].full_name
    grpc_scopes = {f"/{service_name}/GetJourney": JOURNEYS_READ}
    grpc_server = GrpcServer(
        [lambda server: routing_pb2_grpc.add_RoutingServiceServicer_to_server(servicer, server)],
        [service_name],
        [AuthInterceptor(verification.verifier, grpc_scopes)],
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        await grpc_server.start(settings.http_host, settings.grpc_port)
        try:
            yield
        finally:
            await grpc_server.stop()
            await verification.close()
            await runtime.stop()

    app = create_app(
        title="Dossier gateway — routing",
        description="Agency systems report the outcome of the steps delivered to them.",
        runtime=runtime,
        lifespan=lifespan,
    )
    app.state.journeys = journeys
    app.state.token_verifier = verification.verifier
    app.include_router(router, dependencies=[Depends(database_ready)])
    app.include_router(dead_letters.router, dependencies=[Depends(database_ready)])
    return app
