"""Monthly statistics per agency and procedure, as JSON or CSV (the province's report is due
by the 17th): per receiving desk over the dossiers, or per handling agency over the steps.

One GROUP BY query over one table (and one for hold times); every figure is as of the end
of the month (or now, for the month under way); for steps read "routed" for received and
"step" for dossier:
- received: received during the month;
- completed on time / late: decided during the month, by / after the (supplement-adjusted)
  statutory due time;
- in progress: received before the cut-off and neither decided nor refused by then;
- overdue: in progress at the cut-off and flagged overdue before it;
- average hold: mean seconds from received (routed) to decided, over those decided in the
  month (wall-clock, the citizen's supplement time included); empty when none was.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field
from sqlalchemy import ColumnElement, FromClause, Select, and_, case, func, or_, select, true

from core.calendar import VIETNAM
from core.openapi import also_csv, problems
from core.problems import Problem
from services.routing.journeys import JourneyService
from services.routing.lifecycle import State
from services.routing.models import journeys, transfers

router = APIRouter(prefix="/v1", tags=["operators"])
COLUMNS = (
    "agency_code",
    "procedure_code",
    "received",
    "completed_on_time",
    "completed_late",
    "in_progress",
    "overdue",
    "average_hold_s",
)
DECIDED = (State.DECIDED.value, State.RESULT_RETURNED.value)


class StatisticsRow(BaseModel):
    agency_code: str
    procedure_code: str
    received: int
    completed_on_time: int
    completed_late: int
    in_progress: int
    overdue: int
    average_hold_s: int | None = Field(
        description="Mean seconds a finished step was held by its agency; none finished: null"
    )


class StatisticsOut(BaseModel):
    month: str
    by: Literal["desk", "step"]
    rows: list[StatisticsRow]


def _journeys(request: Request) -> JourneyService:
    value: JourneyService = request.app.state.journeys
    return value


def month_bounds(month: str) -> tuple[datetime, datetime]:
    """The month's first instant and the next month's, in Vietnam's time."""
    match = re.fullmatch(r"(\d{4})-(\d{2})", month)
    if not match or not 1 <= int(match[2]) <= 12:
        raise Problem(422, "invalid-month", "The month must be YYYY-MM", month)
    year, number = int(match[1]), int(match[2])
    start = datetime(year, number, 1, tzinfo=VIETNAM)
    end = datetime(year + number // 12, number % 12 + 1, 1, tzinfo=VIETNAM)
    return start, end


async def monthly(
    service: JourneyService, month: str, by: Literal["desk", "step"] = "desk"
) -> list[dict[str, object]]:
    start, end = month_bounds(month)
    cutoff = min(end, service.clock.now())
    d, t = journeys.c, transfers.c
    if by == "desk":
        work = _Work(
            agency=d.receiving_agency_code,
            begun=d.received_at,
            ended=d.finished_at,
            completed=d.status.in_(DECIDED),
            due=d.due_at,
            overdue=d.overdue_at,
        )
        source: FromClause = journeys
        counted: ColumnElement[bool] = true()
    else:
        # Steps of a refused dossier that never ran are not the agency's work.
        work = _Work(
            agency=t.agency_code,
            begun=t.routed_at,
            ended=t.completed_at,
            completed=t.status == "completed",
            due=t.due_at,
            overdue=t.overdue_at,
        )
        source = transfers.join(journeys, d.code == t.dossier_code)
        counted = t.status != "cancelled"
    query = _figures(work, (start, end, cutoff)).select_from(source).where(counted)
    # Hold times are differences of instants, which SQLite and PostgreSQL compute apart:
    # the few decided in a month are averaged here instead.
    held = (
        select(work.agency.label("agency_code"), d.procedure_code, work.begun, work.ended)
        .select_from(source)
        .where(counted, work.completed, work.ended >= start, work.ended < end)
    )
    async with service.sessions() as session:
        rows = (await session.execute(query)).all()
        holds: dict[tuple[str, str], list[float]] = {}
        for agency, procedure, begun, ended in await session.execute(held):
            holds.setdefault((agency, procedure), []).append((ended - begun).total_seconds())
    figures = []
    for row in rows:
        values = {c: row._mapping[c] for c in COLUMNS[:-1]}
        seconds = holds.get((row.agency_code, row.procedure_code))
        values["average_hold_s"] = round(sum(seconds) / len(seconds)) if seconds else None
        figures.append(values)
    return figures


@dataclass(frozen=True)
class _Work:
    """The columns of one table that statistics count: who did it, when it began and ended,
    whether it is decided, when it was due and when it went overdue."""

    agency: ColumnElement[str]
    begun: ColumnElement[datetime]
    ended: ColumnElement[datetime | None]
    completed: ColumnElement[bool]
    due: ColumnElement[datetime]
    overdue: ColumnElement[datetime | None]


def _figures(
    work: _Work, period: tuple[datetime, datetime, datetime]
) -> Select[tuple[str, str, int, int, int, int, int]]:
    """The GROUP BY of one table's figures: work begun, ended (completed or not), due."""
    agency, begun, ended, due, overdue = work.agency, work.begun, work.ended, work.due, work.overdue
    completed = work.completed
    start, end, cutoff = period
    completed_in_month = and_(completed, ended >= start, ended < end)
    open_at_cutoff = and_(begun < cutoff, or_(ended.is_(None), ended >= cutoff))

    def count(condition: ColumnElement[bool]) -> ColumnElement[int]:
        return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)

    procedure = journeys.c.procedure_code
    return (
        select(
            agency.label("agency_code"),
            procedure,
            count(and_(begun >= start, begun < end)).label("received"),
            count(and_(completed_in_month, ended <= due)).label("completed_on_time"),
            count(and_(completed_in_month, ended > due)).label("completed_late"),
            count(open_at_cutoff).label("in_progress"),
            count(and_(open_at_cutoff, overdue < cutoff)).label("overdue"),
        )
        .where(begun < end, or_(ended.is_(None), ended >= start))
        .group_by(agency, procedure)
        .order_by(agency, procedure)
    )


@router.get(
    "/statistics",
    response_model=StatisticsOut,
    responses={**problems(422), **also_csv()},
    operation_id="getStatistics",
    summary="Monthly figures per agency and procedure (JSON or CSV)",
)
async def statistics(
    service: Annotated[JourneyService, Depends(_journeys)],
    month: Annotated[
        str, Query(pattern=r"^[0-9]{4}-[0-9]{2}$", description="YYYY-MM, in Vietnam's time")
    ],
    format: Annotated[Literal["json", "csv"], Query()] = "json",
    by: Annotated[
        Literal["desk", "step"],
        Query(description="desk: dossiers per receiving agency; step: steps per agency"),
    ] = "desk",
) -> StatisticsOut | Response:
    rows = await monthly(service, month, by)
    if format == "json":
        return StatisticsOut.model_validate({"month": month, "by": by, "rows": rows})
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)
    return Response(
        out.getvalue().encode("utf-8"),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="statistics-{month}.csv"'},
    )
