"""The one leased work queue (core/workqueue.py) on an embedded database: a lease that runs
out is claimed again by another worker, failures follow the retry policy, a permanent one
is parked, a hold stops claims, an outage parks nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from core.clock import TestClock
from core.storage import UtcDateTime, create_engine, create_tables, session_factory
from core.workqueue import Hold, Lease, LeasedQueue, RetryPolicy, WorkQueue

metadata = MetaData()
jobs = Table(
    "test_jobs",
    metadata,
    Column("id", String(20), primary_key=True),
    Column("status", String(20), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", UtcDateTime(), nullable=False),
    Column("last_error", String(300)),
    Column("dead_lettered_at", UtcDateTime()),
)
START = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
LEASE_S = 30.0
# Full jitter: the first retry within 1 s, the second within 2 s, the third is the last.
POLICY = RetryPolicy(base_s=1, max_s=10, max_attempts=3)

# (error, retryable) for a job; no entry: the call succeeds.
Answers = dict[str, tuple[str, bool]]


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'queue.db'}")
    await create_tables(engine, metadata)
    yield engine
    await engine.dispose()


class Worker:
    """A queue whose work calls a fake system answering from `answers`."""

    def __init__(
        self, engine: AsyncEngine, clock: TestClock, answers: Answers, hold: Hold | None = None
    ) -> None:
        self.answers = answers
        self.called: list[str] = []
        self.done = asyncio.Event()
        self.queue = LeasedQueue[Any](
            "test",
            engine,
            session_factory(engine),
            Lease(jobs, ["pending"], LEASE_S, 10),
            self.work,
            wakeup=asyncio.Event(),
            poll_interval_s=0.05,
            hold=hold,
            retry=POLICY,
            clock=clock,
        )

    async def work(self, rows: list[Any]) -> None:
        self.called += [row.id for row in rows]
        now = self.queue.clock.now()
        async with self.queue.sessions.begin() as session:
            for row in rows:
                if row.id not in self.answers:
                    await session.execute(
                        jobs.update().where(jobs.c.id == row.id).values(status="done")
                    )
                    continue
                error, retryable = self.answers[row.id]
                await self.queue.fail(
                    session, row, error, retryable=retryable, now=now, what=f"job {row.id}"
                )
        self.done.set()


async def add(engine: AsyncEngine, *ids: str) -> None:
    rows = [{"id": i, "status": "pending", "attempts": 0, "next_attempt_at": START} for i in ids]
    async with session_factory(engine).begin() as session:
        await session.execute(jobs.insert(), rows)


async def job(engine: AsyncEngine, job_id: str) -> Any:
    async with session_factory(engine)() as session:
        return (await session.execute(select(jobs).where(jobs.c.id == job_id))).one()


async def test_a_lease_that_runs_out_is_claimed_by_another_worker(engine: AsyncEngine) -> None:
    clock = TestClock(START)
    await add(engine, "j1")
    first, second = Worker(engine, clock, {}), Worker(engine, clock, {})

    [claimed] = await first.queue.claim()  # ...and the first worker dies mid-call
    assert claimed.id == "j1"
    assert await second.queue.claim() == []  # the lease holds it
    clock.advance(timedelta(seconds=LEASE_S - 1))
    assert await second.queue.claim() == []

    clock.advance(timedelta(seconds=1))
    assert await second.queue._claim_and_work() == 1
    assert second.called == ["j1"]
    row = await job(engine, "j1")
    assert (row.status, row.attempts) == ("done", 2)


async def test_failures_are_retried_with_backoff_then_dead_lettered(engine: AsyncEngine) -> None:
    clock = TestClock(START)
    await add(engine, "j1")
    worker = Worker(engine, clock, {"j1": ("HTTP 503", True)})
    steps = [1.0, 2.0]
    for attempt, step in enumerate(steps, start=1):
        before = clock.now()
        assert await worker.queue._claim_and_work() == 1
        row = await job(engine, "j1")
        assert (row.status, row.attempts, row.last_error) == ("pending", attempt, "HTTP 503")
        assert before <= row.next_attempt_at <= before + timedelta(seconds=step)
        assert row.dead_lettered_at is None
        # Not due before its time.
        if row.next_attempt_at > before:
            assert await worker.queue.claim() == []
        clock.set(row.next_attempt_at)

    assert await worker.queue._claim_and_work() == 1
    row = await job(engine, "j1")
    assert (row.status, row.attempts) == ("dead_lettered", 3)
    assert row.dead_lettered_at == clock.now()
    # Parked: never claimed again, however long one waits.
    clock.advance(timedelta(days=1))
    assert await worker.queue.claim() == []


async def test_a_refusal_is_dead_lettered_at_once_and_holds_back_no_other(
    engine: AsyncEngine,
) -> None:
    clock = TestClock(START)
    await add(engine, "refused", "fine")
    worker = Worker(engine, clock, {"refused": ("HTTP 422", False)})
    assert await worker.queue._claim_and_work() == 2
    refused, fine = await job(engine, "refused"), await job(engine, "fine")
    assert (refused.status, refused.attempts, refused.last_error) == (
        "dead_lettered",
        1,
        "HTTP 422",
    )
    assert refused.dead_lettered_at == START
    assert fine.status == "done"


async def run_until(queue: WorkQueue, done: Callable[[], Awaitable[bool]]) -> None:
    task = asyncio.create_task(queue.run())
    try:
        async with asyncio.timeout(20):
            while not await done():  # noqa: ASYNC110 - the condition is the queue's own state
                await asyncio.sleep(0.01)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_a_hold_stops_claims_until_it_is_lifted(engine: AsyncEngine) -> None:
    clock = TestClock(START)
    held = True
    asked = 0

    async def hold() -> bool:
        nonlocal asked
        asked += 1
        return held

    await add(engine, "j1")
    worker = Worker(engine, clock, {}, hold=hold)

    async def asked_twice() -> bool:
        return asked >= 2

    # Asked before every claim: twice means a whole turn of the loop went by.
    await run_until(worker.queue, asked_twice)
    assert worker.called == []
    assert (await job(engine, "j1")).attempts == 0

    held = False

    async def worked() -> bool:
        return worker.done.is_set()

    await run_until(worker.queue, worked)
    assert worker.called == ["j1"]


async def test_an_outage_is_waited_out_and_parks_nothing(engine: AsyncEngine) -> None:
    outages = 2
    batches = 0

    async def batch() -> int:
        nonlocal outages, batches
        batches += 1
        if outages:
            outages -= 1
            raise OperationalError("SELECT", {}, ConnectionError("database restarting"))
        return 0

    queue = WorkQueue(
        "outage", batch, wakeup=asyncio.Event(), poll_interval_s=0.01, outage_pause_s=0.01
    )

    async def past_the_outage() -> bool:
        return batches >= 3

    await run_until(queue, past_the_outage)
    assert outages == 0
