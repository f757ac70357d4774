"""What the token endpoint keeps in the database: failure buckets (a burst, then a steady
pace, refusals reserving nothing) and used assertions, and the purge of expired rows."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Table, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.clock import TestClock
from core.storage import create_engine, create_tables, session_factory
from services.identity.models import failure_buckets, metadata, used_assertions
from services.identity.token_state import FailureBuckets, Pace, UsedAssertions

START = datetime(2026, 12, 3, 8, tzinfo=UTC)
PACE = Pace(per_min=6, burst=3)  # one failure every 10 s after a burst of 3
KEY = [("client:hotich@10.0.0.1", PACE)]


@pytest.fixture
async def sessions(tmp_path: Path) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'identity.db'}")
    await create_tables(engine, metadata)
    yield session_factory(engine)
    await engine.dispose()


async def _rows(sessions: async_sessionmaker[AsyncSession], table: Table) -> int:
    async with sessions() as session:
        return int((await session.execute(select(func.count()).select_from(table))).scalar_one())


async def test_a_bucket_takes_a_burst_then_one_failure_per_interval(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    clock = TestClock(START)
    buckets = FailureBuckets(sessions, clock)
    for _ in range(3):
        assert await buckets.delays(KEY) == [0.0]
        await buckets.charge(KEY)
    assert await buckets.delays(KEY) == [pytest.approx(10.0)]
    # Failures while throttled reserve nothing: the bucket frees on time all the same.
    await buckets.charge(KEY)
    clock.advance(timedelta(seconds=10))
    assert await buckets.delays(KEY) == [0.0]
    await buckets.charge(KEY)
    assert await buckets.delays(KEY) == [pytest.approx(10.0)]


async def test_a_replica_learns_of_failures_charged_elsewhere(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    clock = TestClock(START)
    here, there = FailureBuckets(sessions, clock), FailureBuckets(sessions, clock)
    assert await here.delays(KEY) == [0.0]
    for _ in range(3):
        await there.charge(KEY)
    assert await here.delays(KEY) == [pytest.approx(10.0)]


async def test_keys_of_different_paces_are_charged_together(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    buckets = FailureBuckets(sessions, TestClock(START))
    keys = [("client:hotich@10.0.0.1", Pace(per_min=6, burst=1)), ("address:10.0.0.1", PACE)]
    await buckets.charge(keys)
    assert await buckets.delays(keys) == [pytest.approx(10.0), 0.0]


async def test_an_assertion_works_once_and_its_row_goes_once_expired(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    clock = TestClock(START)
    used = UsedAssertions(sessions, clock)
    buckets = FailureBuckets(sessions, clock)
    expires = (START + timedelta(seconds=120)).timestamp()
    assert await used.use("motcua", "a1", expires)
    assert not await used.use("motcua", "a1", expires)
    assert await used.use("hotich", "a1", expires)  # a jti is the client's own
    await buckets.charge(KEY)
    assert await used.purge() == 0
    clock.advance(timedelta(seconds=181))  # past exp and the minute kept after it
    assert await used.purge() == 2
    assert await buckets.purge() == 1  # its bucket is full again: the same as no row
    assert await _rows(sessions, used_assertions) == 0
    assert await _rows(sessions, failure_buckets) == 0


async def test_a_long_key_is_stored_by_its_hash(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    buckets = FailureBuckets(sessions, TestClock(START))
    long_key = [("client:" + "x" * 5000 + "@10.0.0.1", Pace(per_min=6, burst=1))]
    await buckets.charge(long_key)
    assert await FailureBuckets(sessions, TestClock(START)).delays(long_key) == [
        pytest.approx(10.0)
    ]
