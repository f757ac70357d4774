"""How `make run` chooses Jaeger: its ports, and when it starts none."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from devstack import run
from devstack.jaeger import Jaeger, JaegerError, JaegerPorts


def test_ports_come_from_the_environment_else_the_usual_ones_when_free(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        # As if another Jaeger (or a second `make run`) held the usual OTLP gRPC port.
        monkeypatch.setattr(JaegerPorts, "otlp_grpc", busy)
        ports = JaegerPorts.configured({"JAEGER_UI_PORT": "17686", "JAEGER_HEALTH_PORT": ""})
        assert ports.ui == 17686
        assert ports.otlp_grpc != busy
    assert len({ports.ui, ports.otlp_grpc, ports.otlp_http, ports.health, ports.query_grpc}) == 5


def test_the_services_export_to_jaeger_and_routing_links_its_trace_page() -> None:
    jaeger = Jaeger(JaegerPorts(ui=1, otlp_grpc=2, otlp_http=3, health=4, query_grpc=5))
    assert jaeger.exporter_env()["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://127.0.0.1:2"
    assert jaeger.trace_url_template.format(trace_id="ab" * 16) == (
        "http://127.0.0.1:1/trace/" + "ab" * 16
    )


@pytest.mark.parametrize(
    "variable", ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_TRACES_EXPORTER", "OTEL_SDK_DISABLED"]
)
def test_make_run_starts_no_jaeger_when_the_operator_exports_elsewhere(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, variable: str
) -> None:
    binary = tmp_path / "jaeger"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    monkeypatch.setenv("JAEGER_BINARY", str(binary))
    for name in run.OPERATOR_OTLP:
        monkeypatch.delenv(name, raising=False)
    assert run.trace_ui() is not None
    monkeypatch.setenv(variable, "none" if variable == "OTEL_TRACES_EXPORTER" else "x")
    assert run.trace_ui() is None


def test_a_missing_binary_says_how_to_build_it(tmp_path: Path) -> None:
    with pytest.raises(JaegerError, match="make jaeger"):
        Jaeger(binary=tmp_path / "absent").start()
