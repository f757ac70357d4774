"""Turns dossier events into notifications: exactly one per event, channel and subscriber.

Citizens are told through the channels their details and preference allow; agency systems
that subscribed get a signed callback. A notification that cannot be sent (no contact, an
invalid address, a template missing a field) is still recorded, with its reason, in a
terminal status: nothing loops, nothing vanishes.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from google.protobuf.message import Message
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.catalogue_client import CatalogueClient
from core.clock import SYSTEM_CLOCK, Clock
from core.events import TYPE_OF, Event
from core.handlers import EventHandlers
from core.inbox import first_seen
from core.storage import upsert
from gateway.v1 import events_pb2
from services.notify.callbacks import STATUS, callback_body, timestamps
from services.notify.models import contacts, notifications, processed_events
from services.notify.models import webhook_subscriptions as subscriptions
from services.notify.recipients import choose_channels
from services.notify.status import StatusLog
from services.notify.templates import MissingField, render

CHANNELS = ("email", "sms", "webhook")
# What citizens and agency systems are told about: each has a template and a callback.
NOTIFIED: tuple[type[Message], ...] = (
    events_pb2.DossierSubmitted,
    events_pb2.DossierRouted,
    events_pb2.DossierCompleted,
    events_pb2.SupplementRequested,
    events_pb2.DossierRefused,
    events_pb2.DossierOverdue,
)


@dataclass(frozen=True)
class Subject:
    """What an event tells: its template, personalisation and the agency it concerns."""

    template: str
    fields: dict[str, Any]
    agency_code: str


class NotificationService:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        catalogues: CatalogueClient,
        status_log: StatusLog,
        *,
        sms_enabled: bool,
        intake_url: str = "http://127.0.0.1:8080",
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._sessions = sessions
        self._catalogues = catalogues
        self._status_log = status_log
        self._clock = clock
        self._sms_enabled = sms_enabled
        self._intake_url = intake_url
        # One wake-up per channel sender: a shared event cleared by one could hide it from another.
        # In this process only: a peer replica's senders find these rows by their poll
        # (SEND_POLL_INTERVAL_S), and claim them with a lease, so none is sent twice.
        self.waiting = {channel: asyncio.Event() for channel in CHANNELS}

    event_types = frozenset(TYPE_OF[message] for message in NOTIFIED)
    assert frozenset(STATUS) == event_types

    def subscribe(self, handlers: EventHandlers) -> None:
        """Every event notify tells about goes to `handle`, a whole batch in one call."""
        for message in NOTIFIED:
            handlers.on(message)(self.handle)

    async def handle(self, events: Sequence[Event]) -> None:
        """Every notification of a whole batch, with its first status, in one transaction."""
        now = self._clock.now()
        async with self._sessions.begin() as session:
            fresh = await first_seen(session, processed_events, events)
            if not fresh:
                return
            await self._remember_contacts(session, fresh)
            known = await session.execute(
                select(contacts).where(contacts.c.dossier_code.in_({e.subject for e in fresh}))
            )
            by_dossier = {row.dossier_code: row._mapping for row in known}
            names = {code: await self._procedure_name(c) for code, c in by_dossier.items()}
            subscribed = [r._mapping for r in await session.execute(select(subscriptions))]
            rows: list[dict[str, Any]] = []
            for event in fresh:
                contact = by_dossier.get(event.subject)
                subject = self._subject(event, contact, names.get(event.subject, ""))
                rows += self._for_citizen(event, subject, contact, now)
                rows += self._for_agencies(event, subject, contact, subscribed, now)
            if rows:
                await session.execute(notifications.insert(), rows)
                await self._status_log.record(session, rows, now)
        for waiting in self.waiting.values():
            waiting.set()

    def _for_citizen(
        self, event: Event, subject: Subject, contact: Any, now: datetime
    ) -> list[dict[str, Any]]:
        email = contact["email"] if contact else None
        phone = contact["phone"] if contact else None
        preferred = (contact["preferred_channel"] if contact else "") or ""
        rows = []
        for recipient in choose_channels(email, phone, preferred, sms_enabled=self._sms_enabled):
            row = _row(event, recipient.channel, recipient.address, now)
            if recipient.problem is not None:
                row |= {"template": subject.template, "status": "permanent-failure"}
                rows.append(row | {"reason": recipient.problem})
                continue
            try:
                rendered = render(subject.template, recipient.channel, subject.fields)
            except MissingField as exc:
                row |= {"template": subject.template, "status": "technical-failure"}
                row["reason"] = f"not sent, a personalisation field is missing: {exc}"
                rows.append(row)
                continue
            row |= {
                "template": rendered.template,
                "template_version": rendered.version,
                "subject": rendered.subject,
                "body": rendered.body,
            }
            rows.append(row)
        return rows

    def _for_agencies(
        self, event: Event, subject: Subject, contact: Any, subscribed: list[Any], now: datetime
    ) -> list[dict[str, Any]]:
        matching = [
            s
            for s in subscribed
            if s["agency_code"] == subject.agency_code and event.type in s["event_types"]
        ]
        if not matching:
            return []
        # Built from an allow-list of fields (services/notify/callbacks.py), never from the
        # event's data: the callback goes to a URL outside the gateway.
        procedure_code = contact["procedure_code"] if contact else None
        body = callback_body(event, procedure_code=procedure_code, intake_url=self._intake_url)
        return [
            _row(event, "webhook", s["url"], now)
            | {
                "subscription_id": s["id"],
                "template": subject.template,
                "template_version": 2,
                "subject": event.type,
                "body": body,
            }
            for s in matching
        ]

    async def _remember_contacts(self, session: AsyncSession, fresh: Sequence[Event]) -> None:
        values = []
        for event in fresh:
            if not isinstance(event.data, events_pb2.DossierSubmitted):
                continue
            dossier = event.data.dossier
            applicant = dossier.applicant
            values.append(
                {
                    "dossier_code": dossier.code,
                    "procedure_code": dossier.procedure_code,
                    "catalogue_version": event.data.catalogue_version,
                    "full_name": applicant.full_name,
                    "email": applicant.email or None,
                    "phone": applicant.phone or None,
                    "preferred_channel": applicant.preferred_channel,
                    "receiving_agency_code": dossier.receiving_agency_code or None,
                    "received_at": dossier.received_at.ToDatetime(tzinfo=UTC),
                }
            )
        if values:
            statement = upsert(session.get_bind().dialect.name, contacts).values(values)
            await session.execute(statement.on_conflict_do_nothing())

    async def _procedure_name(self, contact: Any) -> str:
        """As the catalogue version the dossier was received under names the procedure: the
        citizen reads the name they filed under, however it was renamed since."""
        catalogue = await self._catalogues.at(contact["catalogue_version"])
        procedure = catalogue.procedure(contact["procedure_code"])
        return procedure.name if procedure else str(contact["procedure_code"])

    def _subject(self, event: Event, contact: Any, procedure_name: str) -> Subject:
        """Template and fields; an empty or unset field is left out, so StrictUndefined
        stops a message that would need it instead of sending a blank."""
        data = event.data
        fields: dict[str, Any] = {"code": event.subject}
        if contact is not None:
            fields["full_name"] = contact["full_name"]
            fields["procedure_name"] = procedure_name
            if contact["received_at"] is not None:
                fields["received_at"] = contact["received_at"]
        agency = contact["receiving_agency_code"] if contact else ""
        if isinstance(data, events_pb2.DossierSubmitted):
            template, agency = "received", data.dossier.receiving_agency_code
            fields |= timestamps(data.dossier, "received_at", "due_at")
        elif isinstance(data, events_pb2.DossierRouted):
            template, agency = "routed", data.agency_code
            fields |= _texts(agency_name=data.agency_name, step_name=data.step_name)
            fields |= timestamps(data, "step_due_at")
        elif isinstance(data, events_pb2.DossierCompleted):
            template = "completed"
            fields |= timestamps(data, "completed_at")
        elif isinstance(data, events_pb2.SupplementRequested):
            template, agency = "supplement", data.agency_code
            fields |= _texts(agency_name=data.agency_name, reason=data.reason)
        elif isinstance(data, events_pb2.DossierRefused):
            template, agency = "refused", data.agency_code
            fields |= _texts(agency_name=data.agency_name, reason=data.reason)
        elif isinstance(data, events_pb2.DossierOverdue):
            template, agency = "apology", data.agency_code
            known = self._catalogues.catalogue.agencies.get(data.agency_code)
            fields |= _texts(agency_name=known.name if known else "", reason=data.reason)
            fields |= timestamps(data, "due_at", "new_due_at")
        else:  # the consumer only hands over event_types
            raise AssertionError(f"no template for {event.type}")
        return Subject(template, fields, agency or "")


def _row(event: Event, channel: str, recipient: str | None, now: datetime) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "event_id": event.id,
        "dossier_code": event.subject,
        "channel": channel,
        "subscription_id": "",
        "recipient": recipient,
        "template": "",
        "template_version": 0,
        "subject": "",
        "body": "",
        "status": "created",
        "reason": None,
        "attempts": 0,
        "next_attempt_at": now,
        "trace": event.trace,
        "created_at": now,
        "updated_at": now,
        "sent_at": None,
        "in_flight_at": None,
    }


def _texts(**values: str) -> dict[str, str]:
    return {name: value for name, value in values.items() if value}
