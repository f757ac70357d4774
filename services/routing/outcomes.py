"""What happens besides "done": an agency asks for a supplement or refuses the dossier, the
citizen supplements, the desk hands the result over.

A supplement request stops the dossier's clock (Decree 61/2018: the time waiting for the
citizen does not count). When the citizen supplements, every due time moves forward by the
office time the clock stood still, and the dossier goes back to the agency that asked, as a
new delivery round: the transfer id stays (it names the step) and the round goes into the
delivery's idempotency key, so the agency does not drop it as a duplicate.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Literal, Protocol, TypedDict

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.audit import Caller, forbidden
from core.calendar import WorkingCalendar
from core.catalogue import Agency, Catalogue
from core.clock import Clock
from core.events import new_event
from core.outbox import Outbox
from core.problems import Problem
from gateway.v1 import events_pb2
from services.routing import queries
from services.routing.deadlines import rearm
from services.routing.lifecycle import (
    SOURCE,
    State,
    announce,
    check_transition,
    claim,
    facts_of,
    transition,
)
from services.routing.models import CLOSED_TRANSFERS, TransferStatus, journeys, transfers
from services.routing.rows import JourneyRow, TransferRow

# What an agency reports of its step.
Outcome = Literal["done", "supplement", "refused"]


class OutcomeApplied(TypedDict):
    transfer_id: str
    status: str
    replayed: bool


class Resumed(TypedDict):
    """Where the desk's record left the dossier (due_at: after a supplement)."""

    dossier_code: str
    status: str
    due_at: datetime


class Returned(TypedDict):
    dossier_code: str
    status: str


class RoutingParts(Protocol):
    """What the outcome paths need of routing (JourneyService has it): a structural type,
    so this module does not import journeys.py, which imports it."""

    sessions: async_sessionmaker[AsyncSession]
    outbox: Outbox
    catalogue: Catalogue
    calendar: WorkingCalendar
    clock: Clock
    transfers_waiting: asyncio.Event
    deadlines_changed: asyncio.Event


async def request_supplement(
    service: RoutingParts,
    session: AsyncSession,
    journey: JourneyRow,
    transfer: TransferRow,
    reason: str,
    now: datetime,
) -> None:
    state = State(journey.status)
    # Parallel branches may both ask: the clock stopped at the first request.
    if state is not State.SUPPLEMENT_REQUESTED:
        check_transition(journey.code, state, State.SUPPLEMENT_REQUESTED)
    await session.execute(
        transfers.update()
        .where(transfers.c.transfer_id == transfer.transfer_id)
        .values(
            status=TransferStatus.SUPPLEMENT_REQUESTED,
            outcome={"outcome": "supplement", "reason": reason},
            supplement_requested_at=now,
        )
    )
    agency = await _announce_step_event(
        service, session, journey, transfer, events_pb2.SupplementRequested, reason, now
    )
    if state is State.SUPPLEMENT_REQUESTED:
        return
    await session.execute(
        journeys.update().where(journeys.c.code == journey.code).values(paused_at=now)
    )
    await transition(
        session,
        service.outbox,
        facts_of(journey),
        State.SUPPLEMENT_REQUESTED,
        agency_code=agency.code,
        now=now,
        reason=reason,
    )


async def refuse_step(
    service: RoutingParts,
    session: AsyncSession,
    journey: JourneyRow,
    transfer: TransferRow,
    reason: str,
    now: datetime,
) -> None:
    """The journey ends: the refusing step is closed, every other open step cancelled."""
    check_transition(journey.code, State(journey.status), State.REFUSED)
    await session.execute(
        transfers.update()
        .where(transfers.c.transfer_id == transfer.transfer_id)
        .values(
            status=TransferStatus.REFUSED,
            completed_at=now,
            outcome={"outcome": "refused", "reason": reason},
        )
    )
    await session.execute(
        transfers.update()
        .where(
            transfers.c.dossier_code == journey.code,
            transfers.c.status.notin_(CLOSED_TRANSFERS),
        )
        .values(status=TransferStatus.CANCELLED)
    )
    await session.execute(
        journeys.update()
        .where(journeys.c.code == journey.code)
        .values(finished_at=now, paused_at=None)
    )
    agency = await _announce_step_event(
        service, session, journey, transfer, events_pb2.DossierRefused, reason, now
    )
    await transition(
        session,
        service.outbox,
        facts_of(journey, finished_at=now),
        State.REFUSED,
        agency_code=agency.code,
        now=now,
        reason=reason,
    )


