"""The queue gauges (core/queue_metrics.py) count what the database holds: rows waiting,
rows set aside, overdue dossiers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import Column, Integer, MetaData, String, Table
from sqlalchemy.ext.asyncio import AsyncEngine

from core.queue_metrics import QueueCount, QueueMetrics, count_of
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
