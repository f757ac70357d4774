"""Replicas in the local stack: each listens on its own ports, callers of gRPC get every
replica in one target, SQLite is refused; and the Kafka cluster's replication settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from devstack.chaos_census import work_of
from devstack.kafka import KAFKA_DEPLOY_DIR
from devstack.kafka_cluster import replication_properties
from devstack.replicas import split_name
from devstack.stack import Ports, Stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Stack:
    return Stack(
        kafka_bootstrap="127.0.0.1:9",
        var_dir=tmp_path_factory.mktemp("var"),
        ports=Ports.free(),
        replica_ports=(Ports.free(),),
        database_url="postgresql+asyncpg://gateway@127.0.0.1:9/gateway",
    )


def test_second_replicas_are_named_and_listen_on_their_own_ports(stack: Stack) -> None:
    second = stack.replica_ports[0]
    assert stack.names("intake") == ["intake", "intake-2"]
    assert stack.names("sandbox") == ["sandbox"]
    assert stack.service_env("intake")["HTTP_PORT"] == str(stack.ports.intake)
    assert stack.service_env("intake-2")["HTTP_PORT"] == str(second.intake)
    routing = stack.service_env("routing-2")
    assert (routing["HTTP_PORT"], routing["GRPC_PORT"]) == (
        str(second.routing),
        str(second.routing_grpc),
    )
    # Links and callbacks point at the public address, whichever replica made them.
    assert routing["PUBLIC_URL"] == stack.url("routing")
    assert stack.urls("notify") == [stack.url("notify"), stack.url("notify", 2)]


def test_intake_reaches_every_replica_of_routing_and_identity(stack: Stack) -> None:
    second = stack.replica_ports[0]
    for name in stack.names("intake"):
        env = stack.service_env(name)
        assert env["ROUTING_GRPC_TARGET"] == (
            f"ipv4:127.0.0.1:{stack.ports.routing_grpc},127.0.0.1:{second.routing_grpc}"
        )
        assert env["IDENTITY_GRPC_TARGET"] == (
            f"ipv4:127.0.0.1:{stack.ports.identity_grpc},127.0.0.1:{second.identity_grpc}"
        )


def test_process_names_of_services_that_are_not_replicated_stay_whole() -> None:
    assert split_name("notify-2") == ("notify", 2)
    assert split_name("console") == ("console", 1)
    assert split_name("sandbox-2") == ("sandbox-2", 1)


def test_replicas_refuse_sqlite(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="PostgreSQL"):
        Stack(kafka_bootstrap="", var_dir=tmp_path, replica_ports=(Ports.free(),))


def test_one_node_cluster_settings_are_server_properties_own() -> None:
    # A cluster of one must behave as the one broker of `make run` always did.
    lines = (KAFKA_DEPLOY_DIR / "server.properties").read_text().splitlines()
    given = dict(line.split("=", 1) for line in lines if "=" in line and line[0] != "#")
    assert {key: given[key] for key in replication_properties(1)} == replication_properties(1)


def test_three_nodes_keep_three_replicas_and_take_writes_on_two() -> None:
    settings = replication_properties(3)
    assert settings["default.replication.factor"] == "3"
    assert settings["offsets.topic.replication.factor"] == "3"
    assert settings["min.insync.replicas"] == "2"


def test_work_is_read_from_a_replicas_metrics() -> None:
    registry = CollectorRegistry()
    requests = Histogram(
        "gateway_http_request_duration_seconds",
        "",
        ["method", "route", "status"],
        registry=registry,
    )
    claimed = Counter("gateway_work_claimed", "", ["queue"], registry=registry)
    requests.labels("POST", "/v1/dossiers", "201").observe(0.1)
    requests.labels("POST", "/v1/dossiers", "429").observe(0.1)
    requests.labels("GET", "/v1/dossiers/{code}", "200").observe(0.1)
    claimed.labels("delivery").inc(5)
    exposition = generate_latest(registry).decode()
    assert work_of("intake", exposition) == 1  # accepted dossiers only
    assert work_of("routing", exposition) == 5
    assert work_of("identity", exposition) == 3
