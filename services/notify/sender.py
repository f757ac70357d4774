"""Sends recorded notifications by email (SMTP) and records each delivery status.

SMTP 4xx and connection failures are temporary (retried with backoff for a bounded time);
5xx answers are permanent (never retried). The Message-ID is the notification id, so a
resend after a crash mid-send can be recognised by the receiving side.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any

import aiosmtplib
from opentelemetry import trace
from opentelemetry.trace import SpanKind
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from core.leases import claim_due
from core.telemetry import context_from_carrier
from services.notify.models import notifications
from services.notify.notifications import NotificationService
from services.notify.settings import NotifySettings

log = logging.getLogger(__name__)
tracer = trace.get_tracer("gateway.notify")


class EmailSender:
    def __init__(
        self,
        settings: NotifySettings,
        engine: AsyncEngine,
        sessions: async_sessionmaker[AsyncSession],
        service: NotificationService,
    ) -> None:
        self._settings = settings
        self._engine = engine
        self._sessions = sessions
        self._wakeup = service.waiting

    async def run(self) -> None:
        while True:
            self._wakeup.clear()
            claimed = await claim_due(
                self._engine,
                self._sessions,
                notifications,
                key=notifications.c.id,
                status=notifications.c.status,
                claimable=["created", "sending", "temporary-failure"],
                due=notifications.c.next_attempt_at,
                attempts=notifications.c.attempts,
                lease_s=self._settings.send_lease_s,
                limit=self._settings.send_batch_size,
                claimed_status="sending",
            )
            if claimed:
                await asyncio.gather(*(self._send(row) for row in claimed))
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), self._settings.send_poll_interval_s)

    async def _send(self, row: Any) -> None:
        with tracer.start_as_current_span(
            "smtp send",
            context=context_from_carrier(row.trace),
            kind=SpanKind.CLIENT,
            attributes={
                "dossier.code": row.dossier_code,
                "notification.id": row.id,
                "notification.template": row.template,
                "server.address": self._settings.smtp_host,
                "server.port": self._settings.smtp_port,
            },
        ):
            try:
                await aiosmtplib.send(
                    self._message(row),
                    hostname=self._settings.smtp_host,
                    port=self._settings.smtp_port,
                    start_tls=self._settings.smtp_starttls,
                    username=self._settings.smtp_username,
                    password=self._settings.smtp_password,
                    timeout=self._settings.smtp_timeout_s,
                )
            except aiosmtplib.SMTPResponseException as exc:
                permanent = 500 <= exc.code < 600
                await self._failed(row, f"SMTP {exc.code} {exc.message}", permanent=permanent)
                return
            except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
                await self._failed(row, f"{type(exc).__name__}: {exc}", permanent=False)
                return
            await self._set(row, status="delivered", sent_at=datetime.now(UTC), reason=None)

    def _message(self, row: Any) -> EmailMessage:
        message = EmailMessage()
        message["From"] = self._settings.mail_from
        message["To"] = row.recipient
        message["Subject"] = row.subject
        message["Message-ID"] = make_msgid(idstring=row.id, domain="dossier-gateway")
        message["X-Dossier-Code"] = row.dossier_code
        message["X-Notification-Id"] = row.id
        message.set_content(row.body)
        return message

    async def _failed(self, row: Any, reason: str, *, permanent: bool) -> None:
        settings = self._settings
        age = (datetime.now(UTC) - row.created_at).total_seconds()
        if not permanent and age < settings.retry_for_s:
            backoff = min(
                settings.retry_backoff_base_s * 2 ** (row.attempts), settings.retry_backoff_max_s
            )
            log.warning("notification %s: temporary failure (%s)", row.id, reason)
            await self._set(
                row,
                status="temporary-failure",
                reason=reason,
                next_attempt_at=datetime.now(UTC)
                + timedelta(seconds=random.uniform(backoff / 2, backoff)),
            )
            return
        log.error("notification %s: permanent failure (%s)", row.id, reason)
        await self._set(row, status="permanent-failure", reason=reason)

    async def _set(self, row: Any, **values: Any) -> None:
        async with self._sessions.begin() as session:
            await session.execute(
                notifications.update().where(notifications.c.id == row.id).values(**values)
            )
