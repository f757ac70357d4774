"""Notify composed once: what its routes, workers and tests use, built by `compose`."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import Depends
from sqlalchemy import and_
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.auth import TokenVerifier, token_verifier
from core.catalogue_client import CatalogueClient
from core.clock import SYSTEM_CLOCK, Clock
from core.consumer import EventConsumer
from core.deps import provider
from core.handlers import EventHandlers
from core.outbound import OutboundClient
from core.outbox import Outbox
from core.queue_metrics import QueueCount
from core.room import QueueRoom
from core.runtime import Runtime, Worker
from services.notify import models
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

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


@dataclass(frozen=True)
class NotifyDeps:
    settings: NotifySettings
    runtime: Runtime
    clock: Clock
    # Routing's catalogue: procedure and agency names in messages.
    catalogues: CatalogueClient
    token_verifier: TokenVerifier
    outbox: Outbox
    status_log: StatusLog
    notifications: NotificationService
    # One SSRF-checked client for callbacks: the API checks URLs with it, the sender posts.
    webhook_outbound: OutboundClient
    # Set to wake each channel's sender at once (a resend), instead of at its next poll.
    sender_wakeups: tuple[asyncio.Event, ...]

    @property
    def sessions(self) -> async_sessionmaker[AsyncSession]:
        return self.runtime.sessions


def compose(settings: NotifySettings | None = None, *, clock: Clock = SYSTEM_CLOCK) -> NotifyDeps:
    settings = settings or NotifySettings()
    outbox = Outbox(models.outbox, settings.dossier_events_topic)
    runtime = Runtime(
        settings, name="notify", metadata=models.metadata, migrations=MIGRATIONS, outbox=outbox
    )
    status_log = StatusLog(outbox)
    catalogues = CatalogueClient.from_settings(settings)
    runtime.add_worker("catalogue", catalogues.run)
    runtime.add_gate("catalogue", catalogues.ready)
    runtime.on_stop(catalogues.close)
    service = NotificationService(
        runtime.sessions,
        catalogues,
        status_log,
        sms_enabled=settings.sms_enabled,
        intake_url=settings.intake_public_url,
        clock=clock,
    )
    outbound = webhook_client(settings)
    channels: list[Channel] = [
        EmailChannel(settings),
        WebhookChannel(settings, runtime.sessions, outbound),
    ]
    if settings.sms_enabled:
        channels.append(SmsChannel(settings))
    senders = [_add_sender(runtime, settings, channel, service, status_log) for channel in channels]
    handlers = EventHandlers()
    service.subscribe(handlers)
    # The consumer holds while a channel's queue is full (core/room.py).
    room = QueueRoom(
        "notify",
        runtime.sessions,
        [sender.lease for sender in senders],
        max_due=settings.consumer_max_due_rows,
        clock=clock,
        hold=runtime.held,
    )
    consumer = EventConsumer(
        settings, group_id="notify", handlers=handlers, producer=runtime.producer, room=room
    )
    # Messages name procedures: nothing is consumed before the catalogue is in.
    runtime.add_worker("dossier-consumer", _after(catalogues, consumer.run))
    verification = token_verifier(settings)
    runtime.on_stop(verification.close)
    return NotifyDeps(
        settings=settings,
        runtime=runtime,
        clock=clock,
        catalogues=catalogues,
        token_verifier=verification.verifier,
        outbox=outbox,
        status_log=status_log,
        notifications=service,
        webhook_outbound=outbound,
        sender_wakeups=tuple(service.waiting.values()),
    )


def _after(catalogues: CatalogueClient, worker: Worker) -> Worker:
    async def run() -> None:
        await catalogues.ready.wait()
        await worker()

    return run


def _add_sender(
    runtime: Runtime,
    settings: NotifySettings,
    channel: Channel,
    service: NotificationService,
    status_log: StatusLog,
) -> ChannelSender:
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
    return sender


Deps = Annotated[NotifyDeps, Depends(provider(NotifyDeps))]


def _sessions(deps: Deps) -> async_sessionmaker[AsyncSession]:
    return deps.sessions


def _outbound(deps: Deps) -> OutboundClient:
    return deps.webhook_outbound


Sessions = Annotated[async_sessionmaker[AsyncSession], Depends(_sessions)]
Outbound = Annotated[OutboundClient, Depends(_outbound)]
