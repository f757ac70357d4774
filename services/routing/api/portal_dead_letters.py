"""Operators' view of status changes the national portal never took, and their replay.

A push is dead-lettered when the portal refused it (4xx other than 408/425/429) or kept
failing past its last attempt; the dossier's later changes go on without it. Replaying one
puts it back in the queue with fresh attempts, unless a later change of the same dossier
already reached the portal: the portal must never see an older status after a newer one.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, cast

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel
from sqlalchemy import select

from core.auth import DEAD_LETTERS_MANAGE, require_scope
from core.openapi import problems
from core.problems import Problem
from services.routing.deps import PortalDep
from services.routing.lifecycle import NationalStatus
from services.routing.models import PushStatus, portal_pushes
from services.routing.rows import PushRow

router = APIRouter(
    prefix="/v1/dead-letters/portal-pushes",
    tags=["operators"],
    dependencies=[Depends(require_scope(DEAD_LETTERS_MANAGE))],
)


class DeadPushOut(BaseModel):
    push_key: str
    dossier_code: str
    national_status: NationalStatus
    changed_at: datetime
    attempts: int
    reason: str | None


def _out(row: PushRow) -> DeadPushOut:
    return DeadPushOut(
        push_key=row.push_key,
        dossier_code=row.dossier_code,
        national_status=int(row.payload.get("TrangThaiHoSo", 0)),
        changed_at=row.changed_at,
        attempts=row.attempts,
        reason=row.last_error,
    )


@router.get(
    "",
    response_model=list[DeadPushOut],
    operation_id="listDeadPortalPushes",
    summary="Status changes the portal never took",
)
async def list_dead_pushes(
    portal: PortalDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> list[DeadPushOut]:
    query = (
        select(portal_pushes)
        .where(portal_pushes.c.status == PushStatus.DEAD_LETTERED)
        .order_by(portal_pushes.c.changed_at)
        .limit(limit)
    )
    async with portal.sessions() as session:
        return [_out(row) for row in cast("list[PushRow]", (await session.execute(query)).all())]


@router.post(
    "/{push_key}/replay",
    response_model=DeadPushOut,
    responses=problems(404, 409),
    operation_id="replayDeadPortalPush",
    summary="Push a dead-lettered status change again",
)
async def replay_dead_push(push_key: str, portal: PortalDep) -> DeadPushOut:
    async with portal.sessions.begin() as session:
        row = cast(
            "PushRow | None",
            (
                await session.execute(
                    select(portal_pushes).where(portal_pushes.c.push_key == push_key)
                )
            ).first(),
        )
        if row is None or row.status != PushStatus.DEAD_LETTERED:
            raise Problem(404, "not-found", "No such dead-lettered push", push_key)
        later = await session.execute(
            select(portal_pushes.c.push_key).where(
                portal_pushes.c.dossier_code == row.dossier_code,
                portal_pushes.c.status == PushStatus.SENT,
                portal_pushes.c.changed_at > row.changed_at,
            )
        )
        if later.first() is not None:
            raise Problem(
                409,
                "push-superseded",
                "A later status of this dossier already reached the portal",
                f"push {push_key} of {row.dossier_code} is older than one the portal has",
            )
        await session.execute(
            portal_pushes.update()
            .where(
                portal_pushes.c.push_key == push_key,
                portal_pushes.c.status == PushStatus.DEAD_LETTERED,
            )
            .values(status=PushStatus.PENDING, attempts=0, next_attempt_at=portal.clock.now())
        )
    portal.wake()
    return _out(row)
