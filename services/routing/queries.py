"""The reads of routing's tables that more than one part makes, typed as their rows.

`lock=True` adds FOR UPDATE: on PostgreSQL the row is held to the end of the transaction; on
SQLite it locks nothing, which is why every state change is also a conditional update
(lifecycle.py says why).
"""

from __future__ import annotations

from typing import cast

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.routing.models import CLOSED_TRANSFERS, journeys, transfers
from services.routing.rows import JourneyRow, TransferRow


async def journey(session: AsyncSession, code: str, *, lock: bool = False) -> JourneyRow | None:
    query = select(journeys).where(journeys.c.code == code)
    if lock:
        query = query.with_for_update()
    return cast("JourneyRow | None", (await session.execute(query)).first())


async def transfer(
    session: AsyncSession, transfer_id: str, *, lock: bool = False
) -> TransferRow | None:
    query = select(transfers).where(transfers.c.transfer_id == transfer_id)
    if lock:
        query = query.with_for_update()
    return cast("TransferRow | None", (await session.execute(query)).first())


async def steps(session: AsyncSession, code: str) -> list[TransferRow]:
    """Every transfer of a dossier, in the order of its procedure's steps."""
    query = (
        select(transfers).where(transfers.c.dossier_code == code).order_by(transfers.c.step_index)
    )
    return cast("list[TransferRow]", (await session.execute(query)).all())


async def open_steps(session: AsyncSession, codes: list[str]) -> list[TransferRow]:
    """The transfers of these dossiers that still hold them, in step order."""
    query = (
        select(transfers)
        .where(transfers.c.dossier_code.in_(codes), transfers.c.status.notin_(CLOSED_TRANSFERS))
        .order_by(transfers.c.step_index)
    )
    return cast("list[TransferRow]", (await session.execute(query)).all())
