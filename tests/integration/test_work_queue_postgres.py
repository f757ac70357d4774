"""The one leased work queue on PostgreSQL: replicas claiming at once take disjoint rows
(FOR UPDATE SKIP LOCKED), and a lease that runs out is claimed again by another replica."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from core.clock import TestClock
from core.storage import create_engine, create_tables, session_factory
from tests.unit.test_leased_queue import LEASE_S, START, Worker, add, jobs, metadata


@pytest.fixture
async def engines(database_url: str) -> AsyncIterator[tuple[AsyncEngine, AsyncEngine]]:
    first, second = create_engine(database_url), create_engine(database_url)
    async with first.begin() as conn:
        await conn.run_sync(metadata.drop_all)
    await create_tables(first, metadata)
    yield first, second
    async with first.begin() as conn:
        await conn.run_sync(metadata.drop_all)
    await first.dispose()
    await second.dispose()


async def test_replicas_claim_disjoint_rows_and_take_over_a_lapsed_lease(
    engines: tuple[AsyncEngine, AsyncEngine],
) -> None:
    clock = TestClock(START)
    ids = [f"j{i:02}" for i in range(20)]
    await add(engines[0], *ids)
    # Each claims at most 10 (the lease's limit): together, every row exactly once.
    one, two = Worker(engines[0], clock, {}), Worker(engines[1], clock, {})
    claims: list[list[Any]] = list(await asyncio.gather(one.queue.claim(), two.queue.claim()))
    keys = [row.id for claim in claims for row in claim]
    assert sorted(keys) == ids

    # Both replicas die mid-call; once the lease is over, a third takes every row again.
    third = Worker(engines[1], clock, {})
    assert await third.queue.claim() == []
    clock.advance(timedelta(seconds=LEASE_S))
    while await third.queue._claim_and_work():
        pass
    assert sorted(third.called) == ids
    async with session_factory(engines[0])() as session:
        rows = (await session.execute(jobs.select())).all()
    assert {(row.status, row.attempts) for row in rows} == {("done", 2)}
