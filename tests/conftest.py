"""Session-wide real infrastructure for the integration tests: one Apache Kafka broker, one
PostgreSQL server, one OTLP receiver and one running stack of services, shared by all."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.kafka import KafkaBroker
from devstack.otlp_sink import SpanCollector
from devstack.postgres import ensure_postgres
from devstack.stack import AGENCY_INBOX_TOPICS, REPO, Ports, Stack
from tests.support.catalogue_server import StandInCatalogue
from tests.support.kafka import TOPIC

# Where journeys link their trace: a trace UI of one's own (e.g. Zipkin's), else a
# placeholder in Zipkin's shape that nobody follows (tests/integration/test_zipkin_trace.py
# follows a real one).
TRACE_UI_URL = os.environ.get("TRACE_UI_URL", "http://127.0.0.1:9411/zipkin/traces/{trace_id}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.path).replace(os.sep, "/"):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def routing_catalogue() -> Iterator[str]:
    """ROUTING_GRPC_TARGET for intake or notify run in-process: routing's catalogue stood in."""
    server = StandInCatalogue()
    yield server.start()
    server.stop()


@pytest.fixture(scope="session")
def kafka() -> Iterator[KafkaBroker]:
    with KafkaBroker() as broker:
        broker.create_topics([TOPIC, TOPIC + ".dlq"])
        broker.create_topics(list(AGENCY_INBOX_TOPICS))
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
    # Routing reads a copy of the catalogue, which the reload test may change.
    shutil.copytree(REPO / "catalogue", var_dir / "catalogue")
    running = Stack(
        kafka_bootstrap=kafka.bootstrap_servers,
        var_dir=var_dir,
        ports=Ports.free(),
        database_url=database_url,
        env={
            "DOSSIER_EVENTS_TOPIC": TOPIC,
            **spans.exporter_env("grpc"),
            # Short leases and backoff so crash and retry tests finish in seconds.
            "DELIVERY_LEASE_S": "4",
            "DELIVERY_BACKOFF_BASE_S": "0.2",
            "DELIVERY_MAX_ATTEMPTS": "4",
            "SEND_LEASE_S": "4",
            "SANDBOX_AGENCY_DELAY_S": "0.2",
            # Birth registrations (HT.KS) fall due seconds after routing takes them in, so
            # the restart test sees deadlines pass (tests/integration/test_lifecycle.py).
            "DEADLINE_OVERRIDE_S": "6",
            "DEADLINE_OVERRIDE_PROCEDURES": "HT.KS",
            "CATALOGUE_DIR": str(var_dir / "catalogue"),
            # Intake, notify and identity ask routing for a new catalogue version every second.
            "CATALOGUE_REFRESH_S": "1",
            # Unacknowledged transfers go again after 5 s, escalated after 2 re-deliveries.
            "DELIVERY_ACK_TIMEOUT_S": "5",
            "DELIVERY_ACK_MAX_REDELIVERIES": "2",
            # Escalated, they still go every 20 s (tests/integration/test_escalation_catch_up.py).
            "DELIVERY_ESCALATED_REDELIVERY_S": "20",
            "DELIVERY_TIMEOUT_S": "3",
            "PORTAL_SYNC_BACKOFF_BASE_S": "0.2",
            "PORTAL_SYNC_MAX_ATTEMPTS": "6",
            # Notify: SMS paced at a test-sized rate, quick retries, a short retry window.
            "SMS_RATE_PER_S": "4",
            "SMS_BURST": "2",
            "RETRY_BACKOFF_BASE_S": "0.2",
            "RETRY_BACKOFF_MAX_S": "1",
            "RETRY_FOR_S": "8",
            # Queue gauges counted every second (tests/integration/test_maintenance.py).
            "QUEUE_METRICS_INTERVAL_S": "1",
            # Journeys link their trace there (the operators' console shows the link); a
            # trace UI of one's own, if running, is followed by tests/integration/test_console.py.
            "TRACE_UI_URL": TRACE_UI_URL,
            # The console lists a transfer as stuck after 1 s pending, not 15 minutes.
            "CONSOLE_STUCK_AFTER_S": "1",
        },
        # Both OTLP transports in one trace: intake and notify export over HTTP
        # (http/protobuf), routing and identity over gRPC (tests/integration/
        # test_dossier_journey.py checks that the dossier's trace arrives whole).
        env_by_service={
            "intake": spans.exporter_env("http/protobuf"),
            "notify": spans.exporter_env("http/protobuf"),
        },
    )
    try:
        running.start()
        yield running
    finally:
        running.stop()
        for service in ("intake", "routing", "notify"):
            print(f"--- {service} log tail ---\n{running.log_tail(service, 15)}")
