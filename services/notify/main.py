"""Notify: tells citizens and agency systems what happened to a dossier, and records the
delivery status of every message."""

from __future__ import annotations

from pathlib import Path

from fastapi import Depends, FastAPI
from sqlalchemy import and_

from core.auth import NOTIFICATIONS_READ, require_scope, token_verifier
from core.catalogue import load_catalogue
from core.consumer import EventConsumer
from core.dead_letters import dead_events_router
from core.http import create_app, database_ready
from core.outbox import Outbox
from core.queue_metrics import QueueCount
from core.runtime import Runtime
from services.notify import models
from services.notify.api import router
from services.notify.channels import (
    Channel,
    EmailChannel,
    SmsChannel,
    WebhookChannel,
    webhook_client,
)
from services.notify.notifications import NotificationService
from services.notify.sender import CLAIMABLE, ChannelSender
from services.notify.settings import NotifySettings
from services.notify.status import StatusLog
from services.notify.webhooks_api import router as webhooks_router

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def build_app(settings: NotifySettings | None = None) -> FastAPI:
    settings = settings or NotifySettings()
    outbox = Outbox(models.outbox, settings.dossier_events_topic)
    runtime = Runtime(
        settings,
        name="notify",
        metadata=models.metadata,
        migrations=MIGRATIONS,
        outbox=outbox,
    )
    status_log = StatusLog(outbox)
    service = NotificationService(
        runtime.sessions,
        load_catalogue(),
        status_log,
        sms_enabled=settings.sms_enabled,
        intake_url=settings.intake_public_url,
    )
    consumer = EventConsumer(
        settings,
        group_id="notify",
        event_types=service.event_types,
        handle=service.handle,
        producer=runtime.producer,
    )
    runtime.add_worker("dossier-consumer", consumer.run)
    # One SSRF-checked client for callbacks: the API checks URLs with it, the sender posts.
    outbound = webhook_client(settings)
    channels: list[Channel] = [
        EmailChannel(settings),
        WebhookChannel(settings, runtime.sessions, outbound),
    ]
    if settings.sms_enabled:
        channels.append(SmsChannel(settings))
    for channel in channels:
        sender = ChannelSender(
            channel,
            settings,
            runtime.engine,
            runtime.sessions,
            service.waiting[channel.name],
            status_log,
            hold=runtime.held,
        )
        runtime.add_worker(f"{channel.name}-sender", sender.run)
        c = models.notifications.c
        runtime.count_queue(
            QueueCount(
                sender.name,
                models.notifications,
                and_(c.channel == channel.name, c.status.in_(CLAIMABLE)),
            )
        )
    verification = token_verifier(settings)

    runtime.on_stop(verification.close)

    app = create_app(
        title="Dossier gateway — notify",
        description="Delivery status of the messages sent to citizens and agencies; "
        "webhook subscriptions of agency systems.",
        runtime=runtime,
    )
    app.state.token_verifier = verification.verifier
    app.state.webhook_outbound = outbound
    app.state.webhook_max_subscriptions = settings.webhook_max_subscriptions
    app.state.sender_wakeups = list(service.waiting.values())
    ready = Depends(database_ready)
    app.include_router(router, dependencies=[Depends(require_scope(NOTIFICATIONS_READ)), ready])
    app.include_router(webhooks_router, dependencies=[ready])
    app.include_router(dead_events_router(), dependencies=[ready])
    return app
