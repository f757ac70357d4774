"""A dossier's journey across the agencies of its procedure, one step after another.

Every state change and the event announcing it are committed together (outbox), and every
handler is idempotent (inbox for events, current state for agency reports).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from opentelemetry import trace
from opentelemetry.trace import Link
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.calendar import WorkingCalendar
from core.catalogue import Catalogue, Procedure, Step
from core.events import Event, PoisonEvent, new_event
from core.inbox import first_seen
from core.outbox import Outbox
from core.problems import Problem
from core.telemetry import context_from_carrier, current_carrier
from gateway.v1 import events_pb2
from services.routing.models import journeys, processed_events, transfers

SOURCE = "/gateway/routing"
TRANSFER_NAMESPACE = uuid.UUID("6f1c2b8e-5d4a-4c1e-9a51-0d7f3e2b9c10")
tracer = trace.get_tracer("gateway.routing")


def transfer_id_for(dossier_code: str, step_index: int) -> str:
    return str(uuid.uuid5(TRANSFER_NAMESPACE, f"{dossier_code}/{step_index}"))


def timestamp(value: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


class JourneyService:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        outbox: Outbox,
        catalogue: Catalogue,
        calendar: WorkingCalendar,
    ) -> None:
        self.sessions = sessions
        self._outbox = outbox
        self._catalogue = catalogue
        self._calendar = calendar
        # Set after a commit that created a transfer: the delivery worker starts at once.
        self.transfers_waiting = asyncio.Event()

    async def take_in(self, events: Sequence[Event]) -> None:
        """Handler of DossierSubmitted: start each journey at its procedure's first step."""
        now = datetime.now(UTC)
        async with self.sessions.begin() as session:
            for event in await first_seen(session, processed_events, events):
                await self._start_journey(session, event, now)
        self.transfers_waiting.set()

    async def _start_journey(self, session: AsyncSession, event: Event, now: datetime) -> None:
        assert isinstance(event.data, events_pb2.DossierSubmitted)
        dossier = event.data.dossier
        procedure = self._catalogue.procedure(dossier.procedure_code)
        if procedure is None:
            raise PoisonEvent(f"procedure {dossier.procedure_code!r} is not in the catalogue")
        await session.execute(
            journeys.insert().values(
                code=dossier.code,
                procedure_code=procedure.code,
                status="routing",
                current_stage=0,
                dossier=dossier.SerializeToString(),
                trace=event.trace,
                received_at=dossier.received_at.ToDatetime(tzinfo=UTC),
                due_at=dossier.due_at.ToDatetime(tzinfo=UTC),
            )
        )
        await self._route_stage(session, dossier.code, procedure, 0, now, event.trace)

    async def report_outcome(
        self, transfer_id: str, outcome: str, note: str, agency_code: str
    ) -> dict[str, Any]:
        """An agency reports its step done; the dossier moves on, or completes."""
        async with self.sessions.begin() as session:
            transfer = (
                await session.execute(
                    select(transfers)
                    .where(transfers.c.transfer_id == transfer_id)
                    .with_for_update()
                )
            ).first()
            if transfer is None:
                raise Problem(404, "transfer-not-found", "No such transfer", transfer_id)
            if transfer.agency_code != agency_code:
                raise Problem(
                    403,
                    "step-held-by-another-agency",
                    "Only the agency holding this step may report its outcome",
                    f"transfer {transfer_id} is held by {transfer.agency_code}, not {agency_code}",
                )
            if transfer.status == "completed":
                return {"transfer_id": transfer_id, "status": "completed", "replayed": True}
            journey = (
                await session.execute(
                    select(journeys)
                    .where(journeys.c.code == transfer.dossier_code)
                    .with_for_update()
                )
            ).one()
            # Agencies need not propagate trace context: continue the dossier's own trace,
            # linked to whatever trace the agency's request came with.
            with tracer.start_as_current_span(
                "dossier step completed",
                context=context_from_carrier(journey.trace),
                links=[Link(trace.get_current_span().get_span_context())],
                attributes={"dossier.code": journey.code, "agency.code": transfer.agency_code},
            ):
                await self._complete_step(session, journey, transfer, outcome, note)
        self.transfers_waiting.set()
        return {"transfer_id": transfer_id, "status": "completed", "replayed": False}

    async def _complete_step(
        self, session: AsyncSession, journey: Any, transfer: Any, outcome: str, note: str
    ) -> None:
        now = datetime.now(UTC)
        await session.execute(
            transfers.update()
            .where(transfers.c.transfer_id == transfer.transfer_id)
            .values(
                status="completed",
                completed_at=now,
                delivered_at=transfer.delivered_at or now,
                last_error=None,
            )
        )
        completed = events_pb2.StepCompleted(
            dossier_code=journey.code,
            step_index=transfer.step_index,
            agency_code=transfer.agency_code,
            transfer_id=transfer.transfer_id,
            outcome=outcome,
            completed_at=timestamp(now),
        )
        await self._outbox.put(
            session, new_event(completed, source=SOURCE, dossier_code=journey.code)
        )
        # The journey row is locked (FOR UPDATE), so parallel branches finishing at the same
        # moment are counted one after the other: exactly one of them sees the join complete.
        still_open = await session.scalar(
            select(func.count())
            .select_from(transfers)
            .where(
                transfers.c.dossier_code == journey.code,
                transfers.c.stage == transfer.stage,
                transfers.c.status != "completed",
            )
        )
        if still_open:
            return
        procedure = self._catalogue.procedure(journey.procedure_code)
        assert procedure is not None
        next_stage = transfer.stage + 1
        if next_stage < procedure.stage_count:
            await session.execute(
                journeys.update()
                .where(journeys.c.code == journey.code)
                .values(current_stage=next_stage)
            )
            await self._route_stage(
                session, journey.code, procedure, next_stage, now, current_carrier()
            )
            return
        await session.execute(
            journeys.update()
            .where(journeys.c.code == journey.code)
            .values(status="completed", completed_at=now)
        )
        done = events_pb2.DossierCompleted(
            dossier_code=journey.code, completed_at=timestamp(now), late=now > journey.due_at
        )
        await self._outbox.put(session, new_event(done, source=SOURCE, dossier_code=journey.code))

    async def _route_stage(
        self,
        session: AsyncSession,
        code: str,
        procedure: Procedure,
        stage: int,
        now: datetime,
        trace_carrier: dict[str, str],
    ) -> None:
        """Send the dossier to every agency of the stage: one transfer per step."""
        for step in procedure.stage(stage):
            await self._route_step(session, code, step, now, trace_carrier)

    async def _route_step(
        self,
        session: AsyncSession,
        code: str,
        step: Step,
        now: datetime,
        trace_carrier: dict[str, str],
    ) -> None:
        index = step.index
        agency = self._catalogue.agency(step.agency_code)
        transfer_id = transfer_id_for(code, index)
        due_at = self._calendar.add_working_days(now, step.days)
        await session.execute(
            transfers.insert().values(
                transfer_id=transfer_id,
                dossier_code=code,
                step_index=index,
                stage=step.stage,
                step_name=step.name,
                agency_code=agency.code,
                status="pending",
                attempts=0,
                next_attempt_at=now,
                trace=trace_carrier,
                routed_at=now,
                due_at=due_at,
            )
        )
        routed = events_pb2.DossierRouted(
            dossier_code=code,
            step_index=index,
            step_name=step.name,
            agency_code=agency.code,
            agency_name=agency.name,
            transfer_id=transfer_id,
            step_due_at=timestamp(due_at),
        )
        event = new_event(routed, source=SOURCE, dossier_code=code)
        await self._outbox.put(session, event, trace=trace_carrier)
