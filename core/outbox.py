"""Transactional outbox: state change and event in one commit, published by a relay.

A service writes its rows and the event rows in the same transaction (Outbox.put). The
relay reads a batch with FOR UPDATE SKIP LOCKED (so several replicas share the work),
sends it to Kafka in one go, waits for the acknowledgements and deletes the rows. A crash
between send and delete republishes the batch: consumers de-duplicate by event id.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from functools import partial
from typing import Any, Protocol

from sqlalchemy import JSON, Column, LargeBinary, MetaData, String, Table, delete, select
from sqlalchemy import event as sa_event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from core.clock import SYSTEM_CLOCK, Clock
from core.events import Event, to_kafka
from core.kafka import OutboundRecord
from core.retry import retryable_kafka
from core.storage import BigId, UtcDateTime, supports_skip_locked
from core.telemetry import current_carrier
from core.workqueue import Hold, WorkQueue, describe

log = logging.getLogger(__name__)


def outbox_table(metadata: MetaData, owner: str) -> Table:
    return Table(
        f"{owner}_outbox",
        metadata,
        Column("id", BigId, primary_key=True, autoincrement=True),
        Column("topic", String(255), nullable=False),
        Column("key", LargeBinary, nullable=False),
        Column("value", LargeBinary, nullable=False),
        Column("headers", JSON, nullable=False),
        # W3C context of the transaction that wrote the row: the relay's span continues it.
        Column("trace", JSON, nullable=False),
        Column("created_at", UtcDateTime(), nullable=False),
        # Set when Kafka refused the record for good (too large, say): the relay passes it
        # over from then on, and an operator sees it and can replay it (core/dead_letters.py).
        Column("dead_lettered_at", UtcDateTime(), nullable=True),
        Column("last_error", String(300), nullable=True),
    )


class Outbox:
    def __init__(self, table: Table, default_topic: str, clock: Clock = SYSTEM_CLOCK) -> None:
        self.table = table
        self.default_topic = default_topic
        self.wakeup = asyncio.Event()
        self.clock = clock

    async def put(
        self,
        session: AsyncSession,
        event: Event,
        topic: str | None = None,
        trace: dict[str, str] | None = None,
    ) -> None:
        """Stage an event in the caller's transaction; the relay is woken after commit.

        The event continues the active trace, or `trace` (a W3C carrier) when given."""
        await self.put_many(session, [(event, trace)], topic)

    async def put_many(
        self,
        session: AsyncSession,
        events: Sequence[tuple[Event, dict[str, str] | None]],
        topic: str | None = None,
    ) -> None:
        """Stage many events (each with its trace carrier, or None for the active trace).

        The rows are written when the transaction commits, all that it staged in one
        multi-row insert: a transaction that announces three events (an outcome report: step
        completed, status changed, dossier completed) or a batch of deliveries costs one
        round trip for its events, not one per put. A rollback writes none of them."""
        if not events:
            return
        now = self.clock.now()
        rows = []
        for event, trace in events:
            key, value, headers = to_kafka(event)
            rows.append(
                {
                    "topic": topic or self.default_topic,
                    "key": key,
                    "value": value,
                    "headers": {k: v.decode() for k, v in headers.items()},
                    "trace": current_carrier() if trace is None else trace,
                    "created_at": now,
                }
            )
        self._staged(session).extend(rows)

    def _staged(self, session: AsyncSession) -> list[dict[str, Any]]:
        """This session's rows waiting for its commit; listens to the session once."""
        key = ("outbox", self.table.name)
        staged: list[dict[str, Any]] | None = session.info.get(key)
        if staged is None:
            staged = session.info[key] = []
            sync = session.sync_session
            sa_event.listen(sync, "before_commit", partial(self._write_staged, staged))
            sa_event.listen(sync, "after_commit", self._after_commit)
            sa_event.listen(sync, "after_soft_rollback", partial(_forget, staged))
        return staged

    def _write_staged(self, staged: list[dict[str, Any]], session: Session) -> None:
        # Runs inside the commit, in SQLAlchemy's greenlet: the sync API reaches the
        # async driver from here, in the transaction being committed.
        rows, staged[:] = list(staged), []
        if rows:
            # The executemany form: compiled once and cached, batched by the dialect
            # (insertmanyvalues). A multi-VALUES statement would compile on every commit.
            session.execute(self.table.insert(), rows)

    def _after_commit(self, _session: object) -> None:
        self.wakeup.set()


