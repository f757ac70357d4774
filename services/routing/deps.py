"""Routing composed once: every part, built by `compose(settings)` and handed to the others.

`__main__` (through main.build_app), the tests and the dev stack (which runs `__main__`) all
call `compose`; nothing else builds a part. The HTTP routes take what they need as the
`Annotated` aliases at the end (as FastAPI's full-stack template does:
`SessionDep = Annotated[Session, Depends(get_session)]`), never from `app.state` themselves.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI
from sqlalchemy import and_
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.auth import CATALOGUE_READ, JOURNEYS_READ, TokenVerifier, token_verifier
from core.auth_grpc import AuthInterceptor
from core.calendar import WorkingCalendar
from core.catalogue import Catalogue
from core.clock import SYSTEM_CLOCK, Clock
from core.consumer import EventConsumer
from core.deps import install as install_deps
from core.deps import provider
from core.grpc import GrpcServer
from core.handlers import EventHandlers
from core.outbox import Outbox
from core.queue_metrics import QueueCount, count_of
from core.room import QueueRoom
from core.runtime import Runtime, Worker
from core.workqueue import Lease
from gateway.v1 import catalogue_pb2, catalogue_pb2_grpc, events_pb2, routing_pb2, routing_pb2_grpc
from services.routing import models
from services.routing.catalogue_store import CatalogueStore
from services.routing.deadlines import DeadlineScheduler
from services.routing.delivery import DeliveryWorker
from services.routing.grpc_api import CatalogueServicer, RoutingServicer
from services.routing.journeys import JourneyService
from services.routing.lifecycle import OPEN_STATES
from services.routing.models import PushStatus, TransferStatus
from services.routing.portal import PortalSync
from services.routing.settings import RoutingSettings

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


@dataclass(frozen=True)
class RoutingDeps:
    settings: RoutingSettings
    # The process: database engine and sessions, Kafka producer, outbox relay, workers.
    runtime: Runtime
    sessions: async_sessionmaker[AsyncSession]
    outbox: Outbox
    clock: Clock
    calendar: WorkingCalendar
    # The owner of the catalogue, and the catalogue it keeps current (swapped on reload).
    catalogue_store: CatalogueStore
    catalogue: Catalogue
    journeys: JourneyService
    deadlines: DeadlineScheduler
    delivery: DeliveryWorker
    portal: PortalSync
    token_verifier: TokenVerifier


def compose(settings: RoutingSettings | None = None, *, clock: Clock = SYSTEM_CLOCK) -> RoutingDeps:
    """Build every part of routing and register its workers and gRPC server with the
    runtime; nothing runs until the runtime starts."""
    settings = settings or RoutingSettings()
    outbox = Outbox(models.outbox, settings.dossier_events_topic)
    runtime = Runtime(
        settings, name="routing", metadata=models.metadata, migrations=MIGRATIONS, outbox=outbox
    )
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
        procedure_at=store.procedure,
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
    verification = token_verifier(settings)
    runtime.on_stop(verification.close)
    deps = RoutingDeps(
        settings=settings,
        runtime=runtime,
        sessions=runtime.sessions,
        outbox=outbox,
        clock=clock,
        calendar=calendar,
        catalogue_store=store,
        catalogue=catalogue,
        journeys=journeys,
        deadlines=deadlines,
        delivery=delivery,
        portal=portal,
        token_verifier=verification.verifier,
    )
    _add_workers(deps)
    _serve_grpc(deps)
    return deps


def _add_workers(deps: RoutingDeps) -> None:
    runtime, settings, store = deps.runtime, deps.settings, deps.catalogue_store
    submitted = EventHandlers()
    submitted.on(events_pb2.DossierSubmitted)(deps.journeys.take_in)
    consumer = EventConsumer(
        settings,
        group_id="routing",
        handlers=submitted,
        producer=runtime.producer,
        room=_room(deps, "routing", [deps.delivery.lease]),
    )
    status_changed = EventHandlers()
    status_changed.on(events_pb2.DossierStatusChanged)(deps.portal.take_in)
    # Without a portal to push to, nothing drains the pushes: they are kept, never a reason
    # to hold.
    pushed = [deps.portal.lease] if settings.portal_sync_url else []
    portal_consumer = EventConsumer(
        settings,
        group_id="portal-sync",
        handlers=status_changed,
        producer=runtime.producer,
        room=_room(deps, "portal-sync", pushed),
    )
    _count_queues(runtime)
    runtime.add_worker("catalogue", store.run)
    # Outcome reports and reads need the catalogue: until it is loaded they get 503.
    runtime.add_gate("catalogue", store.ready)
    # Nothing is routed, delivered or timed before the catalogue is loaded from the database.
    runtime.add_worker("dossier-consumer", _after(store, consumer.run))
    runtime.add_worker("delivery", _after(store, deps.delivery.run))
    runtime.add_worker("deadlines", _after(store, deps.deadlines.run))
    runtime.add_worker("portal-consumer", portal_consumer.run)
    runtime.add_worker("portal-sync", deps.portal.run)


def _serve_grpc(deps: RoutingDeps) -> None:
    servicer = RoutingServicer(deps.sessions, deps.catalogue)
    # The catalogue's one owner serves it: intake and notify read no files.
    catalogue = CatalogueServicer(deps.catalogue_store)
    service_name = routing_pb2.DESCRIPTOR.services_by_name["RoutingService"].full_name
    catalogue_name = catalogue_pb2.DESCRIPTOR.services_by_name["CatalogueService"].full_name
    grpc_scopes = {
        f"/{service_name}/GetJourney": JOURNEYS_READ,
        f"/{catalogue_name}/GetCatalogue": CATALOGUE_READ,
    }
    grpc_server = GrpcServer(
        [
            lambda server: routing_pb2_grpc.add_RoutingServiceServicer_to_server(servicer, server),
            lambda server: catalogue_pb2_grpc.add_CatalogueServiceServicer_to_server(
                catalogue, server
            ),
        ],
        [service_name, catalogue_name],
        [AuthInterceptor(deps.token_verifier, grpc_scopes)],
    )
    deps.runtime.serve_grpc(grpc_server, deps.settings.http_host, deps.settings.grpc_port)


def _room(deps: RoutingDeps, group: str, leases: list[Lease]) -> QueueRoom:
    """Room in the queues the consumer feeds (core/room.py)."""
    return QueueRoom(
        group,
        deps.sessions,
        leases,
        max_due=deps.settings.consumer_max_due_rows,
        clock=deps.clock,
        hold=deps.runtime.held,
    )


def _count_queues(runtime: Runtime) -> None:
    """The gauges of routing's queues and of its overdue dossiers (core/queue_metrics.py)."""
    t, p, j = models.transfers.c, models.portal_pushes.c, models.journeys.c
    pending, dead = TransferStatus.PENDING, TransferStatus.DEAD_LETTERED
    runtime.count_queue(
        QueueCount("delivery", models.transfers, t.status == pending, t.status == dead)
    )
    pushing, parked = PushStatus.PENDING, PushStatus.DEAD_LETTERED
    runtime.count_queue(
        QueueCount("portal-sync", models.portal_pushes, p.status == pushing, p.status == parked)
    )
    runtime.queue_metrics.overdue = count_of(
        models.journeys,
        and_(j.overdue_at.is_not(None), j.status.in_([s.value for s in OPEN_STATES])),
    )


def _after(store: CatalogueStore, worker: Callable[[], Awaitable[None]]) -> Worker:
    async def run() -> None:
        await store.ready.wait()
        await worker()

    return run


def install(app: FastAPI, deps: RoutingDeps) -> None:
    """Keep the composition on the application (core.deps, as every service does), with the
    token verifier where core.auth looks for it."""
    install_deps(app, deps=deps, token_verifier=deps.token_verifier)


Deps = Annotated[RoutingDeps, Depends(provider(RoutingDeps))]


def _journeys(deps: Deps) -> JourneyService:
    return deps.journeys


def _sessions(deps: Deps) -> async_sessionmaker[AsyncSession]:
    return deps.sessions


def _portal(deps: Deps) -> PortalSync:
    return deps.portal


def _catalogue_store(deps: Deps) -> CatalogueStore:
    return deps.catalogue_store


JourneysDep = Annotated[JourneyService, Depends(_journeys)]
SessionsDep = Annotated[async_sessionmaker[AsyncSession], Depends(_sessions)]
PortalDep = Annotated[PortalSync, Depends(_portal)]
CatalogueStoreDep = Annotated[CatalogueStore, Depends(_catalogue_store)]
