"""Intake composed once: what its routes, workers and tests use, built by `compose`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import Depends

from core.auth import CITIZEN_DATA_READ, JOURNEYS_READ, TokenVerifier, token_verifier
from core.backlog import PipelineBacklog
from core.calendar import WorkingCalendar
from core.catalogue import Catalogue
from core.catalogue_client import CatalogueClient
from core.clock import SYSTEM_CLOCK, Clock
from core.deps import provider
from core.outbox import Outbox
from core.runtime import Runtime
from core.tokens import ServiceTokens
from services.intake import models
from services.intake.citizen import IdentityClient
from services.intake.dossiers import DossierRegistry
from services.intake.journey import JourneyClient
from services.intake.settings import IntakeSettings

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


@dataclass(frozen=True)
class IntakeDeps:
    settings: IntakeSettings
    runtime: Runtime
    clock: Clock
    # Routing's catalogue: the current version (swapped on reload) and past ones on demand.
    catalogues: CatalogueClient
    token_verifier: TokenVerifier
    registry: DossierRegistry
    journeys: JourneyClient
    identity: IdentityClient
    # How far the services behind intake are behind (core/backlog.py): submissions wait.
    backlog: PipelineBacklog


def compose(settings: IntakeSettings | None = None, *, clock: Clock = SYSTEM_CLOCK) -> IntakeDeps:
    settings = settings or IntakeSettings()
    outbox = Outbox(models.outbox, settings.dossier_events_topic)
    runtime = Runtime(
        settings, name="intake", metadata=models.metadata, migrations=MIGRATIONS, outbox=outbox
    )
    backlog = PipelineBacklog(
        settings.kafka_bootstrap_servers,
        settings.dossier_events_topic,
        settings.pipeline_groups,
        max_backlog_s=settings.pipeline_max_backlog_s,
        floor_events=settings.pipeline_backlog_floor_events,
        interval_s=settings.pipeline_backlog_interval_s,
        retry_after_max_s=settings.pipeline_retry_after_max_s,
    )
    runtime.add_worker("pipeline-backlog", backlog.run)
    catalogues = CatalogueClient.from_settings(settings)
    runtime.add_worker("catalogue", catalogues.run)
    # No dossier is checked against an empty catalogue: until routing's is in, 503.
    runtime.add_gate("catalogue", catalogues.ready)
    verification = token_verifier(settings)
    # Clients whose gRPC channels are opened on first use, in the running event loop.
    identity = IdentityClient(
        settings.identity_grpc_target,
        settings.identity_timeout_s,
        ServiceTokens.from_settings(settings, scope=CITIZEN_DATA_READ),
    )
    journeys = JourneyClient(
        settings.routing_grpc_target,
        settings.journey_timeout_s,
        ServiceTokens.from_settings(settings, scope=JOURNEYS_READ),
    )
    registry = DossierRegistry(
        runtime.sessions,
        outbox,
        catalogues,
        WorkingCalendar(settings.calendar_extra_days_off, settings.calendar_extra_working_days),
        settings.form_data_shape,
        identity=identity,
        clock=clock,
    )
    runtime.on_stop(verification.close)
    runtime.on_stop(identity.close)
    runtime.on_stop(journeys.close)
    runtime.on_stop(catalogues.close)
    return IntakeDeps(
        settings=settings,
        runtime=runtime,
        clock=clock,
        catalogues=catalogues,
        token_verifier=verification.verifier,
        registry=registry,
        journeys=journeys,
        identity=identity,
        backlog=backlog,
    )


Deps = Annotated[IntakeDeps, Depends(provider(IntakeDeps))]


def _registry(deps: Deps) -> DossierRegistry:
    return deps.registry


def _journeys(deps: Deps) -> JourneyClient:
    return deps.journeys


def _catalogue(deps: Deps) -> Catalogue:
    return deps.catalogues.catalogue


def _catalogues(deps: Deps) -> CatalogueClient:
    return deps.catalogues


RegistryDep = Annotated[DossierRegistry, Depends(_registry)]
JourneysDep = Annotated[JourneyClient, Depends(_journeys)]
CatalogueDep = Annotated[Catalogue, Depends(_catalogue)]
CataloguesDep = Annotated[CatalogueClient, Depends(_catalogues)]
