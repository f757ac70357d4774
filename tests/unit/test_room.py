"""The room a work queue leaves its consumer (core/room.py), counted as the worker claims:
due rows of the claimable statuses, narrowed as the lease narrows them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import Boolean, Column, Integer, MetaData, String, Table
from sqlalchemy.ext.asyncio import AsyncEngine

from core.clock import TestClock
from core.room import QueueRoom
from core.storage import UtcDateTime, create_engine, create_tables, session_factory
from core.workqueue import Lease

metadata = MetaData()
work = Table(
    "test_room_work",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("status", String(20), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UtcDateTime(), nullable=False),
    # Held back by the worker's own narrowing (as the portal's one push at a time).
    Column("blocked", Boolean, nullable=False, default=False),
)
LEASE = Lease(work, ["pending"], 30, 10, where=work.c.blocked.is_(False))
START = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'room.db'}")
    await create_tables(engine, metadata)
    yield engine
    await engine.dispose()


async def add(engine: AsyncEngine, count: int, due: datetime, **values: object) -> None:
    async with engine.begin() as conn:
        rows = [{"status": "pending", "next_attempt_at": due, "blocked": False} | values]
        await conn.execute(work.insert(), rows * count)


def held(group: str) -> float | None:
    return REGISTRY.get_sample_value("gateway_consumer_held", {"group": group})


async def test_only_rows_the_worker_would_claim_now_take_room(engine: AsyncEngine) -> None:
    clock = TestClock(START)
    room = QueueRoom("g", session_factory(engine), [LEASE], max_due=3, clock=clock, interval_s=0)
    await add(engine, 2, START)  # due
    await add(engine, 5, START, status="done")  # finished
    await add(engine, 5, START, blocked=True)  # held back behind an earlier row
    await add(engine, 3, START + timedelta(minutes=5))  # backing off from a failing agency
    assert await room()
    assert held("g") == 0

    clock.advance(timedelta(minutes=5))  # the backoff is over: five due, no room
    assert not await room()
    assert held("g") == 1

    async with engine.begin() as conn:
        await conn.execute(work.update().values(status="done"))
    assert await room()


async def test_maintenance_an_outage_zero_and_no_worker_never_hold(engine: AsyncEngine) -> None:
    clock = TestClock(START)
    await add(engine, 4, START)

    async def in_maintenance() -> bool:
        return True

    sessions = session_factory(engine)
    # In maintenance the workers claim nothing by design: the work waits in the database.
    kept = QueueRoom("m", sessions, [LEASE], max_due=3, clock=clock, hold=in_maintenance)
    assert await kept()
    assert await QueueRoom("o", sessions, [LEASE], max_due=0, clock=clock)()
    # No worker drains it (routing without PORTAL_SYNC_URL): routing passes no lease.
    assert await QueueRoom("p", sessions, [], max_due=3, clock=clock)()
    await engine.dispose()
    broken = create_engine("sqlite+aiosqlite:////nonexistent/dir/room.db")
    unreachable = QueueRoom("u", session_factory(broken), [LEASE], max_due=3, clock=clock)
    assert await unreachable()  # fails open: the handlers meet the outage themselves
    await broken.dispose()


async def test_room_is_counted_at_most_once_an_interval(engine: AsyncEngine) -> None:
    clock = TestClock(START)
    room = QueueRoom("i", session_factory(engine), [LEASE], max_due=1, clock=clock, interval_s=60)
    assert await room()
    await add(engine, 1, START)
    assert await room()  # the last count stands for a minute
