"""Whether a consumer may take more events in: not while a work queue it feeds is full.

Routing and notify take events off Kafka within milliseconds and keep the slow part
(delivering to agencies, pushing to the portal, sending mail) in their work queues. Were
the consumers to take in everything, the backlog would grow unseen in their databases while
Kafka's lag, which intake's gate watches (core/backlog.py), stayed near zero. So a consumer
holds (core/consumer.py pauses its partitions) while one of its queues has `max_due` rows
that its worker would claim now; the backlog then waits in Kafka, where the gate sees it.

Counted exactly as the worker claims (its Lease: claimable statuses, its own narrowing such
as the portal's one-push-at-a-time order, due now), so rows backing off from a failing agency
or provider, or held back behind an earlier push, never hold a consumer; nor do the rows
of a lane with no place left (core/lanes.py): one slow agency's backlog waits in the
database without closing intake to the dossiers of every other agency. While the service
is in maintenance its workers claim nothing by design: the work waits in the database, and
the consumer goes on taking events in.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Sequence

from prometheus_client import Gauge
from sqlalchemy import func, literal, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.clock import Clock
from core.workqueue import Hold, Lease

log = logging.getLogger(__name__)

CONSUMER_HELD = Gauge(
    "gateway_consumer_held",
    "1 while a consumer takes no events in because its work queues are full",
    ["group"],
)


class QueueRoom:
    def __init__(
        self,
        group: str,
        sessions: async_sessionmaker[AsyncSession],
        leases: Sequence[Lease],
        *,
        max_due: int,
        clock: Clock,
        hold: Hold | None = None,
        interval_s: float = 1.0,
        timeout_s: float = 2.0,
    ) -> None:
        self._group = group
        self._sessions = sessions
        self._leases = list(leases)
        self._max_due = max_due
        self._clock = clock
        self._hold = hold
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self._checked_at = -math.inf
        self._room = True

    async def __call__(self) -> bool:
        if self._max_due <= 0 or not self._leases:
            return True
        if time.monotonic() - self._checked_at < self._interval_s:
            return self._room
        self._checked_at = time.monotonic()
        try:
            if self._hold is not None and await self._hold():
                self._room = True  # maintenance: the work waits in the database
            else:
                due = await asyncio.wait_for(self._due(), self._timeout_s)
                self._room = all(n < self._max_due for n in due)
        except (SQLAlchemyError, OSError, TimeoutError) as exc:
            # Fail open: the handlers meet the outage themselves and wait it out; a consumer
            # stuck on a count would stop polling and be put out of its group.
            log.warning("cannot count the due work of %s: %r", self._group, exc)
            self._room = True
        CONSUMER_HELD.labels(self._group).set(0 if self._room else 1)
        return self._room

    async def _due(self) -> list[int]:
        now = self._clock.now()
        counts = []
        async with self._sessions() as session:
            for lease in self._leases:
                query = lease.due(now, literal(1))
                # Counted up to the limit only: a long queue costs no more than a full one.
                limited = query.limit(self._max_due).subquery()
                found = await session.execute(select(func.count()).select_from(limited))
                counts.append(int(found.scalar_one()))
        return counts
