"""Agencies acknowledge receipt of a transfer; operators see the ones that never were.

A 2xx from an agency's HTTPS endpoint, or a record on its Kafka inbox, only says the bytes
arrived: the agency confirms it has the dossier with POST /v1/transfers/{id}/acknowledgement
(over gRPC the receipt is the acknowledgement). Unacknowledged transfers are re-delivered
and then escalated (services/routing/delivery.py). Escalations are a pull list like dead
letters: an operator's to-do (phone the agency), not something another service acts on.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from opentelemetry import trace
from pydantic import BaseModel
from sqlalchemy import select

from core.audit import forbidden
from core.auth import DEAD_LETTERS_MANAGE, TRANSFERS_REPORT, AgencyPrincipal, require_scope
from core.openapi import problems
from core.problems import Problem
from core.storage import rowcount
from core.telemetry import dossier_parent
from services.routing.deps import Deps, SessionsDep
from services.routing.models import transfers

router = APIRouter(prefix="/v1", tags=["agency"])
tracer = trace.get_tracer("gateway.routing")


class AcknowledgementOut(BaseModel):
    transfer_id: str
    acknowledged_at: datetime
    replayed: bool


class EscalationOut(BaseModel):
    transfer_id: str
    dossier_code: str
    step_index: int
    step_name: str
    agency_code: str
    delivered_at: datetime | None
    redeliveries: int
    escalated_at: datetime | None
    last_error: str | None


@router.post(
    "/transfers/{transfer_id}/acknowledgement",
    response_model=AcknowledgementOut,
    responses=problems(404),
    operation_id="acknowledgeTransfer",
    summary="Confirm that the agency has received a transfer",
)
async def acknowledge(
    transfer_id: str,
    agency: Annotated[AgencyPrincipal, Depends(require_scope(TRANSFERS_REPORT))],
    deps: Deps,
) -> AcknowledgementOut:
    """Idempotent: acknowledging again answers with the first time and `replayed: true`.

    Accepted before the gateway has recorded the delivery too: a fast agency may answer
    before its 2xx is written down."""
    # In UTC, as the column gives it back to the replays (a test clock may be in another zone).
    now = deps.clock.now().astimezone(UTC)
    async with deps.sessions.begin() as session:
        row = (
            await session.execute(
                select(transfers.c.agency_code, transfers.c.dossier_code, transfers.c.trace)
                .where(transfers.c.transfer_id == transfer_id)
                .with_for_update()
            )
        ).first()
        if row is None:
            raise Problem(404, "transfer-not-found", "No such transfer", transfer_id)
        if row.agency_code != agency.agency_code:
            raise forbidden(
                agency,
                action="acknowledge-transfer",
                target=f"transfer/{transfer_id}",
                slug="transfer-held-by-another-agency",
                title="Only the agency a transfer was sent to may acknowledge it",
                detail=f"transfer {transfer_id} went to {row.agency_code}, "
                f"not {agency.agency_code}",
            )
        # Conditional, so of concurrent acknowledgements one sets the time (SQLite ignores
        # FOR UPDATE) and the others answer with it as replays.
        moved = await session.execute(
            transfers.update()
            .where(transfers.c.transfer_id == transfer_id, transfers.c.acknowledged_at.is_(None))
            .values(acknowledged_at=now)
        )
        if rowcount(moved) != 1:
            first = await session.scalar(
                select(transfers.c.acknowledged_at).where(transfers.c.transfer_id == transfer_id)
            )
            assert first is not None  # only set, never cleared
            return AcknowledgementOut(transfer_id=transfer_id, acknowledged_at=first, replayed=True)
        # The first acknowledgement, marked in the dossier's trace whatever context the
        # agency's request came with (core/telemetry.py says why parent or link).
        parent, links = dossier_parent(row.trace)
        tracer.start_span(
            "transfer acknowledged",
            context=parent,
            links=links,
            attributes={"dossier.code": row.dossier_code, "agency.code": row.agency_code},
        ).end()
    return AcknowledgementOut(transfer_id=transfer_id, acknowledged_at=now, replayed=False)


@router.get(
    "/escalations",
    response_model=list[EscalationOut],
    tags=["operators"],
    summary="Transfers delivered but never acknowledged, after every re-delivery",
    dependencies=[Depends(require_scope(DEAD_LETTERS_MANAGE))],
)
async def list_escalations(
    sessions: SessionsDep,
    agency_code: Annotated[str | None, Query(max_length=20)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[EscalationOut]:
    query = select(transfers).where(
        transfers.c.escalated.is_(True), transfers.c.acknowledged_at.is_(None)
    )
    if agency_code:
        query = query.where(transfers.c.agency_code == agency_code)
    query = query.order_by(transfers.c.escalated_at).limit(limit)
    async with sessions() as session:
        rows = await session.execute(query)
        return [EscalationOut.model_validate(dict(row._mapping)) for row in rows]
