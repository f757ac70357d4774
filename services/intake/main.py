"""Intake: agency systems and portals submit dossiers here (REST, OpenAPI 3.1)."""

from __future__ import annotations

from pathlib import Path

from fastapi import Depends, FastAPI

from core.auth import CITIZEN_DATA_READ, JOURNEYS_READ, token_verifier
from core.backlog import PipelineBacklog, backlog_gate
from core.calendar import WorkingCalendar
from core.catalogue import load_catalogue
from core.dead_letters import dead_events_router
from core.http import create_app, database_ready
from core.maintenance import writes_allowed
from core.outbox import Outbox
from core.runtime import Runtime
from core.tokens import ServiceTokens
from services.intake import models
from services.intake.api import router
from services.intake.citizen import IdentityClient
from services.intake.dossiers import DossierRegistry
from services.intake.journey import JourneyClient
from services.intake.settings import IntakeSettings

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def build_app(settings: IntakeSettings | None = None) -> FastAPI:
    settings = settings or IntakeSettings()
    outbox = Outbox(models.outbox, settings.dossier_events_topic)
    runtime = Runtime(
        settings,
        name="intake",
        metadata=models.metadata,
        migrations=MIGRATIONS,
        outbox=outbox,
    )
    backlog = PipelineBacklog(
        settings.kafka_bootstrap_servers,
        settings.dossier_events_topic,
        settings.pipeline_groups,
        max_backlog_s=settings.pipeline_max_backlog_s,
        floor_events=settings.pipeline_backlog_floor_events,
        interval_s=settings.pipeline_backlog_interval_s,
    )
    runtime.add_worker("pipeline-backlog", backlog.run)
    catalogue = load_catalogue()
    verification = token_verifier(settings)

    app = create_app(
        title="Dossier gateway — intake",
        description="Submit administrative dossiers and follow their inter-agency journey.",
        runtime=runtime,
    )
    app.state.catalogue = catalogue
    app.state.token_verifier = verification.verifier
    app.state.registry = DossierRegistry(
        runtime.sessions,
        outbox,
        catalogue,
        WorkingCalendar(settings.calendar_extra_days_off, settings.calendar_extra_working_days),
        settings.form_data_shape,
    )

    async def connect() -> None:
        # gRPC channels belong to the running event loop: opened at start-up, not here.
        app.state.journeys = JourneyClient(
            settings.routing_grpc_target,
            settings.journey_timeout_s,
            ServiceTokens.from_settings(settings, scope=JOURNEYS_READ),
        )
        app.state.registry.identity = IdentityClient(
            settings.identity_grpc_target,
            settings.identity_timeout_s,
            ServiceTokens.from_settings(settings, scope=CITIZEN_DATA_READ),
        )

    async def disconnect() -> None:
        await app.state.registry.identity.close()
        await app.state.journeys.close()

    runtime.on_start(connect)
    runtime.on_stop(verification.close)
    runtime.on_stop(disconnect)
    # In maintenance, or while the pipeline is too far behind, dossiers are read as usual
    # but none is taken in (503, Retry-After).
    app.include_router(
        router,
        dependencies=[
            Depends(database_ready),
            Depends(writes_allowed),
            Depends(backlog_gate(backlog)),
        ],
    )
    app.include_router(dead_events_router(), dependencies=[Depends(database_ready)])
    return app
