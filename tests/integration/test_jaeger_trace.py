"""`make run`'s trace UI for real: a stack exporting to Jaeger (built by `make jaeger`), the
README's dossier filed, and its one trace read back through Jaeger's own query API.

A stack of its own, with its own broker and SQLite files, so that its consumers and the
session stack's never share a group, a topic or a table.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from devstack.jaeger import Jaeger, JaegerPorts, binary_path
from devstack.kafka import KafkaBroker
from devstack.stack import AGENCY_INBOX_TOPICS, REPO, Ports, Stack
from tests.support.flows import DESK, as_agency, as_operator, eventually, wait_completed

README_DOSSIER = REPO / "docs" / "examples" / "birth-residence-insurance.json"
TOPIC = "dossier.events"
# Jaeger is a long compile (`make jaeger`), not part of `make test`: without its binary the
# test skips and says so, unless this asks for it (a machine that builds it, say nightly).
REQUIRED = "GATEWAY_TEST_JAEGER_REQUIRED"


@pytest.fixture(scope="module")
def jaeger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Jaeger]:
    binary = binary_path()
    if not binary.exists():
        if os.environ.get(REQUIRED) == "1":
            pytest.fail(f"no Jaeger at {binary}: run `make jaeger`")
        pytest.skip(f"no Jaeger at {binary}: `make jaeger` builds it")
    log_dir: Path = tmp_path_factory.mktemp("jaeger")
    with Jaeger(JaegerPorts.free(), log_dir=log_dir, binary=binary) as running:
        yield running


@pytest.fixture(scope="module")
def traced_stack(jaeger: Jaeger, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    var_dir: Path = tmp_path_factory.mktemp("jaeger-stack")
    with KafkaBroker() as broker:
        broker.create_topics([TOPIC, TOPIC + ".dlq", *AGENCY_INBOX_TOPICS])
        stack = Stack(
            kafka_bootstrap=broker.bootstrap_servers,
            var_dir=var_dir,
            ports=Ports.free(),
            env={
                "DOSSIER_EVENTS_TOPIC": TOPIC,
                **jaeger.exporter_env(),
                "OTEL_BSP_SCHEDULE_DELAY": "200",
                "SANDBOX_AGENCY_DELAY_S": "0.2",
            },
            # As `make run` sets it (devstack/run.py).
            env_by_service={"routing": {"TRACE_UI_URL": jaeger.trace_url_template}},
        )
        try:
            stack.start()
            yield stack
        finally:
            stack.stop()


def parents(span: dict[str, Any]) -> list[str]:
    return [r["spanID"] for r in span.get("references") or [] if r["refType"] == "CHILD_OF"]


def test_the_readme_dossier_is_one_whole_trace_in_jaeger(
    traced_stack: Stack, jaeger: Jaeger
) -> None:
    stack = traced_stack
    response = httpx.post(
        stack.url("intake") + "/v1/dossiers",
        json=json.loads(README_DOSSIER.read_text(encoding="utf-8")),
        headers=as_agency(stack, DESK),
        timeout=10,
    )
    assert response.status_code == 201, response.text
    code = response.json()["code"]
    wait_completed(stack, code, timeout=90)
    journey = httpx.get(
        f"{stack.url('routing')}/v1/dossiers/{code}/journey",
        headers=as_operator(stack),
        timeout=10,
    ).json()
    trace_id = journey["trace_id"]
    assert len(trace_id) == 32

    def named(trace: dict[str, Any]) -> Counter[tuple[str, str]]:
        processes = trace["processes"]
        return Counter(
            (processes[s["processID"]]["serviceName"], s["operationName"]) for s in trace["spans"]
        )

    def whole() -> dict[str, Any] | None:
        # Each process exports in its own batches: wait for every hop's spans.
        trace = jaeger.trace(trace_id)
        if trace is None:
            return None
        names = named(trace)
        expected = {
            ("intake", "POST /v1/dossiers"): 1,
            ("routing", "transfer acknowledged"): 3,
            ("routing", "dossier step completed"): 3,
            ("notify", "smtp send"): 5,
        }
        return trace if all(names[n] >= c for n, c in expected.items()) else None

    trace = eventually(whole, timeout=60, every=1)
    services = {p["serviceName"] for p in trace["processes"].values()}
    assert {"intake", "routing", "notify", "sandbox"} <= services
    assert services <= {"intake", "routing", "notify", "identity", "sandbox"}
    # ONE trace: Jaeger found every span under the trace id, and no span points outside it.
    spans = trace["spans"]
    assert {s["traceID"] for s in spans} == {trace_id}
    by_id = {s["spanID"] for s in spans}
    roots = [s for s in spans if not parents(s)]
    service_of = {pid: p["serviceName"] for pid, p in trace["processes"].items()}
    assert [(service_of[r["processID"]], r["operationName"]) for r in roots] == [
        ("intake", "POST /v1/dossiers")
    ]
    orphans = [s["operationName"] for s in spans if any(p not in by_id for p in parents(s))]
    assert orphans == []
    # Jaeger itself says so: it warns of spans whose parent it does not have.
    assert not trace.get("warnings"), trace.get("warnings")
    names = named(trace)
    assert names[("routing", "transfer deliver")] >= 3
    # The agencies' callbacks are in the dossier's trace, as the sandbox's client spans.
    assert sum(n for (service, _), n in names.items() if service == "sandbox") >= 6

    # The operator's link: Jaeger's page of this trace (routing's TRACE_UI_URL).
    expected_url = jaeger.trace_url_template.format(trace_id=trace_id)
    if "trace_url" in journey:  # routing's journey carries it once TRACE_UI_URL is read
        assert journey["trace_url"] == expected_url
    page = httpx.get(expected_url, timeout=10)
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]
