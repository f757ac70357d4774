"""Stand-in of the national public-service portal's dossier sync endpoint.

Records each pushed status change once per Idempotency-Key (a repeated push answers 200
with `duplicate`), lists what it holds, and fails on request so that tests can check that
the gateway keeps pushing until the portal is back.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Query, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

log = logging.getLogger("sandbox.portal")


class PortalBehaviourIn(BaseModel):
    fail_next: int = Field(default=0, ge=0)
    fail_status: int = Field(default=503, ge=400, le=599)


@dataclass
class PortalStore:
    dossiers: dict[str, dict[str, Any]] = field(default_factory=dict)
    pushes: int = 0
    rejected: int = 0
    behaviour: PortalBehaviourIn = field(default_factory=PortalBehaviourIn)

    def push(self, key: str, fields: dict[str, Any]) -> JSONResponse:
        self.pushes += 1
        if self.behaviour.fail_next > 0:
            self.behaviour.fail_next -= 1
            self.rejected += 1
            return JSONResponse(
                status_code=self.behaviour.fail_status,
                content={"detail": "the portal is failing on purpose"},
            )
        if key in self.dossiers:
            return JSONResponse(status_code=200, content={"status": "duplicate"})
        received_at = datetime.now(UTC).isoformat(timespec="milliseconds")
        self.dossiers[key] = {"key": key, "received_at": received_at, "fields": fields}
        log.info("portal: dossier %s status %s", fields.get("MaHoSo"), fields.get("TrangThaiHoSo"))
        return JSONResponse(status_code=201, content={"status": "recorded"})


def portal_router(store: PortalStore) -> APIRouter:
    router = APIRouter(prefix="/portal", tags=["national portal"])

    @router.post("/dossiers", status_code=201)
    async def push(
        fields: Annotated[dict[str, Any], Body()],
        idempotency_key: Annotated[str, Header(alias="Idempotency-Key", min_length=1)],
    ) -> JSONResponse:
        return store.push(idempotency_key, fields)

    @router.get("/dossiers")
    async def list_dossiers(
        dossier_code: Annotated[str | None, Query(alias="dossier_code")] = None,
    ) -> list[dict[str, Any]]:
        return [
            d
            for d in store.dossiers.values()
            if dossier_code is None or d["fields"].get("MaHoSo") == dossier_code
        ]

    @router.put("/behaviour")
    async def set_behaviour(body: PortalBehaviourIn) -> dict[str, Any]:
        store.behaviour = body.model_copy()
        return body.model_dump()

    @router.get("/stats")
    async def stats() -> dict[str, int]:
        return {"dossiers": len(store.dossiers), "pushes": store.pushes, "rejected": store.rejected}

    @router.delete("/dossiers", status_code=204)
    async def reset() -> Response:
        store.dossiers.clear()
        store.behaviour = PortalBehaviourIn()
        return Response(status_code=204)

    return router
