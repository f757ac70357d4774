"""Gauges of the work queues, counted from the database in one place, and the room they
leave for a consumer to take more work in (QueueRoom).

The counters of core/workqueue.py say what a process did; these say what is waiting, which
only the database knows (rows written by a peer replica, or before a restart). Each service
names its queues' tables (`Runtime.count_queue`) and one worker per process refreshes every
gauge every `interval_s`. Every replica reports the same counts: dashboards take `max`, not
`sum`, over instances.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

from prometheus_client import Gauge
from sqlalchemy import ColumnElement, Select, Table, func, literal, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.clock import Clock

log = logging.getLogger(__name__)
QUEUE_DEPTH = Gauge("gateway_queue_depth", "Rows waiting in each work queue", ["queue"])
DEAD_LETTERS = Gauge(
    "gateway_dead_letters", "Rows set aside as dead letters, until replayed", ["queue"]
)
OVERDUE = Gauge("gateway_dossiers_overdue", "Open dossiers past their due date (routing)")


@dataclass(frozen=True)
class QueueCount:
    """One queue's table and which of its rows wait or are parked."""

    queue: str
    table: Table
    waiting: ColumnElement[bool]
    dead: ColumnElement[bool] | None = None


def count_of(table: Table, condition: ColumnElement[bool]) -> Select[int]:
    return select(func.count()).select_from(table).where(condition)


class QueueMetrics:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], interval_s: float = 15.0
    ) -> None:
        self.sessions = sessions
        self.interval_s = interval_s
        self.queues: list[QueueCount] = []
        self.overdue: Select[int] | None = None

    def add(self, count: QueueCount) -> None:
        self.queues.append(count)

    async def refresh(self) -> None:
        async with self.sessions() as session:
            for queue in self.queues:
                QUEUE_DEPTH.labels(queue.queue).set(await _scalar(session, queue, queue.waiting))
                if queue.dead is not None:
                    DEAD_LETTERS.labels(queue.queue).set(await _scalar(session, queue, queue.dead))
            if self.overdue is not None:
                OVERDUE.set((await session.execute(self.overdue)).scalar_one())

    async def run(self) -> None:
        while True:
            try:
                await self.refresh()
            except (SQLAlchemyError, OSError) as exc:
                # The gauges keep their last values; the queues report the outage themselves.
                log.warning("cannot count the work queues: %r", exc)
            await asyncio.sleep(self.interval_s)


async def _scalar(session: AsyncSession, queue: QueueCount, condition: ColumnElement[bool]) -> int:
    return int((await session.execute(count_of(queue.table, condition))).scalar_one())


CONSUMER_HELD = Gauge(
    "gateway_consumer_held",
    "1 while a consumer takes no events in because its work queues are full",
    ["group"],
)


class QueueRoom:
    """Whether a consumer may take more events in: not while one of the work queues it
    feeds has `max_due` rows or more due now. A full queue then holds the consumer, so the
    backlog shows where intake's back-pressure looks (Kafka lag, core/backlog.py) instead
    of growing unseen in the database. Rows not yet due (backing off from a failing agency
    or provider) never hold it: one agency's outage does not stop the others' dossiers."""

    def __init__(
        self,
        group: str,
        sessions: async_sessionmaker[AsyncSession],
        queues: Sequence[QueueCount],
        *,
        max_due: int,
        clock: Clock,
        interval_s: float = 1.0,
    ) -> None:
        self._group = group
        self._sessions = sessions
        self._queues = list(queues)
        self._max_due = max_due
        self._clock = clock
        self._interval_s = interval_s
        self._checked_at = -math.inf
        self._room = True

    async def __call__(self) -> bool:
        if self._max_due <= 0:
            return True
        if time.monotonic() - self._checked_at < self._interval_s:
            return self._room
        self._checked_at = time.monotonic()
        try:
            self._room = all(due < self._max_due for due in await self._due())
        except (SQLAlchemyError, OSError) as exc:
            # The consumer's handlers meet the outage themselves and wait it out.
            log.warning("cannot count the due work of %s: %r", self._group, exc)
            self._room = True
        CONSUMER_HELD.labels(self._group).set(0 if self._room else 1)
        return self._room

    async def _due(self) -> list[int]:
        now = self._clock.now()
        counts = []
        async with self._sessions() as session:
            for queue in self._queues:
                # Counted up to the limit only: a long queue costs no more than a full one.
                due = (
                    select(literal(1))
                    .select_from(queue.table)
                    .where(queue.waiting, queue.table.c.next_attempt_at <= now)
                    .limit(self._max_due)
                    .subquery()
                )
                counts.append(
                    int((await session.execute(select(func.count()).select_from(due))).scalar_one())
                )
        return counts
