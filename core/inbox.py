"""Idempotent consumers: event ids are claimed in the handler's own transaction.

Kafka delivers at least once and the outbox may republish after a crash; claiming the ids
in the same commit as the handler's effects makes every effect happen exactly once.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Column, MetaData, String, Table
from sqlalchemy.ext.asyncio import AsyncSession

from core.clock import SYSTEM_CLOCK
from core.events import Event
from core.storage import UtcDateTime, upsert


def inbox_table(metadata: MetaData, owner: str) -> Table:
    return Table(
        f"{owner}_processed_event",
        metadata,
        Column("event_id", String(64), primary_key=True),
        Column("processed_at", UtcDateTime(), nullable=False),
    )


async def first_seen(session: AsyncSession, table: Table, events: Sequence[Event]) -> list[Event]:
    """The events of the batch never processed before, in their order; one round trip."""
    if not events:
        return []
    now = SYSTEM_CLOCK.now()
    statement = (
        upsert(session.get_bind().dialect.name, table)
        .values([{"event_id": e.id, "processed_at": now} for e in events])
        .on_conflict_do_nothing()
        .returning(table.c.event_id)
    )
    claimed = set((await session.execute(statement)).scalars())
    fresh = []
    for event in events:
        # A redelivery inside the same batch is claimed once too, not once per copy.
        if event.id in claimed:
            claimed.discard(event.id)
            fresh.append(event)
    return fresh
