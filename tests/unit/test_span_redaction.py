"""Credential-like query values never leave the process in span attributes."""

from __future__ import annotations

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from core.telemetry import redact_request_span, redact_url

CALLBACK = "/v1/citizen/callback?state=st4te-value&code=c0de-value&iss=http%3A%2F%2Feid"


def test_an_oidc_callback_span_keeps_the_shape_of_its_url_not_the_code_or_state() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    # As the HTTP instrumentations set them: old conventions (server and client spans)
    # and the stable ones (OTEL_SEMCONV_STABILITY_OPT_IN=http).
    attributes = {
        "http.url": "http://127.0.0.1:8083" + CALLBACK,
        "http.target": CALLBACK,
        "url.full": "http://127.0.0.1:8083" + CALLBACK,
        "url.query": CALLBACK.split("?", 1)[1],
        "http.route": "/v1/citizen/callback",
    }
    with tracer.start_as_current_span("GET /v1/citizen/callback") as span:
        span.set_attributes(attributes)  # the ASGI middleware sets them after the start
        redact_request_span(span, {})  # then calls its request hook
    (exported_span,) = exporter.get_finished_spans()
    exported = dict(exported_span.attributes or {})
    for value in exported.values():
        assert "c0de-value" not in str(value)
        assert "st4te-value" not in str(value)
    assert exported["http.target"] == (
        "/v1/citizen/callback?state=REDACTED&code=REDACTED&iss=http%3A%2F%2Feid"
    )
    assert exported["url.query"] == "state=REDACTED&code=REDACTED&iss=http%3A%2F%2Feid"
    assert exported["http.route"] == "/v1/citizen/callback"


def test_urls_without_sensitive_parameters_are_left_alone() -> None:
    url = "http://127.0.0.1:8080/v1/dossiers?page=2&size=50"
    assert redact_url(url) == url
    assert (
        redact_url("http://h/login?login_hint=079185000001") == "http://h/login?login_hint=REDACTED"
    )