def _forget(staged: list[dict[str, Any]], _session: object, _previous: object) -> None:
    staged.clear()


async def insert_rows(session: AsyncSession, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Many rows in one executemany: its statement is compiled once and cached, and the
    dialect batches the rows under the database's bound-parameter limits."""
    if rows:
        await session.execute(table.insert(), list(rows))


class Publisher(Protocol):
    """What the relay needs of Kafka (core.kafka.EventProducer)."""

    @property
    def started(self) -> bool: ...

    async def send_each(self, records: Sequence[OutboundRecord]) -> list[BaseException | None]: ...


class OutboxRelay:
    """The outbox's work queue. Unlike the leased queues it keeps its rows locked while
    Kafka takes them: a send is quick, and the order of a dossier's events is kept."""

    def __init__(
        self,
        engine: AsyncEngine,
        sessions: async_sessionmaker[AsyncSession],
        outbox: Outbox,
        producer: Publisher,
        *,
        batch_size: int,
        poll_interval_s: float,
        hold: Hold | None = None,
    ) -> None:
        self._engine = engine
        self._sessions = sessions
        self._outbox = outbox
        self._producer = producer
        self._batch_size = batch_size
        self.queue = WorkQueue(
            "outbox-relay",
            self.publish_batch,
            wakeup=outbox.wakeup,
            poll_interval_s=poll_interval_s,
            full=batch_size,
            hold=hold,
        )
        self.run = self.queue.run

    async def publish_batch(self) -> int:
        """Publish up to one batch; returns how many rows it settled (sent or set aside).

        A record Kafka will never take is dead-lettered in the same transaction that deletes
        the sent ones, so it cannot hold back the rows behind it. A transient failure (broker
        away) leaves its rows for the next batch and is raised, for the caller to back off."""
        if not self._producer.started:
            raise ConnectionError("producer not started")
        table = self._outbox.table
        query = (
            select(table)
            .where(table.c.dead_lettered_at.is_(None))
            .order_by(table.c.id)
            .limit(self._batch_size)
        )
        if supports_skip_locked(self._engine):
            query = query.with_for_update(skip_locked=True)
        async with self._sessions.begin() as session:
            rows = (await session.execute(query)).all()
            if not rows:
                return 0
            failures = await self._producer.send_each([_record(row) for row in rows])
            # Rows after the first transient failure stay, even those Kafka took: they go
            # again behind it, in order (consumers de-duplicate by event id).
            transient = next((f for f in failures if f and retryable_kafka(f)), None)
            cut = failures.index(transient) if transient is not None else len(rows)
            sent = [
                row.id for row, failure in zip(rows[:cut], failures, strict=False) if not failure
            ]
            if sent:
                await session.execute(delete(table).where(table.c.id.in_(sent)))
            now = self._outbox.clock.now()
            for row, failure in zip(rows, failures, strict=True):
                if failure is None or retryable_kafka(failure):
                    continue
                log.error("outbox event %s dead-lettered: %s", row.id, describe(failure))
                await session.execute(
                    table.update()
                    .where(table.c.id == row.id)
                    .values(dead_lettered_at=now, last_error=describe(failure))
                )
        if transient is not None:
            raise ConnectionError(f"Kafka did not take every record: {describe(transient)}")
        return len(rows)


def _record(row: Any) -> OutboundRecord:
    return OutboundRecord(
        topic=row.topic,
        key=row.key,
        value=row.value,
        headers={k: v.encode() for k, v in row.headers.items()},
        trace_carrier=row.trace,
    )
