"""A malformed record on the dossier topic goes to the dead-letter topic with its reason,
and the consumers carry on with the records after it."""

from __future__ import annotations

import asyncio
import uuid

from aiokafka import AIOKafkaProducer

from devstack.kafka import KafkaBroker
from devstack.stack import Stack
from tests.conftest import TOPIC
from tests.support.flows import chain_dossier, submit, wait_completed
from tests.support.kafka import at_least, keyed, read_topic


async def dead_letters_for(kafka: KafkaBroker, key: bytes, expected: int) -> list[dict[str, bytes]]:
    records = await read_topic(
        kafka.bootstrap_servers, TOPIC + ".dlq", keyed(key), at_least(expected)
    )
    return [dict(r.headers) for r in records]


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
