"""Operators' view of transfers that could not be delivered, and their replay.

Also the transfers still pending past a threshold (stuck), which routing keeps retrying.

A transfer is dead-lettered when its agency refused it (4xx other than 429) or kept failing
until the last attempt. Nothing is lost: the row stays with its reason until an operator
replays it, which delivers it again with the same transfer id (the agency de-duplicates).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, cast

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel
from sqlalchemy import Result, func, select

from core.auth import DEAD_LETTERS_MANAGE, require_scope
from core.openapi import problems
from core.problems import Problem
from core.storage import rowcount
from services.routing import queries
from services.routing.deps import Deps
from services.routing.models import TransferStatus, transfers
from services.routing.rows import TransferRow

# Operators only: every route needs the dead-letters:manage scope.
router = APIRouter(
    prefix="/v1/dead-letters",
    tags=["operators"],
    dependencies=[Depends(require_scope(DEAD_LETTERS_MANAGE))],
)


class DeadLetterOut(BaseModel):
    transfer_id: str
    dossier_code: str
    step_index: int
    step_name: str
    agency_code: str
    attempts: int
    replays: int
    reason: str | None
    dead_lettered_at: datetime | None


def _out(row: TransferRow, *, replays: int | None = None) -> DeadLetterOut:
    return DeadLetterOut(
        transfer_id=row.transfer_id,
        dossier_code=row.dossier_code,
        step_index=row.step_index,
        step_name=row.step_name,
        agency_code=row.agency_code,
        attempts=row.attempts,
        replays=row.replays if replays is None else replays,
        reason=row.last_error,
        dead_lettered_at=row.dead_lettered_at,
    )


def _rows(result: Result[tuple[object, ...]]) -> list[TransferRow]:
    return cast("list[TransferRow]", result.all())


@router.get("", response_model=list[DeadLetterOut], summary="Transfers that were not delivered")
async def list_dead_letters(
    deps: Deps,
    agency_code: Annotated[str | None, Query(max_length=20)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[DeadLetterOut]:
    query = select(transfers).where(transfers.c.status == TransferStatus.DEAD_LETTERED)
    if agency_code:
        query = query.where(transfers.c.agency_code == agency_code)
    query = query.order_by(transfers.c.dead_lettered_at).limit(limit)
    async with deps.sessions() as session:
        return [_out(row) for row in _rows(await session.execute(query))]


@router.post(
    "/{transfer_id}/replay",
    response_model=DeadLetterOut,
    responses=problems(404, 409),
    operation_id="replayDeadLetter",
    summary="Deliver a dead-lettered transfer again",
)
async def replay(transfer_id: str, deps: Deps) -> DeadLetterOut:
    """The transfer goes back to the delivery queue with a fresh set of attempts."""
    async with deps.sessions.begin() as session:
        row = await queries.transfer(session, transfer_id, lock=True)
        if row is None:
            raise Problem(404, "transfer-not-found", "No such transfer", transfer_id)
        if row.status != TransferStatus.DEAD_LETTERED:
            raise Problem(
                409,
                "transfer-not-dead-lettered",
                "Only a dead-lettered transfer can be replayed",
                f"transfer {transfer_id} is {row.status}",
            )
        # Conditional, like every transition: a report that landed since the read above
        # (SQLite ignores FOR UPDATE) wins, and the replay is refused.
        replayed = await session.execute(
            transfers.update()
            .where(
                transfers.c.transfer_id == transfer_id,
                transfers.c.status == TransferStatus.DEAD_LETTERED,
            )
            .values(
                status=TransferStatus.PENDING,
                attempts=0,
                replays=transfers.c.replays + 1,
                next_attempt_at=deps.clock.now(),
            )
        )
        if rowcount(replayed) != 1:
            raise Problem(
                409,
                "transfer-not-dead-lettered",
                "Only a dead-lettered transfer can be replayed",
                f"transfer {transfer_id} changed meanwhile",
            )
    deps.journeys.transfers_waiting.set()
    return _out(row, replays=row.replays + 1)


# Operators' nudge for an escalated transfer: deliver it again now rather than at the
# escalated pace (say, after calling the agency and hearing it is back).
escalations = APIRouter(
    prefix="/v1/escalations",
    tags=["operators"],
    dependencies=[Depends(require_scope(DEAD_LETTERS_MANAGE))],
)


@escalations.post(
    "/{transfer_id}/redeliver",
    response_model=DeadLetterOut,
    responses=problems(404),
    operation_id="redeliverEscalatedTransfer",
    summary="Deliver an escalated transfer again now",
)
async def redeliver(transfer_id: str, deps: Deps) -> DeadLetterOut:
    async with deps.sessions.begin() as session:
        result = await session.execute(
            transfers.update()
            .where(
                transfers.c.transfer_id == transfer_id,
                transfers.c.escalated.is_(True),
                transfers.c.acknowledged_at.is_(None),
            )
            .values(next_attempt_at=deps.clock.now())
            .returning(*transfers.c)
        )
        row = cast("TransferRow | None", result.first())
    if row is None:
        raise Problem(
            404, "escalation-not-found", "No such unacknowledged escalated transfer", transfer_id
        )
    deps.journeys.transfers_waiting.set()
    return _out(row)


# Transfers routing keeps trying to deliver, for longer than an operator expects: the agency
# may be down or answering slowly; nothing is lost, but someone should look (and call).
stuck = APIRouter(
    prefix="/v1/transfers",
    tags=["operators"],
    dependencies=[Depends(require_scope(DEAD_LETTERS_MANAGE))],
)


class StuckTransferOut(DeadLetterOut):
    routed_at: datetime
    next_attempt_at: datetime


@stuck.get(
    "/stuck",
    response_model=list[StuckTransferOut],
    operation_id="listStuckTransfers",
    summary="Transfers still pending delivery longer than older_than_s",
)
async def list_stuck(
    deps: Deps,
    # At most a year: a larger span is no question an operator asks, and would overflow
    # the date arithmetic (the contract test found the 500).
    older_than_s: Annotated[float, Query(ge=0, le=366 * 86400)] = 900,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[StuckTransferOut]:
    # The current round's start: a supplement round is pending anew from then.
    since = func.coalesce(transfers.c.round_started_at, transfers.c.routed_at)
    cutoff = deps.clock.now() - timedelta(seconds=older_than_s)
    query = (
        select(transfers)
        .where(transfers.c.status == TransferStatus.PENDING, since < cutoff)
        .order_by(since)
        .limit(limit)
    )
    async with deps.sessions() as session:
        return [
            StuckTransferOut(
                **_out(row).model_dump(),
                routed_at=row.routed_at,
                next_attempt_at=row.next_attempt_at,
            )
            for row in _rows(await session.execute(query))
        ]
