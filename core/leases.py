"""Claiming due work rows with a lease, for workers that call slow external systems.

A claim pushes the row's due time forward by the lease in a short transaction and the
worker then calls out with no transaction open. A worker that dies mid-call leaves the row
to be claimed again when the lease runs out; on PostgreSQL, SKIP LOCKED lets several
replicas claim disjoint rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Column, ColumnElement, Table, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from core.storage import supports_skip_locked


async def claim_due(
    engine: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    table: Table,
    *,
    key: Column[Any],
    status: Column[Any],
    claimable: Sequence[str],
    due: Column[Any],
    attempts: Column[Any],
    lease_s: float,
    limit: int,
    claimed_status: str | None = None,
    where: ColumnElement[bool] | None = None,
) -> list[Any]:
    """Rows whose status is claimable and whose due time has come, with attempts counted.

    `where` narrows the claimable rows further (say, delivered but not acknowledged)."""
    now = datetime.now(UTC)
    query = select(table).where(status.in_(claimable), due <= now).order_by(due).limit(limit)
    if where is not None:
        query = query.where(where)
    if supports_skip_locked(engine):
        query = query.with_for_update(skip_locked=True)
    async with sessions.begin() as session:
        rows = (await session.execute(query)).all()
        if rows:
            values: dict[str, Any] = {
                due.name: now + timedelta(seconds=lease_s),
                attempts.name: attempts + 1,
            }
            if claimed_status is not None:
                values[status.name] = claimed_status
            await session.execute(
                table.update().where(key.in_([getattr(r, key.name) for r in rows])).values(values)
            )
    return list(rows)
