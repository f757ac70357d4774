"""The queue gauges (core/queue_metrics.py) count what the database holds: rows waiting,
rows set aside, overdue dossiers; and the room a queue leaves its consumer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table
from sqlalchemy.ext.asyncio import AsyncEngine

from core.clock import TestClock
from core.queue_metrics import QueueCount, QueueMetrics, QueueRoom, count_of
from core.storage import create_engine, create_tables, session_factory

metadata = MetaData()
rows = Table(
    "test_gauged",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("status", String(20), nullable=False),
)


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'gauged.db'}")
    await create_tables(engine, metadata)
    yield engine
    await engine.dispose()


async def test_gauges_follow_the_table(engine: AsyncEngine) -> None:
    metrics = QueueMetrics(session_factory(engine))
    c = rows.c
    metrics.add(QueueCount("gauged", rows, c.status == "pending", c.status == "dead_lettered"))
    metrics.overdue = count_of(rows, c.status == "overdue")
    statuses = ["pending"] * 3 + ["dead_lettered"] * 2 + ["done", "overdue"]
    async with engine.begin() as conn:
        await conn.execute(rows.insert(), [{"status": s} for s in statuses])

    await metrics.refresh()
    assert REGISTRY.get_sample_value("gateway_queue_depth", {"queue": "gauged"}) == 3
    assert REGISTRY.get_sample_value("gateway_dead_letters", {"queue": "gauged"}) == 2
    assert REGISTRY.get_sample_value("gateway_dossiers_overdue") == 1

    async with engine.begin() as conn:
        await conn.execute(rows.update().where(c.status == "pending").values(status="done"))
    await metrics.refresh()
    assert REGISTRY.get_sample_value("gateway_queue_depth", {"queue": "gauged"}) == 0


leased = Table(
    "test_due",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("status", String(20), nullable=False),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False),
)


async def test_a_queue_full_of_due_rows_holds_its_consumer_and_backing_off_rows_do_not(
    engine: AsyncEngine,
) -> None:
    clock = TestClock(datetime(2026, 12, 3, 9, 0, tzinfo=UTC))
    queue = QueueCount("due", leased, leased.c.status == "pending")
    room = QueueRoom("g", session_factory(engine), [queue], max_due=3, clock=clock, interval_s=0)
    now, later = clock.now(), clock.now() + timedelta(minutes=5)
    async with engine.begin() as conn:
        # Two due, one done, and three backing off from a failing agency: room.
        await conn.execute(
            leased.insert(),
            [{"status": "pending", "next_attempt_at": now}] * 2
            + [{"status": "done", "next_attempt_at": now}]
            + [{"status": "pending", "next_attempt_at": later}] * 3,
        )
    assert await room()
    assert REGISTRY.get_sample_value("gateway_consumer_held", {"group": "g"}) == 0

    clock.advance(timedelta(minutes=5))  # the backoff is over: five due, no room
    assert not await room()
    assert REGISTRY.get_sample_value("gateway_consumer_held", {"group": "g"}) == 1

    async with engine.begin() as conn:
        await conn.execute(leased.update().values(status="done"))
    assert await room()


async def test_room_is_counted_at_most_once_an_interval_and_never_when_off(
    engine: AsyncEngine,
) -> None:
    clock = TestClock(datetime(2026, 12, 3, 9, 0, tzinfo=UTC))
    queue = QueueCount("due", leased, leased.c.status == "pending")
    room = QueueRoom("h", session_factory(engine), [queue], max_due=1, clock=clock, interval_s=60)
    assert await room()
    async with engine.begin() as conn:
        await conn.execute(leased.insert(), [{"status": "pending", "next_attempt_at": clock.now()}])
    assert await room()  # the last count stands for a minute
    off = QueueRoom("i", session_factory(engine), [queue], max_due=0, clock=clock)
    assert await off()
