"""The devstack launchers start real servers that clients can use, and leave nothing behind."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from devstack.kafka import KafkaBroker
from devstack.kafka_cluster import KafkaCluster
from devstack.postgres import (
    DURABLE_SETTINGS,
    TEST_DATABASE_URL_ENV,
    PostgresServer,
    ensure_postgres,
)

pytestmark = pytest.mark.integration


def _gone(pid: int, directory: Path) -> bool:
    return not Path(f"/proc/{pid}").exists() and not directory.exists()


async def test_kafka_broker_serves_produce_and_consume() -> None:
    broker = KafkaBroker()
    broker.start()
    pid = broker.pid
    assert pid is not None
    try:
        broker.create_topics(["devstack.smoke"], partitions=1)
        broker.create_topics(["devstack.smoke"])  # already there: must not raise

        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers)
        await producer.start()
        try:
            await producer.send_and_wait("devstack.smoke", b"hello", key=b"dossier-1")
        finally:
            await producer.stop()

        # A consumer group exercises __consumer_offsets, which needs replication factor 1.
        consumer = AIOKafkaConsumer(
            "devstack.smoke",
            bootstrap_servers=broker.bootstrap_servers,
            group_id="devstack-smoke",
            auto_offset_reset="earliest",
        )
        await consumer.start()
        try:
            message = await asyncio.wait_for(consumer.getone(), timeout=30)
            await consumer.commit()
        finally:
            await consumer.stop()
        assert (message.key, message.value) == (b"dossier-1", b"hello")
    finally:
        broker.stop()

    assert _gone(pid, broker.data_dir), "the java process or the temp data dir outlived stop()"
    assert not broker.is_running()


async def _produce(bootstrap: str, topic: str, values: range) -> None:
    # As the gateway's producer sends (core/kafka.py): acknowledged once in sync replicas
    # have it, never twice.
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, str(value).encode(), key=str(value).encode())
    finally:
        await producer.stop()


async def _consume_all(bootstrap: str, topic: str) -> list[bytes]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id="cluster-smoke", auto_offset_reset="earliest"
    )
    await consumer.start()
    taken: list[bytes] = []
    try:
        while batch := await consumer.getmany(timeout_ms=10_000):
            taken += [record.value or b"" for records in batch.values() for record in records]
    finally:
        await consumer.stop()
    return taken


async def _replicas_per_partition(bootstrap: str, topic: str) -> list[int]:
    """Once every node knows the new topic (metadata spreads after the create returns)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        for _ in range(60):
            (described,) = await admin.describe_topics([topic])
            if described["partitions"]:
                return [len(p["replicas"]) for p in described["partitions"]]
            await asyncio.sleep(0.5)
        return []
    finally:
        await admin.close()


async def test_a_three_node_cluster_keeps_every_write_when_a_node_dies() -> None:
    cluster = KafkaCluster()
    cluster.start()
    pids = [node.pid for node in cluster.nodes]
    try:
        cluster.create_topics(["devstack.replicated"])
        assert (
            await _replicas_per_partition(cluster.bootstrap_servers, "devstack.replicated")
            == [3] * 6
        )

        await _produce(cluster.bootstrap_servers, "devstack.replicated", range(30))
        cluster.kill_node(0)
        assert not cluster.nodes[0].is_running()
        await _produce(cluster.bootstrap_servers, "devstack.replicated", range(30, 60))
        # The consumer group's offsets live in __consumer_offsets, replicated 3 times too.
        taken = await _consume_all(cluster.bootstrap_servers, "devstack.replicated")
        assert sorted(taken, key=int) == [str(i).encode() for i in range(60)]

        cluster.start_node(0)
        assert cluster.nodes[0].is_running()
    finally:
        cluster.stop()
    assert all(pid is not None and _gone(pid, cluster.data_dir) for pid in pids)


async def test_postgres_server_creates_database_and_answers() -> None:
    with PostgresServer() as server:
        pid = server.pid
        server.create_database("devstack_smoke")
        server.create_database("devstack_smoke")  # idempotent

        assert server.url("devstack_smoke") == (
            f"postgresql+asyncpg://gateway@127.0.0.1:{server.port}/devstack_smoke"
        )
        conn = await asyncpg.connect(server.dsn("devstack_smoke"))
        try:
            assert await conn.fetchval("select 1") == 1
        finally:
            await conn.close()

    assert pid is not None
    assert _gone(pid, server.data_dir), "the postmaster or the temp data dir outlived stop()"


def test_the_bench_server_is_durable_and_the_test_server_is_not() -> None:
    durability = ("fsync", "synchronous_commit", "full_page_writes")
    with PostgresServer(settings=DURABLE_SETTINGS) as durable:
        said = durable.show(durability)
    with PostgresServer() as fast:
        fast_said = fast.show(durability)

    assert said == dict.fromkeys(durability, "on")
    assert fast_said == dict.fromkeys(durability, "off")


def test_ensure_postgres_prefers_the_configured_database(monkeypatch: pytest.MonkeyPatch) -> None:
    url = "postgresql+asyncpg://gateway:secret@db.example:5432/gateway"
    monkeypatch.setenv(TEST_DATABASE_URL_ENV, url)
    assert ensure_postgres() == url
