"""Turns dossier events into notifications: exactly one per event and channel."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from jinja2 import UndefinedError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.catalogue import Catalogue
from core.events import Event, PoisonEvent
from core.inbox import first_seen
from core.storage import upsert
from gateway.v1 import events_pb2
from services.notify.models import contacts, notifications, processed_events
from services.notify.templates import Rendered, render


class NotificationService:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], catalogue: Catalogue) -> None:
        self._sessions = sessions
        self._catalogue = catalogue
        self.waiting = asyncio.Event()

    event_types = frozenset(
        {
            "vn.gov.dossier.submitted.v1",
            "vn.gov.dossier.routed.v1",
            "vn.gov.dossier.completed.v1",
        }
    )

    async def handle(self, events: Sequence[Event]) -> None:
        """One notification per event and channel, for a whole batch in one transaction."""
        async with self._sessions.begin() as session:
            fresh = await first_seen(session, processed_events, events)
            for event in fresh:
                if isinstance(event.data, events_pb2.DossierSubmitted):
                    await self._remember_contact(session, event.data)
            known = await session.execute(
                select(contacts).where(contacts.c.dossier_code.in_({e.subject for e in fresh}))
            )
            by_dossier = {row.dossier_code: row._mapping for row in known}
            rows = [self._notification(event, by_dossier) for event in fresh]
            if rows:
                await session.execute(notifications.insert(), rows)
        self.waiting.set()

    def _notification(self, event: Event, by_dossier: dict[str, Any]) -> dict[str, Any]:
        contact = by_dossier.get(event.subject)
        if contact is None:
            raise PoisonEvent(f"no contact known for dossier {event.subject}")
        message = self._render(event, contact)
        email = contact["email"]
        now = datetime.now(UTC)
        return {
            "id": str(uuid.uuid4()),
            "event_id": event.id,
            "dossier_code": event.subject,
            "channel": "email",
            "recipient": email,
            "template": message.template,
            "subject": message.subject,
            "body": message.body,
            # Without an address there is nothing to send: recorded, never retried.
            "status": "created" if email else "permanent-failure",
            "reason": None if email else "no email address for the applicant",
            "attempts": 0,
            "next_attempt_at": now,
            "trace": event.trace,
            "created_at": now,
            "sent_at": None,
        }

    async def _remember_contact(
        self, session: AsyncSession, submitted: events_pb2.DossierSubmitted
    ) -> None:
        dossier = submitted.dossier
        applicant = dossier.applicant
        statement = upsert(session.get_bind().dialect.name, contacts).values(
            dossier_code=dossier.code,
            procedure_code=dossier.procedure_code,
            full_name=applicant.full_name,
            email=applicant.email or None,
            phone=applicant.phone or None,
        )
        await session.execute(statement.on_conflict_do_nothing())

    def _render(self, event: Event, contact: Any) -> Rendered:
        procedure = self._catalogue.procedure(contact["procedure_code"])
        fields: dict[str, Any] = {
            "code": event.subject,
            "full_name": contact["full_name"],
            "procedure_name": procedure.name if procedure else contact["procedure_code"],
        }
        data = event.data
        if isinstance(data, events_pb2.DossierSubmitted):
            template = "received"
            fields |= {
                "received_at": data.dossier.received_at.ToDatetime(tzinfo=UTC),
                "due_at": data.dossier.due_at.ToDatetime(tzinfo=UTC),
            }
        elif isinstance(data, events_pb2.DossierRouted):
            template = "routed"
            fields |= {
                "agency_name": data.agency_name,
                "step_name": data.step_name,
                "step_due_at": data.step_due_at.ToDatetime(tzinfo=UTC),
            }
        elif isinstance(data, events_pb2.DossierCompleted):
            template = "completed"
            fields |= {"completed_at": data.completed_at.ToDatetime(tzinfo=UTC)}
        else:
            raise PoisonEvent(f"no template for {event.type}")
        try:
            return render(template, fields)
        except UndefinedError as exc:
            raise PoisonEvent(f"template {template}: {exc}") from exc
