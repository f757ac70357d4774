"""The sandbox's agency spans go where OTEL_TRACES_EXPORTER says, as the services' do: to
Zipkin under `make run`, over OTLP when only an endpoint is set, nowhere otherwise."""

from __future__ import annotations

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.exporter.zipkin.json import ZipkinExporter

from sandbox import telemetry

VARIABLES = ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_SDK_DISABLED")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*VARIABLES, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(telemetry, "_provider", None)


def test_the_exporters_named_are_used_each_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp, zipkin_json")
    monkeypatch.setenv("OTEL_EXPORTER_ZIPKIN_ENDPOINT", "http://127.0.0.1:1/api/v2/spans")
    kinds = [type(e) for e in telemetry._exporters()]
    assert kinds == [OTLPSpanExporter, ZipkinExporter]
    provider = telemetry.configure_tracing()
    assert provider is not None
    assert telemetry.callback_tracer_provider() is provider
    provider.shutdown()


def test_an_endpoint_alone_means_otlp_and_nothing_means_no_export(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert telemetry.configure_tracing() is None
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
    assert [type(e) for e in telemetry._exporters()] == [OTLPSpanExporter]
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    assert telemetry.configure_tracing() is None


def test_an_unknown_exporter_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "jaegerx")
    with pytest.raises(RuntimeError, match="jaegerx"):
        telemetry.configure_tracing()
