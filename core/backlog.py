"""Back-pressure across the pipeline: intake stops taking dossiers in while the services
behind it are too far behind, so the queue between them stays bounded.

Admission control (core/admission.py) keeps one service from drowning in requests it
cannot answer; it cannot see that intake, which accepts a dossier in milliseconds, takes
them in far faster than routing and notify finish them. Under a sustained overload the
Kafka topic between them would then grow without end, and a dossier accepted now would be
handled hours later. So intake asks Kafka how far each consumer group of the dossier
events topic is behind (the end offsets minus the group's committed offsets, the standard
consumer-lag measure) and how fast each drains, and answers new submissions 503 with a
Retry-After while the slowest group is more than `pipeline_max_backlog_s` seconds of work
behind. Reads, and dossiers already accepted, go on; nothing accepted is dropped.

The measure fails open: while Kafka cannot be asked, intake keeps accepting into its
outbox, which is what the outbox is for.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from fastapi import Request
from prometheus_client import Counter, Gauge

from core.problems import Problem

log = logging.getLogger(__name__)

BACKLOG = Gauge(
    "gateway_pipeline_backlog_events",
    "Events of the dossier topic a consumer group has not yet committed",
    ["group"],
)
BACKLOG_SECONDS = Gauge(
    "gateway_pipeline_backlog_seconds",
    "Seconds the consumer group needs to drain its backlog at its recent pace",
    ["group"],
)


# The pace is judged over this many measuring intervals of uninterrupted work at least (a
# consumer commits once per batch, so one interval can show no progress while it works),
# and over this many at most (what it did a minute ago says little of now).
JUDGED_AFTER_INTERVALS = 5
WINDOW_INTERVALS = 15


@dataclass
class GroupPace:
    """One consumer group's backlog and how fast it has lately been draining it."""

    committed: int = -1
    backlog: int = 0
    # Events committed a second over the last window in which the group had work waiting
    # the whole time (its capacity, not the arrival rate of a quiet hour); None until it
    # has been seen busy long enough to tell.
    rate: float | None = None
    measured_at: float = 0.0
    # (time, committed) while busy without a break, oldest first.
    busy: deque[tuple[float, int]] = field(default_factory=deque)

    def seconds(self, floor_events: int) -> float:
        """Seconds to drain at the busy pace. A backlog under the floor counts as none
        (batches in flight between commits); an unknown pace as none (a first burst after
        a quiet time is taken in); one that did not move for a whole window as endless."""
        if self.backlog <= floor_events or self.rate is None:
            return 0.0
        return self.backlog / self.rate if self.rate > 0 else math.inf


