"""Operators' view of events Kafka refused for good, and their replay.

The outbox relay sets such a row aside (core/outbox.py) so the events behind it go on. The
row keeps its reason until an operator replays it, after the cause is mended (the broker's
`max.message.bytes` raised, a topic created): the relay then publishes it again as it was,
same event id, so consumers that had it already ignore it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel
from sqlalchemy import select

from core.auth import DEAD_LETTERS_MANAGE, require_scope
from core.openapi import problems
from core.outbox import Outbox
from core.problems import Problem
from core.runtime import Runtime, runtime_of

# Row ids are BIGINT: a larger number is no row, and the database would refuse to compare it.
ROW_ID_MAX = 2**63 - 1


class DeadEventOut(BaseModel):
    id: int
    topic: str
    event_id: str
    event_type: str
    dossier_code: str
    size_bytes: int
    reason: str | None
    dead_lettered_at: datetime | None


def _outbox(request: Request) -> tuple[Runtime, Outbox]:
    runtime = runtime_of(request)
    if runtime.outbox is None:  # a service without an outbox does not mount this router
        raise Problem(404, "not-found", "This service publishes no events")
    return runtime, runtime.outbox


Owned = Annotated[tuple[Runtime, Outbox], Depends(_outbox)]


def _out(row: Any) -> DeadEventOut:
    headers: dict[str, str] = row.headers
    return DeadEventOut(
        id=row.id,
        topic=row.topic,
        event_id=headers.get("ce_id", ""),
        event_type=headers.get("ce_type", ""),
        dossier_code=headers.get("ce_subject", ""),
        size_bytes=len(row.value),
        reason=row.last_error,
        dead_lettered_at=row.dead_lettered_at,
    )


def dead_events_router() -> APIRouter:
    """`GET /v1/dead-letters/events` and `POST /v1/dead-letters/events/{id}/replay`, for
    operators (dead-letters:manage), on every service that publishes through an outbox."""
    router = APIRouter(
        prefix="/v1/dead-letters/events",
        tags=["operators"],
        dependencies=[Depends(require_scope(DEAD_LETTERS_MANAGE))],
    )

    @router.get(
        "",
        response_model=list[DeadEventOut],
        operation_id="listDeadEvents",
        summary="Events Kafka refused for good",
    )
    async def list_dead_events(
        owned: Owned, limit: Annotated[int, Query(ge=1, le=1000)] = 100
    ) -> list[DeadEventOut]:
        runtime, outbox = owned
        table = outbox.table
        query = (
            select(table)
            .where(table.c.dead_lettered_at.is_not(None))
            .order_by(table.c.id)
            .limit(limit)
        )
        async with runtime.sessions() as session:
            return [_out(row) for row in await session.execute(query)]

    @router.post(
        "/{event_row}/replay",
        response_model=DeadEventOut,
        responses=problems(404),
        operation_id="replayDeadEvent",
        summary="Publish a dead-lettered event again",
    )
    async def replay_dead_event(
        event_row: Annotated[int, Path(ge=1, le=ROW_ID_MAX)], owned: Owned
    ) -> DeadEventOut:
        runtime, outbox = owned
        table = outbox.table
        async with runtime.sessions.begin() as session:
            row = (
                await session.execute(
                    select(table).where(
                        table.c.id == event_row, table.c.dead_lettered_at.is_not(None)
                    )
                )
            ).first()
            if row is None:
                raise Problem(404, "not-found", "No such dead-lettered event", f"row {event_row}")
            await session.execute(
                table.update()
                .where(table.c.id == event_row)
                .values(dead_lettered_at=None, last_error=None)
            )
        outbox.wakeup.set()
        return _out(row)

    return router
