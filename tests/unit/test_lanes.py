"""Lanes (core/lanes.py) on an embedded database: a lane whose calls hang holds up none of
the others, takes no more than its places, does not count as room taken, and a lane's
fault or a stop leaves its rows to be claimed again after the lease."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, select
from sqlalchemy.ext.asyncio import AsyncEngine

from core.clock import TestClock
from core.lanes import GroupCommit, Lanes
from core.room import QueueRoom
from core.storage import UtcDateTime, create_engine, create_tables, session_factory
from core.workqueue import Lease, LeasedQueue

metadata = MetaData()
calls = Table(
    "test_lane_calls",
    metadata,
    Column("id", String(20), primary_key=True),
    Column("agency", String(20), nullable=False),
    Column("status", String(20), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", UtcDateTime(), nullable=False),
)
START = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
LEASE_S = 30.0


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'lanes.db'}")
    await create_tables(engine, metadata)
    yield engine
    await engine.dispose()


class Agencies:
    """A queue of calls to agencies; the agencies in `hanging` do not answer until released,
    those in `broken` make the work raise."""

    def __init__(self, engine: AsyncEngine, clock: TestClock, *, per_lane: int = 2) -> None:
        self.hanging: set[str] = set()
        self.broken: set[str] = set()
        self.release = asyncio.Event()
        self.lanes = Lanes("agency", lambda row: row.agency, per_lane=per_lane, total=50)
        self.queue = LeasedQueue[Any](
            "lanes",
            engine,
            session_factory(engine),
            Lease(calls, ["pending"], LEASE_S, 10, lanes=self.lanes),
            self.work,
            wakeup=asyncio.Event(),
            poll_interval_s=0.05,
            clock=clock,
        )

    async def work(self, rows: list[Any]) -> None:
        agency = rows[0].agency
        assert {row.agency for row in rows} == {agency}, "a batch of one lane only"
        if agency in self.broken:
            raise RuntimeError("a bug in this agency's channel")
        if agency in self.hanging:
            await self.release.wait()
        async with self.queue.sessions.begin() as session:
            ids = [row.id for row in rows]
            await session.execute(calls.update().where(calls.c.id.in_(ids)).values(status="done"))


async def add(engine: AsyncEngine, agency: str, *ids: str) -> None:
    rows = [
        {"id": i, "agency": agency, "status": "pending", "attempts": 0, "next_attempt_at": START}
        for i in ids
    ]
    async with engine.begin() as conn:
        await conn.execute(calls.insert(), rows)


async def statuses(engine: AsyncEngine) -> dict[str, str]:
    async with engine.connect() as conn:
        return {i: s for i, s in await conn.execute(select(calls.c.id, calls.c.status))}


async def until(engine: AsyncEngine, done: set[str]) -> None:
    """Until exactly `done` are done (polling the table: the work has no event to wait on)."""
    async with asyncio.timeout(5):
        while {i for i, s in (await statuses(engine)).items() if s == "done"} != done:  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def in_flight(lanes: Lanes, expected: dict[str, int]) -> None:
    async with asyncio.timeout(5):
        while dict(lanes.in_flight) != expected:  # noqa: ASYNC110
            await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def running(queue: LeasedQueue[Any]) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(queue.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_hanging_agency_holds_up_no_other(engine: AsyncEngine) -> None:
    agencies = Agencies(engine, TestClock(START))
    agencies.hanging.add("slow")
    await add(engine, "slow", "s1")
    async with running(agencies.queue):
        await in_flight(agencies.lanes, {"slow": 1})  # s1 is out, hanging
        await add(engine, "fast", "f1", "f2")
        agencies.queue.wake()
        await until(engine, {"f1", "f2"})  # delivered while s1 still hangs
        assert agencies.lanes.in_flight == {"slow": 1}

        agencies.release.set()
        await until(engine, {"f1", "f2", "s1"})
    assert not agencies.lanes.in_flight


async def test_a_lane_takes_no_more_than_its_places_and_its_backlog_takes_no_room(
    engine: AsyncEngine,
) -> None:
    clock = TestClock(START)
    agencies = Agencies(engine, clock, per_lane=2)
    agencies.hanging.add("slow")
    await add(engine, "slow", "s1", "s2", "s3", "s4", "s5")
    room = QueueRoom(
        "g", agencies.queue.sessions, [agencies.queue.lease], max_due=3, clock=clock, interval_s=0
    )
    assert not await room()  # five due, three the most: no room yet
    async with running(agencies.queue):
        await in_flight(agencies.lanes, {"slow": 2})
        await asyncio.sleep(0.1)  # the queue goes on claiming meanwhile...
        assert agencies.lanes.in_flight == {"slow": 2}  # ...none of the full lane's rows
        async with engine.connect() as conn:
            leased = (await conn.execute(select(calls.c.id).where(calls.c.attempts == 1))).all()
        assert len(leased) == 2  # the other three were not claimed: still due
        # The full lane's rows wait in the database without holding the consumer.
        assert await room()

        agencies.release.set()
        await until(engine, {"s1", "s2", "s3", "s4", "s5"})


async def test_a_lane_that_fails_is_claimed_again_after_its_lease_and_the_rest_go_on(
    engine: AsyncEngine,
) -> None:
    clock = TestClock(START)
    agencies = Agencies(engine, clock)
    agencies.broken.add("buggy")
    await add(engine, "buggy", "b1")
    await add(engine, "fine", "f1")
    async with running(agencies.queue):
        await until(engine, {"f1"})
        await asyncio.sleep(0.1)
        assert not agencies.lanes.in_flight  # the failed lane gave its place back
        assert await agencies.queue.claim() == []  # b1 is leased...

        agencies.broken.clear()
        clock.advance(timedelta(seconds=LEASE_S))  # ...until its lease runs out
        agencies.queue.wake()
        await until(engine, {"f1", "b1"})


async def test_a_stop_cancels_the_calls_out_and_leaves_their_rows_leased(
    engine: AsyncEngine,
) -> None:
    clock = TestClock(START)
    agencies = Agencies(engine, clock)
    agencies.hanging.add("slow")
    await add(engine, "slow", "s1")
    async with running(agencies.queue):
        await in_flight(agencies.lanes, {"slow": 1})
        [task] = agencies.queue._in_flight
    assert task.cancelled()
    assert not agencies.lanes.in_flight
    assert await statuses(engine) == {"s1": "pending"}
    clock.advance(timedelta(seconds=LEASE_S))
    [again] = await Agencies(engine, clock).queue.claim()
    assert (again.id, again.attempts) == ("s1", 1)


async def test_a_call_that_outlives_its_lease_is_not_made_twice_here(engine: AsyncEngine) -> None:
    clock = TestClock(START)
    agencies = Agencies(engine, clock)
    agencies.hanging.add("slow")
    calls_made: list[str] = []
    work = agencies.work

    async def counted(rows: list[Any]) -> None:
        calls_made.extend(row.id for row in rows)
        await work(rows)

    agencies.queue._work = counted
    await add(engine, "slow", "s1")
    async with running(agencies.queue):
        await in_flight(agencies.lanes, {"slow": 1})
        clock.advance(timedelta(seconds=LEASE_S + 1))  # the call is still out, its lease over
        agencies.queue.wake()
        await asyncio.sleep(0.2)
        assert calls_made == ["s1"]
        # Another replica may take it over (it cannot know the call is still out).
        [taken] = await Agencies(engine, clock).queue.claim()
        assert taken.id == "s1"
        agencies.release.set()


async def test_lanes_that_return_together_are_recorded_in_one_commit() -> None:
    commits: list[list[int]] = []

    async def record(outcomes: list[int]) -> None:
        await asyncio.sleep(0.05)  # a commit takes a while: others return meanwhile
        commits.append(sorted(outcomes))

    together = GroupCommit(record)
    await asyncio.gather(together([1]), together([2, 3]), together([4]))
    assert sorted(o for c in commits for o in c) == [1, 2, 3, 4]
    assert len(commits) == 2  # the first alone, the rest in the commit after it

    async def failing(outcomes: list[int]) -> None:
        await asyncio.sleep(0.05)
        raise ConnectionError("database away")

    broken = GroupCommit(failing)
    results = await asyncio.gather(broken([1]), broken([2]), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)  # no outcome taken for done
