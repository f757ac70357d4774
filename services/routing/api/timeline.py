"""A dossier's journey as operators and citizens' desks read it, and who holds the late ones.

Waiting time is attributed to whom it belongs: delivery (routed until the agency's system
took it), the citizen (a supplement the agency waits for: the clock is stopped) and the
agency (the rest, up to its report or now).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, cast

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from sqlalchemy import func, select

from core.catalogue import Catalogue
from core.openapi import problems
from core.problems import Problem
from core.telemetry import trace_id_of
from services.routing import queries
from services.routing.deps import Deps
from services.routing.lifecycle import NATIONAL, OPEN_STATES, NationalStatus, State
from services.routing.models import (
    CLOSED_TRANSFERS,
    TransferStatus,
    TransferStatusName,
    apologies,
    journeys,
    status_changes,
    transfers,
)
from services.routing.outcomes import delivery_wait
from services.routing.rows import ApologyRow, Json, StatusChangeRow, TransferRow

router = APIRouter(prefix="/v1", tags=["operators"])


def trace_url(template: str | None, trace_id: str | None) -> str | None:
    """The trace UI's page of a dossier's trace: TRACE_UI_URL with {trace_id} filled in."""
    if not template or not trace_id:
        return None
    return template.replace("{trace_id}", trace_id)


class StepWaitOut(BaseModel):
    delivery: float = Field(description="Seconds from routed until the agency took it")
    citizen: float = Field(description="Seconds the agency waited for a supplement")
    agency: float = Field(description="Seconds the rest, up to its report or now")


class TimelineStepOut(BaseModel):
    index: int
    stage: int
    name: str
    agency_code: str
    agency_name: str
    transfer_id: str
    status: TransferStatusName
    round: int
    attempts: int
    replays: int
    last_error: str | None
    routed_at: datetime | None
    delivered_at: datetime | None
    acknowledged_at: datetime | None
    completed_at: datetime | None
    due_at: datetime | None
    overdue_at: datetime | None
    outcome: Json | None = Field(description="Result documents or the reason")
    waiting_s: StepWaitOut


class StatusChangeOut(BaseModel):
    status: NationalStatus
    state: State
    previous_status: int = Field(description="0 before the first status")
    agency_code: str
    reason: str
    details: Json | None
    changed_at: datetime


class ApologyOut(BaseModel):
    agency_code: str
    due_at: datetime
    reason: str
    new_due_at: datetime
    issued_at: datetime


class CitizenWaitOut(BaseModel):
    citizen: float = Field(description="Seconds the clock was stopped for supplements")


class JourneyTimelineOut(BaseModel):
    dossier_code: str
    procedure_code: str
    state: State
    status: NationalStatus = Field(description="The national portal's status code")
    receiving_agency_code: str
    received_at: datetime
    due_at: datetime | None
    appointment_at: datetime | None
    clock_stopped_since: datetime | None
    overdue_at: datetime | None
    finished_at: datetime | None
    trace_id: str
    trace_url: str | None = Field(
        default=None, description="The trace UI's page of this trace, when TRACE_UI_URL is set"
    )
    waiting_s: CitizenWaitOut
    steps: list[TimelineStepOut]
    history: list[StatusChangeOut]
    apologies: list[ApologyOut]


class OverdueAgencyOut(BaseModel):
    agency_code: str
    agency_name: str
    overdue: int = Field(description="Overdue dossiers the agency holds a step of")


@router.get(
    "/dossiers/{code}/journey",
    response_model=JourneyTimelineOut,
    responses=problems(404),
    operation_id="getJourneyTimeline",
    summary="Every step, transfer, status change and apology of a dossier",
)
async def journey_timeline(code: str, deps: Deps) -> dict[str, object]:
    async with deps.sessions() as session:
        dossier = await queries.journey(session, code)
        if dossier is None:
            raise Problem(404, "dossier-not-found", "No such dossier in routing", code)
        steps = await queries.steps(session, code)
        history = cast(
            "list[StatusChangeRow]",
            (
                await session.execute(
                    select(status_changes)
                    .where(status_changes.c.dossier_code == code)
                    .order_by(status_changes.c.id)
                )
            ).all(),
        )
        apologised = cast(
            "list[ApologyRow]",
            (
                await session.execute(
                    select(apologies)
                    .where(apologies.c.dossier_code == code)
                    .order_by(apologies.c.id)
                )
            ).all(),
        )
    now = deps.clock.now()
    state = State(dossier.status)
    citizen_s = dossier.paused_s + _since(dossier.paused_at, now)
    trace_id = trace_id_of(dossier.trace)
    return {
        "dossier_code": code,
        "procedure_code": dossier.procedure_code,
        "state": state.value,
        "status": NATIONAL[state],
        "receiving_agency_code": dossier.receiving_agency_code,
        "received_at": dossier.received_at,
        "due_at": dossier.due_at,
        "appointment_at": dossier.appointment_at,
        "clock_stopped_since": dossier.paused_at,
        "overdue_at": dossier.overdue_at,
        "finished_at": dossier.finished_at,
        "trace_id": trace_id,
        "trace_url": trace_url(deps.settings.trace_ui_url, trace_id),
        "waiting_s": {"citizen": citizen_s},
        "steps": [_step(deps.catalogue, s, now) for s in steps],
        "history": [
            {
                "status": h.status,
                "state": h.state,
                "previous_status": h.previous_status,
                "agency_code": h.agency_code,
                "reason": h.reason,
                "details": h.details,
                "changed_at": h.changed_at,
            }
            for h in history
        ],
        "apologies": [
            {
                "agency_code": a.agency_code,
                "due_at": a.due_at,
                "reason": a.reason,
                "new_due_at": a.new_due_at,
                "issued_at": a.issued_at,
            }
            for a in apologised
        ],
    }


def _since(start: datetime | None, now: datetime) -> float:
    return max(0.0, (now - start).total_seconds()) if start is not None else 0.0


def _step(catalogue: Catalogue, step: TransferRow, now: datetime) -> dict[str, object]:
    agency = catalogue.agencies.get(step.agency_code)
    end = step.completed_at or now
    citizen = step.supplement_s
    round_end = end
    if step.status == TransferStatus.SUPPLEMENT_REQUESTED and step.supplement_requested_at:
        citizen += _since(step.supplement_requested_at, now)
        round_end = step.supplement_requested_at
    delivery = step.delivery_s + delivery_wait(step, round_end)
    total = _since(step.routed_at, end)
    return {
        "index": step.step_index,
        "stage": step.stage,
        "name": step.step_name,
        "agency_code": step.agency_code,
        "agency_name": agency.name if agency else "",
        "transfer_id": step.transfer_id,
        "status": step.status,
        "round": step.round,
        "attempts": step.attempts,
        "replays": step.replays,
        "last_error": step.last_error,
        "routed_at": step.routed_at,
        "delivered_at": step.delivered_at,
        "acknowledged_at": step.acknowledged_at,
        "completed_at": step.completed_at,
        "due_at": step.due_at,
        "overdue_at": step.overdue_at,
        "outcome": step.outcome,
        "waiting_s": {
            "delivery": delivery,
            "citizen": citizen,
            "agency": max(0.0, total - delivery - citizen),
        },
    }


@router.get(
    "/agencies/overdue",
    response_model=list[OverdueAgencyOut],
    operation_id="listOverdueAgencies",
    summary="Agencies holding overdue dossiers now, most first",
)
async def overdue_by_agency(
    deps: Deps, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> list[dict[str, object]]:
    held = func.count(func.distinct(transfers.c.dossier_code)).label("overdue")
    query = (
        select(transfers.c.agency_code, held)
        .join(journeys, journeys.c.code == transfers.c.dossier_code)
        .where(
            journeys.c.overdue_at.is_not(None),
            journeys.c.status.in_([s.value for s in OPEN_STATES]),
            transfers.c.status.notin_(CLOSED_TRANSFERS),
        )
        .group_by(transfers.c.agency_code)
        .order_by(held.desc(), transfers.c.agency_code)
        .limit(limit)
    )
    async with deps.sessions() as session:
        rows = (await session.execute(query)).all()
    agencies = deps.catalogue.agencies
    return [
        {
            "agency_code": r.agency_code,
            "agency_name": agencies[r.agency_code].name if r.agency_code in agencies else "",
            "overdue": r.overdue,
        }
        for r in rows
    ]
