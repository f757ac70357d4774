"""Intake's REST API for agency systems and portals."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Response, status

from core.audit import forbidden
from core.auth import DOSSIERS_READ, DOSSIERS_SUBMIT, AgencyPrincipal, require_scope
from core.catalogue import Procedure
from core.catalogue_client import CatalogueClient, CatalogueUnavailable
from core.openapi import problems, replayed
from core.problems import Problem
from gateway.v1 import routing_pb2
from services.intake.deps import CatalogueDep, CataloguesDep, JourneysDep, RegistryDep
from services.intake.dossiers import at_desk
from services.intake.journey import JourneyUnavailable, steps_of
from services.intake.schemas import DossierIn, DossierOut, ProcedureOut, ProcedureStepOut

router = APIRouter(prefix="/v1", tags=["dossiers"])
Submitter = Annotated[AgencyPrincipal, Depends(require_scope(DOSSIERS_SUBMIT))]
Reader = Annotated[AgencyPrincipal, Depends(require_scope(DOSSIERS_READ))]


@router.post(
    "/dossiers",
    status_code=status.HTTP_201_CREATED,
    response_model=DossierOut,
    responses=replayed(DossierOut),
    summary="Submit a dossier",
)
async def submit_dossier(
    body: DossierIn,
    response: Response,
    agency: Submitter,
    registry: RegistryDep,
    catalogues: CataloguesDep,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
    x_citizen_session: Annotated[str | None, Header(max_length=100)] = None,
) -> DossierOut:
    """Register a dossier and start its journey. Send an `Idempotency-Key` so that a retried
    request returns the same receipt instead of filing a second dossier. A citizen logged in
    with e-ID sends `X-Citizen-Session`: the applicant is then who identity says, and a
    `residence_consent_id` attaches their registry residence instead of a document. The
    receiving agency is the calling client's: a body naming another is refused (403)."""
    dossier, created = await registry.submit(
        at_desk(body, agency), idempotency_key, x_citizen_session
    )
    if not created:
        response.status_code = status.HTTP_200_OK
        response.headers["Idempotent-Replayed"] = "true"
    response.headers["Location"] = f"/v1/dossiers/{dossier['code']}"
    return await _view(dossier, catalogues, steps=[], routed=False, available=True)


@router.get(
    "/dossiers/{code}",
    response_model=DossierOut,
    responses=problems(404),
    summary="Status of a dossier and each step of its journey",
)
async def get_dossier(
    code: str,
    agency: Reader,
    registry: RegistryDep,
    journeys: JourneysDep,
    catalogues: CataloguesDep,
) -> DossierOut:
    """Readable by the dossier's receiving agency and by the agencies of its journey."""
    dossier = await registry.get(code)
    if dossier is None:
        raise Problem(404, "dossier-not-found", "No such dossier", f"No dossier {code!r}")
    try:
        journey = await journeys.journey(code)
    except JourneyUnavailable:
        _check_reader(agency, dossier, None)
        return await _view(dossier, catalogues, steps=[], routed=False, available=False)
    _check_reader(agency, dossier, journey)
    if journey is None:
        return await _view(dossier, catalogues, steps=[], routed=False, available=True)
    view = await _view(dossier, catalogues, steps=steps_of(journey), routed=True, available=True)
    if journey.status == "completed":
        view.status = "completed"
    return view


def _check_reader(
    agency: AgencyPrincipal, dossier: dict[str, Any], journey: routing_pb2.Journey | None
) -> None:
    handlers = {s.agency_code for s in journey.steps} if journey is not None else set()
    if (
        agency.agency_code != dossier["receiving_agency_code"]
        and agency.agency_code not in handlers
    ):
        raise forbidden(
            agency,
            action="read-dossier",
            target=f"dossier/{dossier['code']}",
            slug="dossier-not-readable",
            title="This agency neither received this dossier nor handles a step of it",
            detail=f"agency {agency.agency_code} may not read dossier {dossier['code']}",
        )


async def _view(
    dossier: dict[str, Any],
    catalogues: CatalogueClient,
    *,
    steps: list[Any],
    routed: bool,
    available: bool,
) -> DossierOut:
    # Named as in the version it was received under, however the procedure was renamed since;
    # while routing cannot be asked for that version, as the current one names it.
    try:
        catalogue = await catalogues.at(dossier["catalogue_version"])
    except CatalogueUnavailable:
        catalogue = catalogues.catalogue
    procedure = catalogue.procedure(dossier["procedure_code"])
    return DossierOut(
        code=dossier["code"],
        procedure_code=dossier["procedure_code"],
        procedure_name=procedure.name if procedure else "",
        receiving_agency_code=dossier["receiving_agency_code"],
        status="processing" if routed else "received",
        received_at=dossier["received_at"],
        due_at=dossier["due_at"],
        steps=steps,
        journey_available=available,
        trace_id=dossier["trace_id"],
        catalogue_version=dossier["catalogue_version"],
    )


@router.get(
    "/procedures",
    response_model=list[ProcedureOut],
    tags=["procedures"],
    summary="The procedures a dossier may be filed for, each with its form's JSON Schema",
)
async def list_procedures(
    catalogue: CatalogueDep,
) -> list[ProcedureOut]:
    """Public, like the national catalogue of procedures: no token needed."""
    found = [p for p in catalogue.procedures.values() if p.active]
    return [_procedure(p) for p in sorted(found, key=lambda p: p.code)]


@router.get(
    "/procedures/{procedure_code}",
    response_model=ProcedureOut,
    responses=problems(404),
    tags=["procedures"],
    summary="One procedure and its form's JSON Schema",
)
async def get_procedure(procedure_code: str, catalogue: CatalogueDep) -> ProcedureOut:
    procedure = catalogue.procedure(procedure_code)
    if procedure is None or not procedure.active:
        raise Problem(
            404, "procedure-not-found", "No such procedure", f"No procedure {procedure_code!r}"
        )
    return _procedure(procedure)


def _procedure(procedure: Procedure) -> ProcedureOut:
    return ProcedureOut(
        code=procedure.code,
        name=procedure.name,
        receiving_agency_code=procedure.receiving_agency,
        total_days=procedure.total_days,
        min_assurance=procedure.min_assurance,
        needs=list(procedure.needs),
        steps=[
            ProcedureStepOut(stage=s.stage, name=s.name, agency_code=s.agency_code, days=s.days)
            for s in procedure.steps
        ],
        form_schema=procedure.form_schema(),
    )
