"""Routing's journeys and deadline scheduler in-process, on a real database and a test clock:
what the deadline, supplement and statistics tests drive. Composed as the service composes
itself (services/routing/deps.py), with no worker running."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from google.protobuf.message import Message
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from core.calendar import WorkingCalendar
from core.catalogue import Catalogue
from core.clock import TestClock
from core.events import Event, from_kafka, new_event
from core.storage import create_tables
from gateway.v1 import dossier_pb2, events_pb2
from services.routing import models
from services.routing.deadlines import DeadlineScheduler
from services.routing.deps import RoutingDeps, compose
from services.routing.journeys import JourneyService
from services.routing.settings import RoutingSettings

T = TypeVar("T")
_numbers = itertools.count(1)


@dataclass
class Lifecycle:
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    catalogue: Catalogue
    calendar: WorkingCalendar
    clock: TestClock
    journeys: JourneyService
    scheduler: DeadlineScheduler
    deps: RoutingDeps

    @classmethod
    async def open(cls, database_url: str, now: datetime) -> Lifecycle:
        clock = TestClock(now)
        # What the tests count on, whatever the environment says.
        settings = RoutingSettings(
            database_url=database_url,
            dossier_events_topic="dossier.events",
            demo_agency_base_url="http://agency.invalid",
            deadline_override_s=0.0,
            deadline_override_procedures="",
            apology_working_days=2,
            calendar_extra_days_off=(),
            calendar_extra_working_days=(),
            trace_ui_url=None,
        )
        deps = compose(settings, clock=clock)
        engine = deps.runtime.engine
        await create_tables(engine, models.metadata)
        await deps.catalogue_store.load_files()
        return cls(
            engine,
            deps.sessions,
            deps.catalogue,
            deps.calendar,
            clock,
            deps.journeys,
            deps.deadlines,
            deps,
        )

    async def close(self) -> None:
        await self.engine.dispose()

    async def submit(self, procedure_code: str, agency: str | None = None) -> str:
        """A dossier received now, as intake would announce it; routing takes it in."""
        procedure = self.catalogue.procedure(procedure_code)
        assert procedure is not None
        now = self.clock.now()
        desk = agency or procedure.receiving_agency
        code = f"{desk}-{now:%y%m%d}-{next(_numbers):04d}"
        dossier = dossier_pb2.Dossier(
            code=code,
            procedure_code=procedure_code,
            receiving_agency_code=desk,
            applicant=dossier_pb2.Applicant(full_name="Nguyễn Thị Lan"),
        )
        dossier.received_at.FromDatetime(now)
        dossier.due_at.FromDatetime(self.calendar.add_working_days(now, procedure.total_days))
        event = new_event(
            events_pb2.DossierSubmitted(dossier=dossier), source="/test", dossier_code=code
        )
        await self.journeys.take_in([event])
        return code

    async def transfers(self, code: str) -> list[Any]:
        async with self.sessions() as session:
            query = select(models.transfers).where(models.transfers.c.dossier_code == code)
            return list((await session.execute(query.order_by("step_index"))).all())

    async def delivered(self, transfer_id: str, when: datetime) -> None:
        """What the delivery worker records when the agency's system takes the transfer."""
        async with self.sessions.begin() as session:
            await session.execute(
                models.transfers.update()
                .where(models.transfers.c.transfer_id == transfer_id)
                .values(status="delivered", delivered_at=when)
            )

    async def dossier(self, code: str) -> Any:
        async with self.sessions() as session:
            query = select(models.journeys).where(models.journeys.c.code == code)
            return (await session.execute(query)).one()

    async def events(self, kind: type[T], code: str | None = None) -> list[T]:
        """Events of one type still in the outbox (no relay runs here), oldest first."""
        async with self.sessions() as session:
            rows = (await session.execute(select(models.outbox).order_by(models.outbox.c.id))).all()
        decoded: list[Event] = [
            from_kafka(r.key, r.value, {k: v.encode() for k, v in r.headers.items()}) for r in rows
        ]
        found: list[Any] = [
            e.data
            for e in decoded
            if isinstance(e.data, kind) and (code is None or e.subject == code)
        ]
        return found

    async def statuses(self, code: str) -> list[int]:
        changes = await self.events(events_pb2.DossierStatusChanged, code)
        return [c.status for c in changes]


async def until(probe: Callable[[], Any], within_s: float = 5.0) -> Any:
    """Await probe() until it returns something truthy (for background workers)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while True:
        value = await probe()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {within_s}s; last value {value!r}")
        await asyncio.sleep(0.02)


def instant(message: Message, field: str) -> datetime:
    stamp = getattr(message, field)
    value: datetime = stamp.ToDatetime(tzinfo=UTC)
    return value
