"""Idempotent consumers: an event id is claimed in the handler's own transaction.

Kafka delivers at least once and the outbox may republish after a crash; claiming the id
in the same commit as the handler's effects makes every effect happen exactly once.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Column, MetaData, String, Table
from sqlalchemy.ext.asyncio import AsyncSession

from core.storage import UtcDateTime, upsert


def inbox_table(metadata: MetaData, owner: str) -> Table:
    return Table(
        f"{owner}_processed_event",
        metadata,
        Column("event_id", String(64), primary_key=True),
        Column("processed_at", UtcDateTime(), nullable=False),
    )


async def claim_event(session: AsyncSession, table: Table, event_id: str) -> bool:
    """True the first time this event id is seen; False for a redelivery."""
    statement = (
        upsert(session.get_bind().dialect.name, table)
        .values(event_id=event_id, processed_at=datetime.now(UTC))
        .on_conflict_do_nothing()
        .returning(table.c.event_id)
    )
    return (await session.execute(statement)).first() is not None
