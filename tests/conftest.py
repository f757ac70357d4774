"""Session-wide real infrastructure for the integration tests: one Apache Kafka broker, one
PostgreSQL server, one OTLP receiver and one running stack of services, shared by all."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.kafka import KafkaBroker
from devstack.otlp_sink import SpanCollector
from devstack.postgres import ensure_postgres
from devstack.stack import Ports, Stack

TOPIC = "dossier.events"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.path).replace(os.sep, "/"):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def kafka() -> Iterator[KafkaBroker]:
    with KafkaBroker() as broker:
        broker.create_topics([TOPIC, TOPIC + ".dlq"])
        yield broker


@pytest.fixture(scope="session")
def database_url() -> str:
    return ensure_postgres()


@pytest.fixture(scope="session")
def spans() -> Iterator[SpanCollector]:
    collector = SpanCollector()
    collector.start()
    yield collector
    collector.stop()


@pytest.fixture(scope="session")
def stack(
    kafka: KafkaBroker,
    database_url: str,
    spans: SpanCollector,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    var_dir: Path = tmp_path_factory.mktemp("stack")
    running = Stack(
        kafka_bootstrap=kafka.bootstrap_servers,
        var_dir=var_dir,
        ports=Ports.free(),
        database_url=database_url,
        env={
            "DOSSIER_EVENTS_TOPIC": TOPIC,
            **spans.exporter_env(),
            # Short leases and backoff so crash and retry tests finish in seconds.
            "DELIVERY_LEASE_S": "4",
            "DELIVERY_BACKOFF_BASE_S": "0.2",
            "DELIVERY_MAX_ATTEMPTS": "4",
            "SEND_LEASE_S": "4",
            "SANDBOX_AGENCY_DELAY_S": "0.2",
            # Notify: SMS paced at a test-sized rate, quick retries, a short retry window.
            "SMS_RATE_PER_S": "4",
            "SMS_BURST": "2",
            "RETRY_BACKOFF_BASE_S": "0.2",
            "RETRY_BACKOFF_MAX_S": "1",
            "RETRY_FOR_S": "8",
        },
    )
    try:
        running.start()
        yield running
    finally:
        running.stop()
        for service in ("intake", "routing", "notify"):
            print(f"--- {service} log tail ---\n{running.log_tail(service, 15)}")
