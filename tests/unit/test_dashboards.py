"""The Grafana dashboard and the Prometheus scrape config (deploy/) against the code: every
metric a panel queries is one the services register, every scrape target is a service of
deploy/docker-compose.yml on its HTTP port, and the HTTP histogram labels requests by route."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

# Imported for the metrics they register, as each service's process does.
import services.identity.main
import services.intake.main
import services.notify.main
import services.routing.main  # noqa: F401
from devstack.stack import REPO
from services.intake.main import build_app
from services.intake.settings import IntakeSettings
from tests.support.tokens import TestIssuer

DEPLOY = REPO / "deploy"
DASHBOARDS = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
METRIC = re.compile(r"\b(?:gateway|identity)_[a-z0-9_]+\b")
# The series prometheus_client exposes for one metric family of each type.
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
}


def exposed_series() -> set[str]:
    names: set[str] = set()
    for family in REGISTRY.collect():
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ("",)))
    return names


def queries(dashboard: dict[str, Any]) -> list[str]:
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def test_there_is_a_dashboard_and_it_is_provisioned() -> None:
    assert DASHBOARDS, "no dashboard under deploy/grafana/dashboards"
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/gateway.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert "./grafana/dashboards:/var/lib/grafana/dashboards:ro" in mounts


def test_every_metric_a_panel_queries_is_registered_by_the_code() -> None:
    exposed = exposed_series()
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text(encoding="utf-8"))
        asked = {name for expr in queries(dashboard) for name in METRIC.findall(expr)}
        assert asked, f"{path.name} queries no gateway metric"
        unknown = asked - exposed
        assert not unknown, f"{path.name} queries metrics no service registers: {unknown}"


def test_the_dashboard_covers_what_operators_watch() -> None:
    exprs = " ".join(q for path in DASHBOARDS for q in queries(json.loads(path.read_text())))
    for needed in (
        "gateway_http_request_duration_seconds_count",  # throughput
        "gateway_http_request_duration_seconds_bucket",  # latency
        "gateway_queue_depth",
        "gateway_dead_letters",
        "gateway_dossiers_overdue",
    ):
        assert needed in exprs


def test_prometheus_scrapes_each_service_of_the_compose_file_on_its_port() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())["services"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"intake", "routing", "notify", "identity"}
    for name, job in jobs.items():
        [target] = job["static_configs"][0]["targets"]
        host, port = target.split(":")
        assert host == name
        assert compose[name]["environment"]["HTTP_PORT"] == port


def test_requests_are_counted_by_route_template(tmp_path: Path, routing_catalogue: str) -> None:
    issuer = TestIssuer()
    settings = IntakeSettings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'intake.db'}",
        kafka_bootstrap_servers="127.0.0.1:1",
        routing_grpc_target=routing_catalogue,
        **issuer.settings(),
    )
    with TestClient(build_app(settings), raise_server_exceptions=False) as client:
        headers = issuer.headers("000.00.01.H22", "dossiers:read")
        before = _count("GET", "/v1/dossiers/{code}", "404")
        assert client.get("/v1/dossiers/NO-SUCH-1", headers=headers).status_code == 404
        assert _count("GET", "/v1/dossiers/{code}", "404") == before + 1
        scraped = client.get("/metrics/")
        assert scraped.status_code == 200
        assert "gateway_http_request_duration_seconds_bucket" in scraped.text


def _count(method: str, route: str, status: str) -> float:
    labels = {"method": method, "route": route, "status": status}
    value = REGISTRY.get_sample_value("gateway_http_request_duration_seconds_count", labels)
    return value or 0.0
