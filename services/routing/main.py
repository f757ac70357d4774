"""Routing: takes submitted dossiers across the agencies of their procedure."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from fastapi import Depends, FastAPI
from sqlalchemy import and_

from core.auth import JOURNEYS_READ, REPORTS_READ, require_scope, token_verifier
from core.auth_grpc import AuthInterceptor
from core.calendar import WorkingCalendar
from core.clock import SYSTEM_CLOCK
from core.consumer import EventConsumer
from core.dead_letters import dead_events_router
from core.grpc import GrpcServer
from core.http import create_app, database_ready
from core.outbox import Outbox
from core.queue_metrics import QueueCount, count_of
from core.runtime import Runtime, Worker
from gateway.v1 import routing_pb2, routing_pb2_grpc
from services.routing import (
    acknowledgements,
    catalogue_store,
    dead_letters,
    models,
    portal_dead_letters,
    statistics,
    timeline,
)
from services.routing.api import router
from services.routing.catalogue_store import CatalogueStore
from services.routing.deadlines import DeadlineScheduler
from services.routing.delivery import DeliveryWorker
from services.routing.grpc_api import RoutingServicer
from services.routing.journeys import JourneyService
from services.routing.lifecycle import OPEN_STATES
from services.routing.portal import PortalSync
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
    clock = SYSTEM_CLOCK
    store = CatalogueStore(
        runtime.engine,
        runtime.sessions,
        settings.catalogue_dir,
        {
            "DEMO_AGENCY_BASE_URL": settings.demo_agency_base_url,
            "DEMO_AGENCY_GRPC_TARGET": settings.demo_agency_grpc_target,
        },
        settings.catalogue_refresh_s,
        clock,
    )
    store.check_files()
    catalogue = store.catalogue
    calendar = WorkingCalendar(
        settings.calendar_extra_days_off, settings.calendar_extra_working_days
    )
    journeys = JourneyService(
        runtime.sessions,
        outbox,
        catalogue,
        calendar,
        clock,
        deadline_override_s=settings.deadline_override_s,
        deadline_override_procedures=frozenset(
            code.strip() for code in settings.deadline_override_procedures.split(",") if code
        ),
    )
    deadlines = DeadlineScheduler(
        runtime.engine,
        runtime.sessions,
        outbox,
        catalogue,
        calendar,
        clock,
        apology_days=settings.apology_working_days,
        batch_size=settings.deadline_batch_size,
        longest_sleep_s=settings.deadline_max_sleep_s,
    )
    # One event: commits that arm or move a deadline wake the scheduler.
    deadlines.wakeup = journeys.deadlines_changed
    consumer = EventConsumer(
        settings,
        group_id="routing",
        event_types={"vn.gov.dossier.submitted.v1"},
        handle=journeys.take_in,
        producer=runtime.producer,
    )
    delivery = DeliveryWorker(
        settings,
        runtime.engine,
        runtime.sessions,
        outbox,
        catalogue,
        journeys,
        runtime.producer,
        clock=clock,
        hold=runtime.held,
    )
    portal = PortalSync(settings, runtime.engine, runtime.sessions, clock=clock, hold=runtime.held)
    portal_consumer = EventConsumer(
        settings,
        group_id="portal-sync",
        event_types={"vn.gov.dossier.status_changed.v1"},
        handle=portal.take_in,
        producer=runtime.producer,
    )
    count_queues(runtime)
    runtime.add_worker("catalogue", store.run)
    # Outcome reports and reads need the catalogue: until it is loaded they get 503.
    runtime.add_gate("catalogue", store.ready)
    # Nothing is routed, delivered or timed before the catalogue is loaded from the database.
    runtime.add_worker("dossier-consumer", after(store, consumer.run))
    runtime.add_worker("delivery", after(store, delivery.run))
    runtime.add_worker("deadlines", after(store, deadlines.run))
    runtime.add_worker("portal-consumer", portal_consumer.run)
    runtime.add_worker("portal-sync", portal.run)
    servicer = RoutingServicer(runtime.sessions, catalogue)
    verification = token_verifier(settings)
    service_name = routing_pb2.DESCRIPTOR.services_by_name["RoutingService"].full_name
    grpc_scopes = {f"/{service_name}/GetJourney": JOURNEYS_READ}
    grpc_server = GrpcServer(
        [lambda server: routing_pb2_grpc.add_RoutingServiceServicer_to_server(servicer, server)],
        [service_name],
        [AuthInterceptor(verification.verifier, grpc_scopes)],
    )

    runtime.serve_grpc(grpc_server, settings.http_host, settings.grpc_port)
    runtime.on_stop(verification.close)

    app = create_app(
        title="Dossier gateway — routing",
        description="Agency systems report the outcome of the steps delivered to them.",
        runtime=runtime,
    )
    app.state.journeys = journeys
    app.state.portal = portal
    app.state.trace_ui_url = settings.trace_ui_url
    app.state.token_verifier = verification.verifier
    app.state.catalogue_store = store
    ready = [Depends(database_ready)]
    app.include_router(router, dependencies=ready)
    app.include_router(dead_letters.router, dependencies=ready)
    app.include_router(dead_events_router(), dependencies=ready)
    app.include_router(portal_dead_letters.router, dependencies=ready)
    app.include_router(dead_letters.escalations, dependencies=ready)
    app.include_router(dead_letters.stuck, dependencies=ready)
    app.include_router(acknowledgements.router, dependencies=ready)
    app.include_router(catalogue_store.router, dependencies=ready)
    reports = [Depends(require_scope(REPORTS_READ)), *ready]
    app.include_router(timeline.router, dependencies=reports)
    app.include_router(statistics.router, dependencies=reports)
    return app


def count_queues(runtime: Runtime) -> None:
    """The gauges of routing's queues and of its overdue dossiers (core/queue_metrics.py)."""
    t, p, j = models.transfers.c, models.portal_pushes.c, models.journeys.c
    pending, dead = models.TransferStatus.PENDING, models.TransferStatus.DEAD_LETTERED
    runtime.count_queue(
        QueueCount("delivery", models.transfers, t.status == pending, t.status == dead)
    )
    pushing, parked = models.PushStatus.PENDING, models.PushStatus.DEAD_LETTERED
    runtime.count_queue(
        QueueCount("portal-sync", models.portal_pushes, p.status == pushing, p.status == parked)
    )
    runtime.queue_metrics.overdue = count_of(
        models.journeys,
        and_(j.overdue_at.is_not(None), j.status.in_([s.value for s in OPEN_STATES])),
    )


def after(store: CatalogueStore, worker: Callable[[], Awaitable[None]]) -> Worker:
    async def run() -> None:
        await store.ready.wait()
        await worker()

    return run
