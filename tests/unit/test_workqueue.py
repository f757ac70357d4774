"""The one rule of every durable work queue: what is retried, when, and what is set aside;
and the outbox relay applying it to records Kafka refuses."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import grpc
import pytest
from aiokafka.errors import (
    BrokerNotAvailableError,
    KafkaConnectionError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NotLeaderForPartitionError,
    ProducerClosed,
    TopicAuthorizationFailedError,
)
from sqlalchemy import MetaData, func, select

from core.events import new_event
from core.kafka import OutboundRecord
from core.outbox import Outbox, OutboxRelay, outbox_table
from core.retry import retryable_grpc, retryable_http, retryable_kafka
from core.storage import create_engine, create_tables, session_factory
from core.workqueue import RetryPolicy, describe
from gateway.v1 import events_pb2


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 504])
def test_busy_or_down_servers_are_retried(status: int) -> None:
    assert retryable_http(status)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 413, 422])
def test_refusals_are_not_retried(status: int) -> None:
    assert not retryable_http(status)


def test_grpc_codes() -> None:
    assert retryable_grpc(grpc.StatusCode.UNAVAILABLE)
    assert retryable_grpc(grpc.StatusCode.DEADLINE_EXCEEDED)
    assert not retryable_grpc(grpc.StatusCode.INVALID_ARGUMENT)
    assert not retryable_grpc(grpc.StatusCode.UNAUTHENTICATED)
    assert not retryable_grpc(grpc.StatusCode.PERMISSION_DENIED)


def test_kafka_errors_say_themselves_whether_they_pass() -> None:
    assert retryable_kafka(KafkaConnectionError())
    assert retryable_kafka(KafkaTimeoutError())
    assert retryable_kafka(NotLeaderForPartitionError())
    assert retryable_kafka(ConnectionError("not connected yet"))
    # Outages that aiokafka itself flags as not retriable still wait.
    assert retryable_kafka(BrokerNotAvailableError())
    assert retryable_kafka(ProducerClosed())
    assert not retryable_kafka(MessageSizeTooLargeError())
    assert not retryable_kafka(TopicAuthorizationFailedError())
    assert not retryable_kafka(ValueError("a bug"))


def test_backoff_grows_to_its_cap_with_full_jitter() -> None:
    policy = RetryPolicy(base_s=1, max_s=30, max_attempts=5)
    for attempt, step in [(1, 1), (2, 2), (3, 4), (6, 30), (20, 30)]:
        delays = [policy.delay_s(attempt) for _ in range(200)]
        assert all(0 <= d <= step for d in delays)
        # Full jitter: some waits are well under half the step.
        assert min(delays) < step / 2


def test_equal_jitter_never_waits_less_than_half_a_step() -> None:
    policy = RetryPolicy(base_s=2, max_s=60, jitter_floor=0.5)
    assert all(4 <= policy.delay_s(3) <= 8 for _ in range(200))


def test_gives_up_on_a_refusal_or_after_the_last_attempt() -> None:
    policy = RetryPolicy(max_attempts=3)
    assert not policy.gives_up(2, retryable=True)
    assert policy.gives_up(3, retryable=True)
    assert policy.gives_up(1, retryable=False)


def test_reasons_are_bounded() -> None:
    assert len(describe(ValueError("x" * 5000))) == 300


class RefusingProducer:
    """Kafka that refuses records over a size, or is away altogether."""

    def __init__(self, limit: int = 1000) -> None:
        self.limit = limit
        self.away = False
        self.sent: list[bytes] = []

    @property
    def started(self) -> bool:
        return True

    async def send_each(self, records: Sequence[OutboundRecord]) -> list[BaseException | None]:
        if self.away:
            return [KafkaConnectionError() for _ in records]
        outcomes: list[BaseException | None] = []
        for record in records:
            if len(record.value) > self.limit:
                outcomes.append(MessageSizeTooLargeError())
            else:
                self.sent.append(record.value)
                outcomes.append(None)
        return outcomes


def event(code: str, note: str = "") -> events_pb2.DossierStatusChanged:
    return events_pb2.DossierStatusChanged(dossier_code=code, reason=note)


async def relay_over(tmp_path: Path, producer: RefusingProducer) -> tuple[OutboxRelay, Outbox]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'outbox.db'}")
    metadata = MetaData()
    outbox = Outbox(outbox_table(metadata, "test"), "dossier.events")
    await create_tables(engine, metadata)
    sessions = session_factory(engine)
    relay = OutboxRelay(
        engine,
        sessions,
        outbox,
        producer,
        batch_size=10,
        poll_interval_s=0.1,
    )
    return relay, outbox


async def stage(relay: OutboxRelay, outbox: Outbox, notes: list[str]) -> None:
    async with relay._sessions.begin() as session:
        for i, note in enumerate(notes):
            data = event(f"D-{i}", note)
            await outbox.put(session, new_event(data, source="/test", dossier_code=f"D-{i}"))


async def test_a_record_kafka_refuses_is_set_aside_and_the_rest_go(tmp_path: Path) -> None:
    producer = RefusingProducer(limit=1000)
    relay, outbox = await relay_over(tmp_path, producer)
    await stage(relay, outbox, ["first", "x" * 5000, "third"])

    assert await relay.publish_batch() == 3
    assert len(producer.sent) == 2
    # Nothing left to publish: the refused record no longer heads the queue.
    assert await relay.publish_batch() == 0
    table = outbox.table
    async with relay._sessions() as session:
        [row] = (await session.execute(select(table))).all()
    assert row.dead_lettered_at is not None
    assert "MessageSizeTooLargeError" in row.last_error


async def test_a_broker_outage_dead_letters_nothing(tmp_path: Path) -> None:
    producer = RefusingProducer()
    relay, outbox = await relay_over(tmp_path, producer)
    await stage(relay, outbox, ["a", "b"])
    producer.away = True
    with pytest.raises(ConnectionError):
        await relay.publish_batch()
    table = outbox.table
    async with relay._sessions() as session:
        waiting = await session.scalar(
            select(func.count()).select_from(table).where(table.c.dead_lettered_at.is_(None))
        )
    assert waiting == 2
    producer.away = False
    assert await relay.publish_batch() == 2
    assert len(producer.sent) == 2
    await asyncio.sleep(0)
