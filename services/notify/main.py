"""Notify: tells citizens what happened to their dossier, and records delivery status."""

from __future__ import annotations

from pathlib import Path

from fastapi import Depends, FastAPI

from core.catalogue import load_catalogue
from core.consumer import EventConsumer
from core.http import create_app, database_ready
from core.runtime import Runtime
from services.notify import models
from services.notify.api import router
from services.notify.notifications import NotificationService
from services.notify.sender import EmailSender
from services.notify.settings import NotifySettings

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def build_app(settings: NotifySettings | None = None) -> FastAPI:
    settings = settings or NotifySettings()
    runtime = Runtime(
        settings,
        name="notify",
        metadata=models.metadata,
        migrations=MIGRATIONS,
    )
    service = NotificationService(runtime.sessions, load_catalogue())
    consumer = EventConsumer(
        settings,
        group_id="notify",
        event_types=service.event_types,
        handle=service.handle,
        producer=runtime.producer,
    )
    sender = EmailSender(settings, runtime.engine, runtime.sessions, service)
    runtime.add_worker("dossier-consumer", consumer.run)
    runtime.add_worker("email-sender", sender.run)
    app = create_app(
        title="Dossier gateway — notify",
        description="Delivery status of the messages sent to citizens and agencies.",
        runtime=runtime,
    )
    app.include_router(router, dependencies=[Depends(database_ready)])
    return app
