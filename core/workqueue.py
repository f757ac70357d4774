"""The one durable work queue: claiming due rows with a lease, when to try again, what is
worth trying again, and setting aside (parking) what is not.

The queues (the outbox relay, transfer deliveries, portal sync, notify's senders) each run a
WorkQueue. A leased queue claims due rows by pushing their due time one lease ahead in a
short transaction (on PostgreSQL with SKIP LOCKED, so replicas claim disjoint rows; SQLite
has one writer) and its work calls out with no transaction open: a worker that dies
mid-call leaves the row to be claimed again when the lease runs out. After a call, one rule
decides the row's fate: done; failed but worth another try later (a network error, a
timeout, 408/425/429/5xx, gRPC UNAVAILABLE, a retriable Kafka error) with exponential
backoff and jitter; or parked as a dead letter with its reason (a refusal, a record Kafka
will never take, or the last attempt spent). A parked row never blocks the rows behind it
and stays until an operator replays it. A database or broker outage parks nothing: the
queue waits it out. A queue whose rows go out to many counterparts works them in lanes, one
per counterpart, so that a slow one holds up none of the others (core/lanes.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

from prometheus_client import Counter
from pydantic import BaseModel, Field
from sqlalchemy import Column, ColumnElement, Select, Table, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from tenacity import RetryCallState, Retrying, wait_exponential

from core.clock import SYSTEM_CLOCK, Clock
from core.lanes import Lanes
from core.retry import TRANSIENT_ERRORS
from core.storage import rowcount, supports_skip_locked

log = logging.getLogger(__name__)
R = TypeVar("R")
# Answers True while claims must pause (maintenance): nothing is claimed, nothing is lost.
Hold = Callable[[], Awaitable[bool]]
CLAIMED = Counter("gateway_work_claimed", "Rows claimed by each work queue", ["queue"])
OUTAGES = Counter("gateway_work_outages", "Batches a database or broker outage put off", ["queue"])


class RetryPolicy(BaseModel):
    """Attempts and backoff of one queue, from its settings."""

    base_s: float = Field(1.0, gt=0)
    max_s: float = Field(60.0, gt=0)
    max_attempts: int = Field(8, ge=1)

    # The least share of the exponential step a wait takes: 0 is full jitter (uniform
    # between 0 and the step), which spreads best the rows that failed together; 0.5 is
    # "equal jitter", for a provider that should not hear from us sooner than half a step.
    jitter_floor: float = Field(0.0, ge=0, le=1)

    def delay_s(self, attempt: int) -> float:
        """Seconds to wait after `attempt` (1-based) failed: the exponential step (tenacity's
        wait_exponential, capped at max_s), jittered."""
        state = RetryCallState(Retrying(), None, (), {})
        state.attempt_number = max(attempt, 1)
        step = float(wait_exponential(multiplier=self.base_s, max=self.max_s)(state))
        return random.uniform(step * self.jitter_floor, step)

    def next_attempt_at(self, now: datetime, attempt: int) -> datetime:
        return now + timedelta(seconds=self.delay_s(attempt))

    def gives_up(self, attempt: int, *, retryable: bool) -> bool:
        """Park instead of retrying: the failure is permanent or the last attempt is spent."""
        return not retryable or attempt >= self.max_attempts

    def after_failure(self, now: datetime, attempt: int, *, retryable: bool) -> Failure:
        return Failure(
            park=self.gives_up(attempt, retryable=retryable),
            next_attempt_at=self.next_attempt_at(now, attempt),
        )


@dataclass(frozen=True)
class Failure:
    """What comes of a failed attempt: parked as a dead letter, or due again at a time."""

    park: bool
    next_attempt_at: datetime


def describe(exc: BaseException, limit: int = 300) -> str:
    """A dead letter's reason: the error's type and message, bounded, never a response body."""
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class Lease:
    """Which rows of a queue's table are due, and how a claim takes them. The table is keyed
    by one primary key column and has `status`, `attempts` and `next_attempt_at`."""

    table: Table
    claimable: Sequence[str]
    lease_s: float
    limit: int
    claimed_status: str | None = None
    # Narrows the claimable rows further (say, delivered but not acknowledged).
    where: ColumnElement[bool] | None = None
    # Columns set to the claim's instant (say, updated_at).
    stamped: Sequence[str] = ()
    # One lane per counterpart (core/lanes.py): a slow one holds up none of the others.
    lanes: Lanes | None = None

    def due(self, now: datetime, *columns: Any) -> Select[Any]:
        """The rows a claim would take now: claimable, due, narrowed, in a lane with room.
        The one definition, for the claim and for the consumer's room (core/room.py)."""
        c = self.table.c
        query = select(*(columns or [self.table])).where(
            c.status.in_(self.claimable), c.next_attempt_at <= now
        )
        if self.where is not None:
            query = query.where(self.where)
        if (
            self.lanes is not None
            and (open_lanes := self.lanes.passing_over_full(self.table)) is not None
        ):
            query = query.where(open_lanes)
        return query

    def key_of(self, row: Any) -> Any:
        return _field(row, self.key.name)

    @property
    def key(self) -> Column[Any]:
        [key] = self.table.primary_key.columns
        return key


