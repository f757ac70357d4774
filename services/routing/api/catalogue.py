"""The catalogue routing follows, for operators, and its reload from catalogue/*.yaml."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel

from core.auth import CATALOGUE_MANAGE, REPORTS_READ, require_scope
from core.catalogue import CatalogueError
from core.openapi import problems
from core.problems import Problem
from services.routing.catalogue_store import CatalogueStore, Loaded
from services.routing.deps import CatalogueStoreDep

router = APIRouter(prefix="/v1/catalogue", tags=["operators"])


class CatalogueOut(BaseModel):
    version: int
    sha256: str | None = None
    changed: bool | None = None
    procedures: dict[str, dict[str, Any]]
    agencies: dict[str, dict[str, str]]


def _out(store: CatalogueStore, loaded: Loaded | None = None) -> CatalogueOut:
    catalogue = store.catalogue
    return CatalogueOut(
        version=store.version,
        sha256=loaded.sha256 if loaded else None,
        changed=loaded.changed if loaded else None,
        procedures={
            p.code: {
                "name": p.name,
                "total_days": p.total_days,
                "active": p.active,
                "steps": [
                    {"stage": s.stage, "name": s.name, "agency_code": s.agency_code, "days": s.days}
                    for s in p.steps
                ],
            }
            for p in catalogue.procedures.values()
        },
        # Addresses are shown; secrets never are.
        agencies={
            a.code: {"name": a.name, "xroad": a.xroad, "channel": a.channel, "target": a.target}
            for a in catalogue.agencies.values()
        },
    )


@router.get(
    "",
    response_model=CatalogueOut,
    operation_id="getCatalogue",
    summary="The catalogue routing follows now",
    dependencies=[Depends(require_scope(REPORTS_READ))],
)
async def show(store: CatalogueStoreDep) -> CatalogueOut:
    return _out(store)


@router.post(
    "/reload",
    response_model=CatalogueOut,
    responses=problems(422),
    operation_id="reloadCatalogue",
    summary="Load catalogue/*.yaml again (a no-op when the files did not change)",
    dependencies=[Depends(require_scope(CATALOGUE_MANAGE))],
)
async def reload(store: CatalogueStoreDep) -> CatalogueOut:
    try:
        loaded = await store.load_files()
    except (CatalogueError, OSError) as exc:
        # The version in use stays: a broken file never replaces a working catalogue.
        raise Problem(
            422, "catalogue-invalid", "The catalogue files are not valid", str(exc)
        ) from None
    return _out(store, loaded)
