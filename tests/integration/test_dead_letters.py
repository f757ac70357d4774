"""A malformed record on the dossier topic goes to the dead-letter topic with its reason,
and the consumers carry on with the records after it."""

from __future__ import annotations

import asyncio
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from devstack.kafka import KafkaBroker
from devstack.stack import Stack
from tests.conftest import TOPIC
from tests.support.flows import chain_dossier, submit, wait_completed


async def dead_letters_for(kafka: KafkaBroker, key: bytes, expected: int) -> list[dict[str, bytes]]:
    consumer = AIOKafkaConsumer(
        TOPIC + ".dlq",
        bootstrap_servers=kafka.bootstrap_servers,
        auto_offset_reset="earliest",
        group_id=f"test-{uuid.uuid4()}",
    )
    await consumer.start()
    found: list[dict[str, bytes]] = []
    try:
        async with asyncio.timeout(60):
            while len(found) < expected:
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    found += [dict(r.headers) for r in records if r.key == key]
    finally:
        await consumer.stop()
    return found


async def test_poison_record_is_dead_lettered_and_consumers_go_on(
    stack: Stack, kafka: KafkaBroker
) -> None:
    key = f"poison-{uuid.uuid4()}".encode()
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers)
    await producer.start()
    try:
        # A record claiming to be a submitted dossier whose data is not protobuf at all.
        await producer.send_and_wait(
            TOPIC,
            b"\xff\xfenot protobuf",
            key=key,
            headers=[
                ("ce_specversion", b"1.0"),
                ("ce_id", str(uuid.uuid4()).encode()),
                ("ce_source", b"/somewhere"),
                ("ce_type", b"vn.gov.dossier.submitted.v1"),
                ("content-type", b"application/protobuf"),
            ],
        )
        # And one that is not a CloudEvent at all.
        await producer.send_and_wait(TOPIC, b"{}", key=key)
    finally:
        await producer.stop()

    # routing and notify each report the first; they and routing's portal sync the second.
    letters = await dead_letters_for(kafka, key, expected=5)
    groups = sorted(h["dlq_consumer_group"] for h in letters)
    assert groups == [b"notify", b"notify", b"portal-sync", b"routing", b"routing"]
    assert all(h["dlq_source_topic"] == TOPIC.encode() and h["dlq_reason"] for h in letters)
    assert any(b"not a valid DossierSubmitted" in h["dlq_reason"] for h in letters)

    code = await asyncio.to_thread(submit, stack, chain_dossier("after-poison@example.vn"))
    view = await asyncio.to_thread(wait_completed, stack, code)
    assert view["status"] == "completed"