# Inside the claim's transaction, before the lease is written: the found rows that are
# to be leased (the others the hook settles itself).
Take = Callable[[AsyncSession, list[Any], datetime], Awaitable[list[Any]]]
# Inside the claim's transaction, after the lease is written: the rows as the work sees them.
Prepare = Callable[[AsyncSession, list[Any], datetime], Awaitable[list[R]]]


class WorkQueue:
    """The loop of every queue: unless held, run one batch; wait for a wake-up or the poll
    interval when the batch came short of `full`; wait out an outage, never parking for it."""

    def __init__(
        self,
        name: str,
        batch: Callable[[], Awaitable[int]],
        *,
        wakeup: asyncio.Event,
        poll_interval_s: float,
        full: int = 1,
        hold: Hold | None = None,
        outage_pause_s: float = 1.0,
    ) -> None:
        self.name = name
        self.wakeup = wakeup
        self._batch = batch
        self._poll_interval_s = poll_interval_s
        self._full = full
        self._hold = hold
        self._outage_pause_s = outage_pause_s

    def wake(self) -> None:
        self.wakeup.set()

    async def run(self) -> None:
        while True:
            self.wakeup.clear()
            if self._hold is not None and await self._hold():
                await wait_for_work(self.wakeup, self._poll_interval_s)
                continue
            try:
                settled = await self._batch()
            except TRANSIENT_ERRORS as exc:
                OUTAGES.labels(self.name).inc()
                log.warning("%s waiting for the database/Kafka: %r", self.name, exc)
                await asyncio.sleep(self._outage_pause_s)
                continue
            if settled >= self._full:
                continue  # more rows are probably waiting
            await wait_for_work(self.wakeup, self._poll_interval_s)


