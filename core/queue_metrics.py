"""Gauges of the work queues, counted from the database in one place.

The counters of core/workqueue.py say what a process did; these say what is waiting, which
only the database knows (rows written by a peer replica, or before a restart). Each service
names its queues' tables (`Runtime.count_queue`) and one worker per process refreshes every
gauge every `interval_s`. Every replica reports the same counts: dashboards take `max`, not
`sum`, over instances.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from prometheus_client import Gauge
from sqlalchemy import ColumnElement, Select, Table, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

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
