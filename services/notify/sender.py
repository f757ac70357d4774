"""Sends recorded notifications by email (SMTP) and records each delivery status.

SMTP 4xx and connection failures are temporary (retried with backoff for a bounded time);
5xx answers are permanent (never retried). The Message-ID is the notification id, so a
resend after a crash mid-send can be recognised by the receiving side.
"""

from __future__ import annotations

import contextlib
import logging
import random
from dataclasses import dataclass
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
from core.wakeup import wait_for_work
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
        # One connection kept open across messages: a handshake per message (connect, EHLO,
        # STARTTLS, AUTH, QUIT) would cost more than the message itself.
        self._smtp: aiosmtplib.SMTP | None = None

    async def run(self) -> None:
        try:
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
                    await self._record([await self._send(row) for row in claimed])
                    continue
                await wait_for_work(self._wakeup, self._settings.send_poll_interval_s)
        finally:
            await self._disconnect()

    async def _connection(self) -> aiosmtplib.SMTP:
        if self._smtp is None or not self._smtp.is_connected:
            settings = self._settings
            smtp = aiosmtplib.SMTP(
                hostname=settings.smtp_host,
                port=settings.smtp_port,
                start_tls=settings.smtp_starttls,
                timeout=settings.smtp_timeout_s,
            )
            await smtp.connect()
            if settings.smtp_username:
                await smtp.login(settings.smtp_username, settings.smtp_password or "")
            self._smtp = smtp
        return self._smtp

    async def _disconnect(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is not None and smtp.is_connected:
            with contextlib.suppress(aiosmtplib.SMTPException, OSError):
                await smtp.quit()

    async def _send(self, row: Any) -> Outcome:
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
                smtp = await self._connection()
                await smtp.send_message(self._message(row))
            except aiosmtplib.SMTPRecipientsRefused as exc:
                permanent = all(500 <= r.code < 600 for r in exc.recipients)
                return Outcome(row, "; ".join(str(r) for r in exc.recipients), permanent)
            except aiosmtplib.SMTPResponseException as exc:
                return Outcome(row, f"SMTP {exc.code} {exc.message}", 500 <= exc.code < 600)
            except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
                await self._disconnect()  # the connection is in an unknown state
                return Outcome(row, f"{type(exc).__name__}: {exc}", permanent=False)
            return Outcome(row, None, permanent=False)

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

    async def _record(self, outcomes: list[Outcome]) -> None:
        """The statuses of a whole batch in one transaction."""
        now = datetime.now(UTC)
        async with self._sessions.begin() as session:
            for outcome in outcomes:
                await session.execute(
                    notifications.update()
                    .where(notifications.c.id == outcome.row.id)
                    .values(**self._status(outcome, now))
                )

    def _status(self, outcome: Outcome, now: datetime) -> dict[str, Any]:
        row, settings = outcome.row, self._settings
        if outcome.reason is None:
            return {"status": "delivered", "sent_at": now, "reason": None}
        age = (now - row.created_at).total_seconds()
        if not outcome.permanent and age < settings.retry_for_s:
            backoff = min(
                settings.retry_backoff_base_s * 2**row.attempts, settings.retry_backoff_max_s
            )
            log.warning("notification %s: temporary failure (%s)", row.id, outcome.reason)
            return {
                "status": "temporary-failure",
                "reason": outcome.reason,
                "next_attempt_at": now + timedelta(seconds=random.uniform(backoff / 2, backoff)),
            }
        log.error("notification %s: permanent failure (%s)", row.id, outcome.reason)
        return {"status": "permanent-failure", "reason": outcome.reason}


@dataclass(frozen=True)
class Outcome:
    row: Any
    # None when the server accepted the message.
    reason: str | None
    permanent: bool
