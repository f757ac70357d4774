"""Routing's REST API for agency systems and the one-stop desk: step outcomes, the citizen's
supplement, the result handed over."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal, Self

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.auth import DOSSIERS_SUBMIT, TRANSFERS_REPORT, AgencyPrincipal, require_scope
from core.openapi import problems
from services.routing import outcomes
from services.routing.deps import JourneysDep
from services.routing.lifecycle import State
from services.routing.outcomes import Outcome, OutcomeApplied, Resumed, Returned

router = APIRouter(prefix="/v1", tags=["agency"])


class Document(BaseModel):
    """A result or supplement document: where to fetch it, or its reference in a registry."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=300)
    url: str | None = Field(default=None, max_length=2000)
    reference: str | None = Field(default=None, max_length=300)

    @model_validator(mode="after")
    def _located(self) -> Self:
        if not (self.url or self.reference):
            raise ValueError("a document needs a url or a reference")
        return self


class OutcomeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    outcome: Outcome = Field(
        description="done: step finished (with result documents); supplement: the citizen "
        "must add documents (the clock stops); refused: the dossier is refused (journey ends)"
    )
    reason: str = Field(default="", max_length=2000, description="Required unless done")
    documents: list[Document] = Field(default_factory=list, max_length=50)
    note: str = Field(default="", max_length=2000)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.outcome != "done" and not self.reason.strip():
            raise ValueError(f"outcome {self.outcome!r} needs a reason")
        if self.outcome != "done" and self.documents:
            raise ValueError("only a done outcome carries result documents")
        return self


class OutcomeOut(BaseModel):
    transfer_id: str
    status: Literal["completed", "supplement_requested", "refused"] = Field(
        description="The step's transfer status the outcome left"
    )
    replayed: bool


class SupplementIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    documents: list[Document] = Field(min_length=1, max_length=50)
    note: str = Field(default="", max_length=2000)


class LifecycleOut(BaseModel):
    dossier_code: str
    status: State = Field(description="The dossier's state now")
    due_at: datetime | None = None


Desk = Annotated[AgencyPrincipal, Depends(require_scope(DOSSIERS_SUBMIT))]


@router.post(
    "/transfers/{transfer_id}/outcome",
    response_model=OutcomeOut,
    responses=problems(404, 409),
    summary="Report the outcome of the step a transfer delivered",
)
async def report_outcome(
    transfer_id: str,
    body: OutcomeIn,
    agency: Annotated[AgencyPrincipal, Depends(require_scope(TRANSFERS_REPORT))],
    service: JourneysDep,
) -> OutcomeApplied:
    """Idempotent: reporting the same outcome again answers with `replayed: true`; a
    different outcome for a step already reported is a 409. Only the agency the step was
    delivered to may report it."""
    text = body.note if body.outcome == "done" else body.reason
    details = {"documents": [d.model_dump(exclude_none=True) for d in body.documents]}
    return await service.report_outcome(transfer_id, body.outcome, text, agency, details)


@router.post(
    "/dossiers/{code}/supplements",
    response_model=LifecycleOut,
    responses=problems(404, 409),
    tags=["desk"],
    operation_id="recordSupplement",
    summary="Record the citizen's supplement: the clock resumes, the agency gets it again",
)
async def supplement(code: str, body: SupplementIn, desk: Desk, service: JourneysDep) -> Resumed:
    """Only the desk that received the dossier records its supplement (others get 403)."""
    documents = [d.model_dump(exclude_none=True) for d in body.documents]
    return await outcomes.supplement(service, code, documents, body.note, desk)


@router.post(
    "/dossiers/{code}/result-returned",
    response_model=LifecycleOut,
    responses=problems(404, 409),
    tags=["desk"],
    operation_id="recordResultReturned",
    summary="Record that the result was handed to the citizen (status 10)",
)
async def result_returned(code: str, desk: Desk, service: JourneysDep) -> Returned:
    """Only the desk that received the dossier records the hand-over (others get 403)."""
    return await outcomes.return_result(service, code, desk)
