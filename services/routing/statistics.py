"""Monthly statistics per receiving agency and procedure, as JSON or CSV (the province's
report is due by the 17th).

One GROUP BY query over the dossiers; every figure is as of the end of the month (or now,
for the month under way):
- received: received during the month;
- completed on time / late: decided during the month, by / after the (supplement-adjusted)
  statutory due time;
- in progress: received before the cut-off and neither decided nor refused by then;
- overdue: in progress at the cut-off and flagged overdue before it.
"""

from __future__ import annotations

import csv
import io
import re
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from sqlalchemy import and_, case, func, or_, select

from core.calendar import VIETNAM
from core.problems import PROBLEM_RESPONSES, Problem
from services.routing.journeys import JourneyService
from services.routing.lifecycle import State
from services.routing.models import journeys

router = APIRouter(prefix="/v1", tags=["operators"])
COLUMNS = (
    "agency_code",
    "procedure_code",
    "received",
    "completed_on_time",
    "completed_late",
    "in_progress",
    "overdue",
)
DECIDED = (State.DECIDED.value, State.RESULT_RETURNED.value)


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


async def monthly(service: JourneyService, month: str) -> list[dict[str, Any]]:
    start, end = month_bounds(month)
    cutoff = min(end, service.clock.now())
    d = journeys.c
    decided = d.status.in_(DECIDED)
    finished_in_month = and_(decided, d.finished_at >= start, d.finished_at < end)
    open_at_cutoff = and_(
        d.received_at < cutoff, or_(d.finished_at.is_(None), d.finished_at >= cutoff)
    )

    def count(condition: Any) -> Any:
        return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)

    query = (
        select(
            d.receiving_agency_code.label("agency_code"),
            d.procedure_code,
            count(and_(d.received_at >= start, d.received_at < end)).label("received"),
            count(and_(finished_in_month, d.finished_at <= d.due_at)).label("completed_on_time"),
            count(and_(finished_in_month, d.finished_at > d.due_at)).label("completed_late"),
            count(open_at_cutoff).label("in_progress"),
            count(and_(open_at_cutoff, d.overdue_at < cutoff)).label("overdue"),
        )
        .where(d.received_at < end, or_(d.finished_at.is_(None), d.finished_at >= start))
        .group_by(d.receiving_agency_code, d.procedure_code)
        .order_by(d.receiving_agency_code, d.procedure_code)
    )
    async with service.sessions() as session:
        rows = (await session.execute(query)).all()
    return [{c: row._mapping[c] for c in COLUMNS} for row in rows]


@router.get(
    "/statistics",
    responses=PROBLEM_RESPONSES,
    summary="Monthly figures per agency and procedure (JSON or CSV)",
)
async def statistics(
    service: Annotated[JourneyService, Depends(_journeys)],
    month: Annotated[str, Query(description="YYYY-MM, in Vietnam's time")],
    format: Annotated[Literal["json", "csv"], Query()] = "json",
) -> Any:
    rows = await monthly(service, month)
    if format == "json":
        return {"month": month, "rows": rows}
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)
    return Response(
        out.getvalue().encode("utf-8"),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="statistics-{month}.csv"'},
    )
