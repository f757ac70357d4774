"""Routing's REST API for agency systems: report the outcome of a step."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from core.auth import TRANSFERS_REPORT, AgencyPrincipal, require_scope
from core.problems import AUTH_PROBLEM_RESPONSES, PROBLEM_RESPONSES
from services.routing.journeys import JourneyService

router = APIRouter(prefix="/v1", tags=["agency"], responses=AUTH_PROBLEM_RESPONSES)


class OutcomeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    outcome: Literal["done"] = Field(description="The agency finished its step")
    note: str = Field(default="", max_length=2000)


class OutcomeOut(BaseModel):
    transfer_id: str
    status: str
    replayed: bool


def journey_service(request: Request) -> JourneyService:
    value: JourneyService = request.app.state.journeys
    return value


@router.post(
    "/transfers/{transfer_id}/outcome",
    response_model=OutcomeOut,
    responses=PROBLEM_RESPONSES,
    summary="Report the outcome of the step a transfer delivered",
)
async def report_outcome(
    transfer_id: str,
    body: OutcomeIn,
    agency: Annotated[AgencyPrincipal, Depends(require_scope(TRANSFERS_REPORT))],
    service: Annotated[JourneyService, Depends(journey_service)],
) -> dict[str, Any]:
    """Idempotent: reporting the same transfer again answers with `replayed: true`. Only the
    agency the step was delivered to may report it."""
    return await service.report_outcome(transfer_id, body.outcome, body.note, agency.agency_code)
