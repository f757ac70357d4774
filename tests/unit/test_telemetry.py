"""The services' telemetry is configured by the OpenTelemetry SDK from the standard OTEL_*
variables: a real child process configured only by its environment exports to a real OTLP
receiver over gRPC or HTTP (http/protobuf), and the receiver sees what an operator asked for."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from devstack.otlp_sink import Protocol, SpanCollector
from devstack.stack import REPO

# What a service does with telemetry, in miniature: a span, a log line inside it, a counter.
CHILD = """
import logging
from opentelemetry import metrics, trace
from core.telemetry import configure_tracing, shutdown_tracing

logging.basicConfig(level="INFO")
configure_tracing("default-name")
with trace.get_tracer("probe").start_as_current_span("dossier probe") as span:
    logging.getLogger("probe").warning("probe log line")
    print(format(span.get_span_context().trace_id, "032x"))
metrics.get_meter("probe").create_counter("probe.count").add(1)
shutdown_tracing()
"""


@pytest.fixture
def sink() -> Iterator[SpanCollector]:
    collector = SpanCollector()
    collector.start()
    yield collector
    collector.stop()


def run_child(env: dict[str, str]) -> str:
    """Run CHILD with only `env` as OTEL_* configuration; answer its span's trace id."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", CHILD],
        env={**base, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'gen'}", **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_an_endpoint_alone_exports_traces_by_the_protocol_asked(
    sink: SpanCollector, protocol: Protocol
) -> None:
    trace_id = run_child(sink.exporter_env(protocol))

    [span] = sink.spans(trace_id)
    assert (span.name, span.service, span.protocol) == ("dossier probe", "default-name", protocol)
    # Metrics go to Prometheus and logs to stdout unless their exporters are named.
    assert sink.metrics() == []
    assert sink.logs() == []


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_every_signal_name_and_header_an_operator_sets_is_honoured(
    sink: SpanCollector, protocol: Protocol
) -> None:
    trace_id = run_child(
        {
            **sink.exporter_env(protocol),
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_METRICS_EXPORTER": "otlp",
            "OTEL_LOGS_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer probe-key",
            "OTEL_RESOURCE_ATTRIBUTES": "service.name=from-attributes,deployment.environment=t",
        }
    )

    [span] = sink.spans(trace_id)
    assert (span.service, span.protocol) == ("from-attributes", protocol)
    metrics = sink.metrics()
    assert ("from-attributes", "probe.count", protocol) in {
        (m.service, m.name, m.protocol) for m in metrics
    }
    [probe_log] = [r for r in sink.logs() if r.body == "probe log line"]
    # The log record carries the trace it was written in.
    assert (probe_log.service, probe_log.trace_id, probe_log.protocol) == (
        "from-attributes",
        trace_id,
        protocol,
    )
    assert {h.get("authorization") for h in sink.headers()} == {"Bearer probe-key"}


def test_the_sampler_and_the_service_name_come_from_the_environment(sink: SpanCollector) -> None:
    run_child(
        {
            **sink.exporter_env("http/protobuf"),
            "OTEL_SERVICE_NAME": "sampled-out",
            "OTEL_TRACES_SAMPLER": "always_off",
            "OTEL_METRICS_EXPORTER": "otlp_proto_http",
        }
    )

    # The child did export (its metric arrived, named as asked), but no span: sampled out.
    assert {m.service for m in sink.metrics()} == {"sampled-out"}
    assert sink.spans() == []


def test_exporter_none_exports_nothing_even_with_an_endpoint(sink: SpanCollector) -> None:
    run_child(
        {
            **sink.exporter_env("grpc"),
            "OTEL_TRACES_EXPORTER": "none",
            "OTEL_METRICS_EXPORTER": "console",
        }
    )

    assert sink.spans() == []
    assert sink.metrics() == []
