"""The real broker from the tests' side: publish events as a service would, and read a topic
from its start until what a test waits for is there."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord
from google.protobuf.timestamp_pb2 import Timestamp

from core.events import Event, to_kafka

TOPIC = "dossier.events"
Record = ConsumerRecord[bytes, bytes]


def stamp(value: datetime) -> Timestamp:
    result = Timestamp()
    result.FromDatetime(value)
    return result


def publish(bootstrap: str, events: Sequence[Event], topic: str = TOPIC) -> None:
    """Send events in order (one dossier's share a key, hence a partition), wait for acks."""

    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            for event in events:
                key, value, headers = to_kafka(event)
                await producer.send_and_wait(topic, value, key=key, headers=list(headers.items()))
        finally:
            await producer.stop()

    asyncio.run(send())


async def read_topic(
    bootstrap: str,
    topic: str,
    keep: Callable[[Record], bool],
    done: Callable[[list[Record], bool], bool],
    within_s: float = 60,
) -> list[Record]:
    """Records `keep` accepts, read from the start (a fresh group) until `done(kept,
    caught_up)` holds; caught_up is True after a poll that found nothing new."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        group_id=f"test-{uuid.uuid4()}",
    )
    await consumer.start()
    kept: list[Record] = []
    try:
        async with asyncio.timeout(within_s):
            caught_up = False
            while not done(kept, caught_up):
                batch = await consumer.getmany(timeout_ms=500)
                caught_up = not batch
                kept += [r for records in batch.values() for r in records if keep(r)]
    finally:
        await consumer.stop()
    return kept


def keyed(key: str | bytes, ce_type: str | None = None) -> Callable[[Record], bool]:
    """Records with this key (a dossier code), and of this CloudEvents type if given."""
    wanted = key.encode() if isinstance(key, str) else key
    kind = ce_type.encode() if ce_type else None

    def keep(record: Record) -> bool:
        if record.key != wanted:
            return False
        return kind is None or dict(record.headers).get("ce_type") == kind

    return keep


def at_least(count: int) -> Callable[[list[Record], bool], bool]:
    return lambda kept, _caught_up: len(kept) >= count
