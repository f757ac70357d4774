"""A dossier's journey across the agencies of its procedure, one stage after another.

Every state change and the event announcing it are committed together (outbox), and every
handler is idempotent (inbox for events, current state for agency reports). Lifecycle rules
live in lifecycle.py; deadlines in deadlines.py; supplements and refusals in outcomes.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from opentelemetry import trace
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.audit import Caller
from core.calendar import WorkingCalendar
from core.catalogue import Catalogue, Procedure, Step
from core.clock import Clock, SystemClock
from core.events import Event, PoisonEvent, new_event, timestamp
from core.inbox import first_seen
from core.outbox import Outbox, insert_rows
from core.problems import Problem
from core.telemetry import current_carrier, dossier_parent
from gateway.v1 import events_pb2
from services.routing import queries
from services.routing.deadlines import rearm
from services.routing.lifecycle import (
    SOURCE,
    DossierFacts,
    State,
    TransitionLost,
    check_transition,
    claim_transfer,
    facts_of,
    status_change,
    transition,
)
from services.routing.models import (
    TransferStatus,
    journeys,
    processed_events,
    status_changes,
    transfer_id_for,
    transfers,
)
from services.routing.outcomes import (
    PAST,
    TRANSFER_STATUS,
    Outcome,
    OutcomeApplied,
    check_holder,
    refuse_step,
    replay_status,
    request_supplement,
)
from services.routing.rows import JourneyRow, Json, TransferRow

# The procedure as a catalogue version had it (catalogue_store.CatalogueStore.procedure).
ProcedureAt = Callable[[int, str, AsyncSession], Awaitable[Procedure | None]]
tracer = trace.get_tracer("gateway.routing")

__all__ = ["SOURCE", "JourneyService"]


class JourneyService:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        outbox: Outbox,
        catalogue: Catalogue,
        calendar: WorkingCalendar,
        clock: Clock | None = None,
        *,
        deadline_override_s: float = 0.0,
        deadline_override_procedures: frozenset[str] = frozenset(),
        procedure_at: ProcedureAt,
    ) -> None:
        self.sessions = sessions
        self.outbox = outbox
        self.catalogue = catalogue
        # Steps are the version's the dossier was received under, whatever was loaded since.
        self._procedure_at = procedure_at
        self.calendar = calendar
        self.clock: Clock = clock or SystemClock()
        self._override = timedelta(seconds=deadline_override_s)
        self._override_procedures = deadline_override_procedures
        # Set after a commit that created a transfer: the delivery worker starts at once.
        self.transfers_waiting = asyncio.Event()
        # Set after a commit that armed or moved a deadline: the scheduler looks again.
        self.deadlines_changed = asyncio.Event()

    def _overridden(self, procedure_code: str) -> bool:
        return bool(self._override) and procedure_code in self._override_procedures

    async def take_in(self, events: Sequence[Event]) -> None:
        """Handler of DossierSubmitted: receive each dossier and start its first stage.

        A batch is written with one multi-row insert per table, not statements per dossier."""
        now = self.clock.now()
        async with self.sessions.begin() as session:
            batch = _TakeIn()
            for event in await first_seen(session, processed_events, events):
                assert isinstance(event.data, events_pb2.DossierSubmitted)
                version, code = event.data.catalogue_version, event.data.dossier.procedure_code
                # As the catalogue version intake received the dossier under had it.
                procedure = await self._procedure_at(version, code, session)
                if procedure is None:
                    raise PoisonEvent(f"procedure {code!r} is not in catalogue version {version}")
                self._plan_journey(batch, event, procedure, version, now)
            await batch.write(session, self.outbox)
        self.transfers_waiting.set()
        self.deadlines_changed.set()

    def _plan_journey(
        self, batch: _TakeIn, event: Event, procedure: Procedure, version: int, now: datetime
    ) -> None:
        assert isinstance(event.data, events_pb2.DossierSubmitted)
        dossier = event.data.dossier
        received_at = dossier.received_at.ToDatetime(tzinfo=now.tzinfo)
        due_at = dossier.due_at.ToDatetime(tzinfo=now.tzinfo)
        if self._overridden(procedure.code):
            due_at = now + self._override
        first_steps = procedure.stage(0)
        step_dues = [self._step_due(procedure, step, now) for step in first_steps]
        # Registered (1) by intake; received (2) and processing (4) here, in one insert.
        check_transition(dossier.code, State.REGISTERED, State.RECEIVED)
        check_transition(dossier.code, State.RECEIVED, State.PROCESSING)
        batch.dossiers.append(
            {
                "code": dossier.code,
                "procedure_code": procedure.code,
                "status": State.PROCESSING.value,
                "current_stage": 0,
                "dossier": dossier.SerializeToString(),
                "trace": event.trace,
                "received_at": received_at,
                "due_at": due_at,
                "appointment_at": due_at,
                "receiving_agency_code": dossier.receiving_agency_code,
                "catalogue_version": version,
                "paused_s": 0.0,
                "next_deadline_at": min([due_at, *step_dues]),
            }
        )
        registered = DossierFacts(
            dossier.code, procedure.code, State.REGISTERED, received_at, due_at
        )
        received = replace(registered, state=State.RECEIVED)
        for facts, to, agency_code in (
            (registered, State.RECEIVED, dossier.receiving_agency_code),
            (received, State.PROCESSING, first_steps[0].agency_code),
        ):
            row, changed = status_change(facts, to, agency_code=agency_code, now=now)
            batch.changes.append(row)
            batch.events.append((changed, event.trace))
        for step, step_due in zip(first_steps, step_dues, strict=True):
            row, routed = self._transfer(dossier.code, step, now, step_due, event.trace)
            batch.transfers.append(row)
            batch.events.append((routed, event.trace))

    async def report_outcome(
        self,
        transfer_id: str,
        outcome: Outcome,
        note: str,
        caller: Caller,
        details: Json | None = None,
    ) -> OutcomeApplied:
        """An agency reports its step: done, supplement needed, or refused. Only the agency
        the step was delivered to may report it. Concurrent reports of one step are decided
        by the transfer's conditional update: one applies, the others answer as replays (the
        same outcome) or 409 (another one)."""
        for _ in range(_LOST_RACE_RETRIES):
            try:
                return await self._apply_outcome(transfer_id, outcome, note, caller, details)
            except TransitionLost:
                continue  # another report won meanwhile: answer from the state it left
        raise Problem(
            409, "transfer-contended", "The step is being reported concurrently", transfer_id
        )

    async def _apply_outcome(
        self,
        transfer_id: str,
        outcome: Outcome,
        note: str,
        caller: Caller,
        details: Json | None,
    ) -> OutcomeApplied:
        async with self.sessions.begin() as session:
            transfer = await queries.transfer(session, transfer_id, lock=True)
            if transfer is None:
                raise Problem(404, "transfer-not-found", "No such transfer", transfer_id)
            check_holder(transfer, caller)
            replayed = replay_status(transfer.status, outcome, transfer_id)
            if replayed is not None:
                return {"transfer_id": transfer_id, "status": replayed, "replayed": True}
            # The transition itself, won by exactly one writer even where SELECT ... FOR
            # UPDATE locks nothing (SQLite): the update applies only to the status read.
            await claim_transfer(session, transfer, TRANSFER_STATUS[outcome])
            # Read after the claim: on SQLite the transaction (and its write lock) begins
            # with the claim, so this row is the latest, not the one before a rival's commit.
            journey = await queries.journey(session, transfer.dossier_code, lock=True)
            assert journey is not None  # a transfer's dossier is never deleted
            # Agencies need not propagate trace context: the span is in the dossier's trace
            # whatever context the request came with (core/telemetry.py says why).
            parent, links = dossier_parent(journey.trace)
            with tracer.start_as_current_span(
                f"dossier step {PAST[outcome]}",
                context=parent,
                links=links,
                attributes={"dossier.code": journey.code, "agency.code": transfer.agency_code},
            ):
                now = self.clock.now()
                if outcome == "done":
                    await self._complete_step(session, journey, transfer, note, details, now)
                elif outcome == "supplement":
                    await request_supplement(self, session, journey, transfer, note, now)
                else:
                    await refuse_step(self, session, journey, transfer, note, now)
                await rearm(session, journey.code)
        self.transfers_waiting.set()
        self.deadlines_changed.set()
        return {"transfer_id": transfer_id, "status": TRANSFER_STATUS[outcome], "replayed": False}

    async def _complete_step(
        self,
        session: AsyncSession,
        journey: JourneyRow,
        transfer: TransferRow,
        note: str,
        details: Json | None,
        now: datetime,
    ) -> None:
        await session.execute(
            transfers.update()
            .where(transfers.c.transfer_id == transfer.transfer_id)
            .values(
                status=TransferStatus.COMPLETED,
                completed_at=now,
                delivered_at=transfer.delivered_at or now,
                last_error=None,
                outcome={"outcome": "done", "note": note, **(details or {})},
            )
        )
        completed = events_pb2.StepCompleted(
            dossier_code=journey.code,
            step_index=transfer.step_index,
            agency_code=transfer.agency_code,
            transfer_id=transfer.transfer_id,
            outcome="done",
            completed_at=timestamp(now),
        )
        await self.outbox.put(
            session, new_event(completed, source=SOURCE, dossier_code=journey.code)
        )
        # The journey row is locked (FOR UPDATE; on SQLite the claim took the one write lock),
        # so parallel branches finishing at the same moment are counted one after the other:
        # exactly one of them sees the join complete.
        still_open = await session.scalar(
            select(func.count())
            .select_from(transfers)
            .where(
                transfers.c.dossier_code == journey.code,
                transfers.c.stage == transfer.stage,
                transfers.c.status != TransferStatus.COMPLETED,
            )
        )
        if still_open:
            return
        procedure = await self._procedure_at(
            journey.catalogue_version, journey.procedure_code, session
        )
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
            .values(completed_at=now, finished_at=now, next_deadline_at=None)
        )
        await transition(
            session,
            self.outbox,
            facts_of(journey, finished_at=now),
            State.DECIDED,
            agency_code=transfer.agency_code,
            now=now,
        )
        done = events_pb2.DossierCompleted(
            dossier_code=journey.code, completed_at=timestamp(now), late=now > journey.due_at
        )
        await self.outbox.put(session, new_event(done, source=SOURCE, dossier_code=journey.code))

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
            due_at = self._step_due(procedure, step, now)
            await self._route_step(session, code, step, now, due_at, trace_carrier)

    def _step_due(self, procedure: Procedure, step: Step, now: datetime) -> datetime:
        if self._overridden(procedure.code):
            return now + self._override
        return self.calendar.add_working_days(now, step.days)

    async def _route_step(
        self,
        session: AsyncSession,
        code: str,
        step: Step,
        now: datetime,
        due_at: datetime,
        trace_carrier: dict[str, str],
    ) -> None:
        row, routed = self._transfer(code, step, now, due_at, trace_carrier)
        await session.execute(transfers.insert().values(row))
        await self.outbox.put(session, routed, trace=trace_carrier)

    def _transfer(
        self, code: str, step: Step, now: datetime, due_at: datetime, trace: dict[str, str]
    ) -> tuple[dict[str, object], Event]:
        """The transfer row of a step and its DossierRouted event."""
        agency = self.catalogue.agency(step.agency_code)
        transfer_id = transfer_id_for(code, step.index)
        row: dict[str, object] = {
            "transfer_id": transfer_id,
            "dossier_code": code,
            "step_index": step.index,
            "stage": step.stage,
            "step_name": step.name,
            "agency_code": agency.code,
            "status": TransferStatus.PENDING,
            "attempts": 0,
            "replays": 0,
            "next_attempt_at": now,
            "trace": trace,
            "routed_at": now,
            "due_at": due_at,
            "round": 0,
            "supplement_s": 0.0,
            "delivery_s": 0.0,
        }
        routed = events_pb2.DossierRouted(
            dossier_code=code,
            step_index=step.index,
            step_name=step.name,
            agency_code=agency.code,
            agency_name=agency.name,
            transfer_id=transfer_id,
            step_due_at=timestamp(due_at),
        )
        return row, new_event(routed, source=SOURCE, dossier_code=code)


@dataclass
class _TakeIn:
    """Rows and events of a batch of dossiers taken in, written table by table."""

    dossiers: list[dict[str, object]] = field(default_factory=list)
    changes: list[dict[str, object]] = field(default_factory=list)
    transfers: list[dict[str, object]] = field(default_factory=list)
    events: list[tuple[Event, dict[str, str] | None]] = field(default_factory=list)

    async def write(self, session: AsyncSession, outbox: Outbox) -> None:
        if not self.dossiers:
            return
        await insert_rows(session, journeys, self.dossiers)
        await insert_rows(session, status_changes, self.changes)
        await insert_rows(session, transfers, self.transfers)
        await outbox.put_many(session, self.events)


# A report that lost the race is answered from the winner's state on the next try; a third
# loss in a row would mean reports keep flipping the step, which no valid sequence does.
_LOST_RACE_RETRIES = 3