StepEvent = events_pb2.SupplementRequested | events_pb2.DossierRefused


async def _announce_step_event(
    service: RoutingParts,
    session: AsyncSession,
    journey: JourneyRow,
    transfer: TransferRow,
    kind: type[StepEvent],
    reason: str,
    now: datetime,
) -> Agency:
    """An agency's supplement request or refusal, with its reason, for notify and the desk."""
    agency = service.catalogue.agency(transfer.agency_code)
    event = kind(
        dossier_code=journey.code,
        step_index=transfer.step_index,
        agency_code=agency.code,
        agency_name=agency.name,
        reason=reason,
    )
    stamp = (
        event.requested_at
        if isinstance(event, events_pb2.SupplementRequested)
        else event.refused_at
    )
    stamp.FromDatetime(now)
    await service.outbox.put(session, new_event(event, source=SOURCE, dossier_code=journey.code))
    return agency


async def supplement(
    service: RoutingParts,
    code: str,
    documents: list[dict[str, str]],
    note: str,
    desk: Caller,
) -> Resumed:
    """The citizen's supplement: the clock resumes and the asking agencies get the dossier.
    Recorded only by the desk that received the dossier."""
    async with service.sessions.begin() as session:
        journey = await _at_desk(session, code, desk, "record-supplement")
        if journey.status != State.SUPPLEMENT_REQUESTED.value:
            raise Problem(
                409,
                "no-supplement-requested",
                "No agency is waiting for a supplement",
                f"dossier {code} is {journey.status}",
                current_state=journey.status,
            )
        # The transition first, so one of concurrent supplements resumes the clock; then
        # the row again, as the winner's transaction sees it (SQLite: after the write lock).
        await claim(session, code, State.SUPPLEMENT_REQUESTED, State.PROCESSING)
        journey = await _locked(session, code)
        # The dossier waited for the citizen: its clock stood still since then.
        assert journey.paused_at is not None
        assert journey.appointment_at is not None
        now = service.clock.now()
        stopped = service.calendar.working_time_between(journey.paused_at, now)
        waited_s = (now - journey.paused_at).total_seconds()
        due_at = service.calendar.add_working_time(journey.due_at, stopped)
        appointment_at = service.calendar.add_working_time(journey.appointment_at, stopped)
        await session.execute(
            journeys.update()
            .where(journeys.c.code == code)
            .values(
                due_at=due_at,
                appointment_at=appointment_at,
                paused_at=None,
                paused_s=journeys.c.paused_s + waited_s,
            )
        )
        await _resume_steps(service, session, code, stopped, waited_s, now)
        await announce(
            session,
            service.outbox,
            facts_of(journey, state=State.SUPPLEMENT_REQUESTED, due_at=due_at),
            State.PROCESSING,
            agency_code=journey.receiving_agency_code,
            now=now,
            reason=note,
            details={"documents": documents, "clock_stopped_s": stopped.total_seconds()},
        )
        await rearm(session, code)
    service.transfers_waiting.set()
    service.deadlines_changed.set()
    return {"dossier_code": code, "status": State.PROCESSING.value, "due_at": due_at}


