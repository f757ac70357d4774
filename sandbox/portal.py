"""Stand-in of the national public-service portal's dossier sync endpoint.

Records each pushed status change once per Idempotency-Key (a repeated push answers 200
with `duplicate` and is counted on the record), keeps them across restarts, lists what it
holds, and fails on request so that tests can check that the gateway keeps pushing until the
portal is back.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Query, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from sandbox.state import open_state

log = logging.getLogger("sandbox.portal")


class PortalBehaviourIn(BaseModel):
    fail_next: int = Field(default=0, ge=0)
    fail_status: int = Field(default=503, ge=400, le=599)


class PortalStore:
    """The pushed changes, once per Idempotency-Key, in the sandbox's database
    (sandbox/state.py); the failures asked for stay in memory."""

    def __init__(self, db: sqlite3.Connection | None = None) -> None:
        self._db = db or open_state()
        self.rejected = 0
        self.behaviour = PortalBehaviourIn()

    def push(self, key: str, fields: dict[str, Any]) -> JSONResponse:
        if self.behaviour.fail_next > 0:
            self.behaviour.fail_next -= 1
            self.rejected += 1
            return JSONResponse(
                status_code=self.behaviour.fail_status,
                content={"detail": "the portal is failing on purpose"},
            )
        received_at = datetime.now(UTC).isoformat(timespec="milliseconds")
        dossier_code = str(fields.get("MaHoSo", ""))
        # Recorded before the answer; a repeated key only counts as a duplicate.
        recorded = self._db.execute(
            """
            INSERT INTO portal_push (idempotency_key, dossier_code, fields, received_at)
            VALUES (?, ?, ?, ?)
            ON CONFLICT (idempotency_key) DO UPDATE SET duplicates = duplicates + 1
            RETURNING duplicates = 0
            """,
            (key, dossier_code, json.dumps(fields, ensure_ascii=False), received_at),
        ).fetchone()[0]
        if not recorded:
            return JSONResponse(status_code=200, content={"status": "duplicate"})
        log.info("portal: dossier %s status %s", fields.get("MaHoSo"), fields.get("TrangThaiHoSo"))
        return JSONResponse(status_code=201, content={"status": "recorded"})

    def dossiers(self, dossier_code: str | None = None) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT * FROM portal_push WHERE ?1 IS NULL OR dossier_code = ?1 ORDER BY seq",
            (dossier_code,),
        ).fetchall()
        return [
            {
                "key": row["idempotency_key"],
                "received_at": row["received_at"],
                "fields": json.loads(row["fields"]),
                "duplicates": row["duplicates"],
            }
            for row in rows
        ]

    def stats(self) -> dict[str, int]:
        recorded, duplicates = self._db.execute(
            "SELECT count(*), coalesce(sum(duplicates), 0) FROM portal_push"
        ).fetchone()
        pushes = recorded + duplicates + self.rejected
        return {"dossiers": recorded, "pushes": pushes, "rejected": self.rejected}

    def reset(self) -> None:
        self._db.execute("DELETE FROM portal_push")
        self.behaviour = PortalBehaviourIn()


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
        return store.dossiers(dossier_code)

    @router.put("/behaviour")
    async def set_behaviour(body: PortalBehaviourIn) -> dict[str, Any]:
        store.behaviour = body.model_copy()
        return body.model_dump()

    @router.get("/stats")
    async def stats() -> dict[str, int]:
        return store.stats()

    @router.delete("/dossiers", status_code=204)
    async def reset() -> Response:
        store.reset()
        return Response(status_code=204)

    return router
