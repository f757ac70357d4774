"""GET /v1/statistics: the monthly figures of statistics.py, as JSON or CSV."""

from __future__ import annotations

import csv
import io
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field

from core.openapi import also_csv, problems
from services.routing.deps import Deps
from services.routing.statistics import COLUMNS, monthly

__all__ = ["COLUMNS", "router"]

router = APIRouter(prefix="/v1", tags=["operators"])


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


@router.get(
    "/statistics",
    response_model=StatisticsOut,
    responses={**problems(422), **also_csv()},
    operation_id="getStatistics",
    summary="Monthly figures per agency and procedure (JSON or CSV)",
)
async def statistics(
    deps: Deps,
    month: Annotated[
        str, Query(pattern=r"^[0-9]{4}-[0-9]{2}$", description="YYYY-MM, in Vietnam's time")
    ],
    format: Annotated[Literal["json", "csv"], Query()] = "json",
    by: Annotated[
        Literal["desk", "step"],
        Query(description="desk: dossiers per receiving agency; step: steps per agency"),
    ] = "desk",
) -> StatisticsOut | Response:
    rows = await monthly(deps.sessions, deps.clock, month, by)
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