async def _resume_steps(
    service: RoutingParts,
    session: AsyncSession,
    code: str,
    stopped: timedelta,
    waited_s: float,
    now: datetime,
) -> None:
    for step in await queries.open_steps(session, [code]):
        values: dict[str, object] = {
            "due_at": service.calendar.add_working_time(step.due_at, stopped)
        }
        if step.status == TransferStatus.SUPPLEMENT_REQUESTED:
            assert step.supplement_requested_at is not None  # set with the status
            values |= {
                "status": TransferStatus.PENDING,
                "round": step.round + 1,
                "round_started_at": now,
                "delivery_s": step.delivery_s + delivery_wait(step, step.supplement_requested_at),
                "attempts": 0,
                "next_attempt_at": now,
                "last_error": None,
                "supplement_s": step.supplement_s + waited_s,
            }
        await session.execute(
            transfers.update().where(transfers.c.transfer_id == step.transfer_id).values(values)
        )


def delivery_wait(step: TransferRow, round_end: datetime) -> float:
    """Seconds the step's current round waited to be delivered (up to `round_end` while it
    is not delivered yet)."""
    begun: datetime = step.round_started_at or step.routed_at
    delivered: datetime | None = step.delivered_at
    until = delivered if delivered is not None and delivered >= begun else round_end
    return max(0.0, (until - begun).total_seconds())


async def return_result(service: RoutingParts, code: str, desk: Caller) -> Returned:
    """The one-stop desk that received the dossier handed the result over (status 10)."""
    async with service.sessions.begin() as session:
        journey = await _at_desk(session, code, desk, "record-result-returned")
        await transition(
            session,
            service.outbox,
            facts_of(journey),
            State.RESULT_RETURNED,
            agency_code=journey.receiving_agency_code,
            now=service.clock.now(),
        )
    return {"dossier_code": code, "status": State.RESULT_RETURNED.value}


async def _at_desk(session: AsyncSession, code: str, desk: Caller, action: str) -> JourneyRow:
    """The dossier, if `desk` is the agency that received it: the citizen's supplement and
    the hand-over happen at that desk, not at any desk allowed to file dossiers."""
    journey = await _locked(session, code)
    if journey.receiving_agency_code != desk.agency_code:
        raise forbidden(
            desk,
            action=action,
            target=f"dossier/{code}",
            slug="dossier-of-another-desk",
            title="Only the desk that received this dossier may record this",
            detail=f"dossier {code} was received by {journey.receiving_agency_code}, "
            f"not {desk.agency_code}",
        )
    return journey


async def _locked(session: AsyncSession, code: str) -> JourneyRow:
    journey = await queries.journey(session, code, lock=True)
    if journey is None:
        raise Problem(404, "dossier-not-found", "No such dossier in routing", code)
    return journey


# How a step's outcome is named in its span.
PAST: dict[Outcome, str] = {
    "done": "completed",
    "supplement": "supplement requested",
    "refused": "refused",
}
# The transfer's status once the outcome is applied.
TRANSFER_STATUS: dict[Outcome, TransferStatus] = {
    "done": TransferStatus.COMPLETED,
    "supplement": TransferStatus.SUPPLEMENT_REQUESTED,
    "refused": TransferStatus.REFUSED,
}


def check_holder(transfer: TransferRow, caller: Caller) -> None:
    """Only the agency a step was delivered to reports its outcome."""
    if transfer.agency_code != caller.agency_code:
        raise forbidden(
            caller,
            action="report-outcome",
            target=f"transfer/{transfer.transfer_id}",
            slug="step-held-by-another-agency",
            title="Only the agency holding this step may report its outcome",
            detail=f"transfer {transfer.transfer_id} is held by {transfer.agency_code}, "
            f"not {caller.agency_code}",
        )


def replay_status(status: str, outcome: Outcome, transfer_id: str) -> str | None:
    """The status to answer for a repeated report, None for a report to apply; a report
    that contradicts the one already applied is a conflict."""
    if status == TRANSFER_STATUS[outcome]:
        return status
    if status in TRANSFER_STATUS.values() or status == TransferStatus.CANCELLED:
        raise Problem(
            409,
            "transfer-already-reported",
            "The step's outcome was already reported",
            f"transfer {transfer_id} is {status}; it cannot be reported {outcome}",
            transfer_status=status,
        )
    return None