class PipelineBacklog:
    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        groups: Sequence[str],
        *,
        max_backlog_s: float,
        floor_events: int,
        interval_s: float,
        retry_after_max_s: int = 10,
    ) -> None:
        self._bootstrap = bootstrap_servers
        self._topic = topic
        self._groups = list(groups)
        self.max_backlog_s = max_backlog_s
        self._floor = floor_events
        self._interval_s = interval_s
        self._retry_after_max_s = retry_after_max_s
        self.paces = {group: GroupPace() for group in self._groups}
        self._measured = False

    @property
    def behind_s(self) -> float:
        """The slowest group's drain time in seconds (0 until first measured)."""
        if not self._measured:
            return 0.0
        return max((p.seconds(self._floor) for p in self.paces.values()), default=0.0)

    @property
    def over(self) -> bool:
        return self.max_backlog_s > 0 and self.behind_s > self.max_backlog_s

    @property
    def retry_after_s(self) -> int:
        """About when the backlog will be back under the limit, at most `retry_after_max_s`:
        clients told to wait longer than the pipeline needs would leave it without work
        (the gate opens again at the limit, with that much work still waiting), while one
        that comes back too early costs a cheap 503."""
        excess = self.behind_s - self.max_backlog_s
        ceiling = self._retry_after_max_s
        return ceiling if math.isinf(excess) else max(1, min(ceiling, math.ceil(excess)))

    async def run(self) -> None:
        """Measure every `interval_s` for as long as the service runs (a Runtime worker)."""
        if self.max_backlog_s <= 0:
            return
        admin = AIOKafkaAdminClient(bootstrap_servers=self._bootstrap)
        ends = AIOKafkaConsumer(bootstrap_servers=self._bootstrap, enable_auto_commit=False)
        await admin.start()
        await ends.start()
        log.info("watching the backlog of %s on %s", ", ".join(self._groups), self._topic)
        try:
            while True:
                try:
                    await asyncio.wait_for(self._measure(admin, ends), self._interval_s * 5)
                except (TimeoutError, OSError, ConnectionError) as exc:
                    # Fail open: the outbox holds what is accepted while Kafka is away.
                    self._measured = False
                    log.warning("pipeline backlog not measured: %s", exc)
                except Exception as exc:  # an aiokafka KafkaError: same policy
                    self._measured = False
                    log.warning("pipeline backlog not measured: %r", exc)
                await asyncio.sleep(self._interval_s)
        finally:
            await ends.stop()
            await admin.close()

    async def _measure(self, admin: AIOKafkaAdminClient, ends: AIOKafkaConsumer) -> None:
        # Asked each time: partitions may be added while the service runs.
        described = await admin.describe_topics([self._topic])
        numbers = [p["partition"] for t in described for p in t.get("partitions", ())]
        owned = [TopicPartition(self._topic, n) for n in sorted(numbers)]
        if not owned:
            return
        end_offsets = await ends.end_offsets(owned)
        now = time.monotonic()
        for group in self._groups:
            offsets = await admin.list_consumer_group_offsets(group, partitions=owned)
            committed = {tp: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}
            if not committed:  # the group has not started: nothing to be behind on yet
                continue
            backlog = sum(end_offsets[tp] - committed.get(tp, 0) for tp in owned)
            self._update(group, sum(committed.values()), max(0, backlog), now)
        self._measured = True
        log.debug("pipeline backlog: %s", self.paces)

    def _update(self, group: str, committed: int, backlog: int, now: float) -> None:
        pace = self.paces[group]
        if committed < pace.committed:
            pace.busy.clear()  # offsets went back (the group was reset): measure anew
        elif pace.backlog > self._floor and backlog > self._floor and pace.committed >= 0:
            if not pace.busy:
                pace.busy.append((pace.measured_at, pace.committed))
            pace.busy.append((now, committed))
            window = WINDOW_INTERVALS * self._interval_s * 1.01  # 1.01: timer jitter
            while len(pace.busy) > 2 and now - pace.busy[0][0] > window:
                pace.busy.popleft()
            since, first = pace.busy[0]
            span = now - since
            if span >= JUDGED_AFTER_INTERVALS * self._interval_s * 0.99:  # 0.99: timer jitter
                pace.rate = max(0, committed - first) / span
        else:
            # The rate stays: what the group could do when last busy. But not a standstill:
            # a group whose backlog drained has moved since.
            pace.busy.clear()
            if pace.rate == 0 and backlog <= self._floor:
                pace.rate = None
        pace.committed, pace.backlog, pace.measured_at = committed, backlog, now
        BACKLOG.labels(group).set(backlog)
        BACKLOG_SECONDS.labels(group).set(min(pace.seconds(self._floor), 1e9))


SHED_FOR_BACKLOG = Counter(
    "gateway_pipeline_shed", "Submissions answered 503 because the pipeline is too far behind"
)


def backlog_gate(backlog: PipelineBacklog) -> Callable[[Request], Awaitable[None]]:
    """A route dependency: while the pipeline is over its backlog, anything but a read is
    answered 503 with Retry-After (the client submits again later, same Idempotency-Key)."""

    async def pipeline_accepts(request: Request) -> None:
        if request.method in ("GET", "HEAD", "OPTIONS") or not backlog.over:
            return
        SHED_FOR_BACKLOG.inc()
        raise Problem(
            503,
            "pipeline-backlog",
            "The services behind intake are too far behind; try again later",
            f"About {backlog.behind_s:.0f} s of accepted work is waiting",
            headers={"Retry-After": str(backlog.retry_after_s)},
        )

    return pipeline_accepts