class LeasedQueue(WorkQueue, Generic[R]):
    """A queue whose batch claims due rows with a lease, then hands them to the work, which
    calls out with no transaction open and records each row's outcome."""

    def __init__(
        self,
        name: str,
        engine: AsyncEngine,
        sessions: async_sessionmaker[AsyncSession],
        lease: Lease,
        work: Callable[[list[R]], Awaitable[None]],
        *,
        wakeup: asyncio.Event,
        poll_interval_s: float,
        hold: Hold | None = None,
        retry: RetryPolicy | None = None,
        take: Take | None = None,
        prepare: Prepare[R] | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        super().__init__(
            name, self._claim_and_work, wakeup=wakeup, poll_interval_s=poll_interval_s, hold=hold
        )
        self._engine = engine
        self.sessions = sessions
        self.lease = lease
        self._work = work
        self._take = take
        self._prepare = prepare
        self.clock = clock
        self.retry = retry
        # The lanes' work still out (core/lanes.py), held here as the loop keeps only weak
        # references to tasks, and the keys of their rows, never claimed twice here.
        self._in_flight: set[asyncio.Task[None]] = set()
        self._busy: set[Any] = set()

    async def run(self) -> None:
        try:
            await super().run()
        except asyncio.CancelledError:
            # Stopping: their rows stay leased, claimed again when the lease runs out, as
            # after a crash. (A loop that failed otherwise is restarted, its lanes still out.)
            for task in self._in_flight:
                task.cancel()
            await asyncio.gather(*self._in_flight, return_exceptions=True)
            raise

    async def _claim_and_work(self) -> int:
        lanes = self.lease.lanes
        if lanes is not None:
            return await self._claim_into_lanes(lanes)
        claimed = await self.claim()
        if claimed:
            await self._work(claimed)
        return len(claimed)

    async def _claim_into_lanes(self, lanes: Lanes) -> int:
        room = min(self.lease.limit, lanes.room())
        leased, claimed = await self._claim_leased(room) if room else ([], [])
        keys: dict[str, list[Any]] = {}
        for row in leased:
            keys.setdefault(str(_field(row, lanes.column)), []).append(self.lease.key_of(row))
        batch = [
            self._start_lane(lanes, lane, items, keys.get(lane, []))
            for lane, items in lanes.split(claimed).items()
        ]
        if batch:
            await asyncio.wait(batch, timeout=lanes.patience_s)
        return len(claimed)

    def _start_lane(
        self, lanes: Lanes, lane: str, items: list[R], keys: list[Any]
    ) -> asyncio.Task[None]:
        lanes.enter(lane, len(items))
        self._busy.update(keys)
        task = asyncio.create_task(self._work_lane(lanes, lane, items), name=f"{self.name} {lane}")
        self._in_flight.add(task)

        def done(task: asyncio.Task[None]) -> None:
            self._in_flight.discard(task)
            self._busy.difference_update(keys)

        task.add_done_callback(done)
        return task

    async def _work_lane(self, lanes: Lanes, lane: str, items: list[R]) -> None:
        try:
            await self._work(items)
        except TRANSIENT_ERRORS as exc:
            OUTAGES.labels(self.name).inc()
            log.warning(
                "%s could not record lane %s (%r); claimed again after the lease",
                self.name,
                lane,
                exc,
            )
        except Exception:
            # One lane's fault is that lane's: its rows are claimed again after the lease,
            # and the other lanes go on.
            log.exception("%s failed on lane %s; claimed again after the lease", self.name, lane)
        finally:
            lanes.leave(lane, len(items))
            self.wake()  # the lane has room again

    async def claim(self, limit: int | None = None) -> list[R]:
        """Due rows, leased, their attempts counted (rows as they were before the claim)."""
        return (await self._claim_leased(limit))[1]

    async def _claim_leased(self, limit: int | None = None) -> tuple[list[Any], list[R]]:
        """The rows leased, and what the work gets of them (after `take` and `prepare`)."""
        lease, c = self.lease, self.lease.table.c
        now = self.clock.now()
        query = lease.due(now).order_by(c.next_attempt_at).limit(limit or lease.limit)
        if self._busy:
            # A call of this process that outlived its lease: not a second one beside it.
            query = query.where(lease.key.not_in(self._busy))
        if supports_skip_locked(self._engine):
            query = query.with_for_update(skip_locked=True)
        async with self.sessions.begin() as session:
            rows: list[Any] = list((await session.execute(query)).all())
            if lease.lanes is not None:
                rows = lease.lanes.within_places(rows)
            if rows and self._take is not None:
                rows = await self._take(session, rows, now)
            if not rows:
                return [], []
            values: dict[str, Any] = {
                "next_attempt_at": now + timedelta(seconds=lease.lease_s),
                "attempts": c.attempts + 1,
            } | {name: now for name in lease.stamped}
            if lease.claimed_status is not None:
                values["status"] = lease.claimed_status
            keys = [lease.key_of(row) for row in rows]
            await session.execute(lease.table.update().where(lease.key.in_(keys)).values(values))
            CLAIMED.labels(self.name).inc(len(rows))
            if self._prepare is not None:
                return rows, await self._prepare(session, rows, now)
        return rows, rows

    async def fail(
        self,
        session: AsyncSession,
        row: Any,
        error: str,
        *,
        retryable: bool,
        now: datetime,
        what: str,
    ) -> bool:
        """Record a failed attempt of a claimed row that is still `pending`: due again after
        the retry policy's backoff, or parked as `dead_lettered` with its reason when the
        failure is permanent or the last attempt is spent. True when this call parked it."""
        assert self.retry is not None, "a queue that records failures has a retry policy"
        table, c = self.lease.table, self.lease.table.c
        attempt = _field(row, "attempts") + 1  # a claimed row is as it was before the claim
        failure = self.retry.after_failure(now, attempt, retryable=retryable)
        parked = "; dead-lettered" if failure.park else ""
        log.warning("%s failed (attempt %d): %s%s", what, attempt, error, parked)
        values: dict[str, Any] = {
            "status": "dead_lettered" if failure.park else "pending",
            "next_attempt_at": failure.next_attempt_at,
            "last_error": error,
        }
        if "dead_lettered_at" in c:
            values["dead_lettered_at"] = now if failure.park else None
        key = self.lease.key
        result = await session.execute(
            table.update()
            .where(key == self.lease.key_of(row), c.status == "pending")
            .values(values)
        )
        return failure.park and rowcount(result) > 0


def _field(row: Any, name: str) -> Any:
    return row[name] if isinstance(row, Mapping) else getattr(row, name)


async def wait_for_work(wakeup: asyncio.Event, poll_interval_s: float) -> None:
    """Until a commit that gave work sets `wakeup`, or the poll interval (work written by
    another process: a peer replica, or this one before a crash)."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(wakeup.wait(), poll_interval_s)
