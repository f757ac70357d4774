"""Monthly statistics per agency and procedure (the province's report is due
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

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import ColumnElement, FromClause, Select, and_, case, func, or_, select, true
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.calendar import VIETNAM
from core.clock import Clock
from core.problems import Problem
from services.routing.lifecycle import State
from services.routing.models import journeys, transfers

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
    sessions: async_sessionmaker[AsyncSession],
    clock: Clock,
    month: str,
    by: Literal["desk", "step"] = "desk",
) -> list[dict[str, object]]:
    start, end = month_bounds(month)
    cutoff = min(end, clock.now())
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
    async with sessions() as session:
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
