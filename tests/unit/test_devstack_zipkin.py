"""How `make run` chooses Zipkin: its port, the exporters the services get, and when the
operator's own OTEL_* settings win."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from devstack import run
from devstack.zipkin import DEFAULT_PORT, Zipkin, ZipkinError, configured_port, wanted


def test_the_port_comes_from_the_environment_else_9411_when_free(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert configured_port({"ZIPKIN_PORT": "19411"}) == 19411
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        # As if another Zipkin (or a second `make run`) held the usual port.
        monkeypatch.setattr("devstack.zipkin.DEFAULT_PORT", busy)
        assert configured_port({}) not in (busy, DEFAULT_PORT)


def test_the_services_export_to_zipkin_and_routing_links_lens_page_of_the_trace() -> None:
    zipkin = Zipkin(port=1)
    assert zipkin.exporter_env({}) == {
        "OTEL_TRACES_EXPORTER": "zipkin_json",
        "OTEL_EXPORTER_ZIPKIN_ENDPOINT": "http://127.0.0.1:1/api/v2/spans",
    }
    assert zipkin.trace_url_template.replace("{trace_id}", "ab" * 16) == (
        "http://127.0.0.1:1/zipkin/traces/" + "ab" * 16
    )


def test_an_operator_collector_still_gets_the_spans_and_their_own_settings_win() -> None:
    zipkin = Zipkin(port=1)
    # An OTLP endpoint alone means "export there" (core/telemetry.py): kept, beside Zipkin.
    both = zipkin.exporter_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"})
    assert both["OTEL_TRACES_EXPORTER"] == "otlp,zipkin_json"
    # Exporters the operator named are theirs: the stack does not set the variable at all.
    named = {"OTEL_TRACES_EXPORTER": "console,zipkin_json"}
    assert "OTEL_TRACES_EXPORTER" not in zipkin.exporter_env(named)
    assert wanted(named)


@pytest.mark.parametrize(
    "environ",
    [
        {"OTEL_SDK_DISABLED": "true"},
        {"OTEL_TRACES_EXPORTER": "otlp"},
        {"OTEL_TRACES_EXPORTER": "none"},
        {"OTEL_EXPORTER_ZIPKIN_ENDPOINT": "http://zipkin.example:9411/api/v2/spans"},
    ],
)
def test_make_run_starts_no_zipkin_when_the_operator_sends_traces_elsewhere(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, environ: dict[str, str]
) -> None:
    jar = tmp_path / "zipkin-server-exec.jar"
    jar.write_bytes(b"")
    monkeypatch.setenv("ZIPKIN_JAR", str(jar))
    for name in ("OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_ZIPKIN_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    assert run.trace_ui() is not None
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert run.trace_ui() is None


def test_a_missing_jar_says_how_to_fetch_it(tmp_path: Path) -> None:
    with pytest.raises(ZipkinError, match="make zipkin-jar"):
        Zipkin(jar=tmp_path / "absent.jar").start()
