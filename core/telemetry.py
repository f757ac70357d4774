"""OpenTelemetry set-up from the standard OTEL_* environment variables.

Honoured: OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER(_ARG) (the SDK's
default is parentbased_always_on), OTEL_PROPAGATORS, OTEL_BSP_*, OTEL_EXPORTER_OTLP_*,
OTEL_TRACES_EXPORTER (otlp, console, none) and OTEL_SDK_DISABLED. When no exporter and no
OTLP endpoint is configured, spans are not exported, so `make run` needs no collector.

URLs in span attributes keep their shape but not the values of credential-like query
parameters (an OIDC callback's `code` and `state`, a `login_hint` naming a citizen...):
the instrumentations redact only a fixed list of their own, so every exporter is wrapped
to redact them on the way out.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagate import extract, inject
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
    SpanExportResult,
)

log = logging.getLogger(__name__)
_configured: TracerProvider | None = None
# Query parameters whose values must not reach a trace backend.
SENSITIVE_QUERY_PARAMETERS = frozenset(
    {
        "code", "state", "nonce", "session_state", "login_hint", "id_token_hint",
        "access_token", "id_token", "code_verifier", "client_secret", "client_assertion",
    }
)  # fmt: skip
# Attributes holding a URL (old and stable HTTP semantic conventions) or a bare query.
URL_ATTRIBUTES = ("http.url", "url.full", "http.target")
QUERY_ATTRIBUTES = ("url.query",)
REDACTED = "REDACTED"


def redact_query(query: str) -> str:
    pairs = parse_qsl(query, keep_blank_values=True)
    if not any(name.lower() in SENSITIVE_QUERY_PARAMETERS for name, _ in pairs):
        return query
    return urlencode(
        [(n, REDACTED if n.lower() in SENSITIVE_QUERY_PARAMETERS else v) for n, v in pairs]
    )


def redact_url(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:
        return url.split("?", 1)[0]  # unparsable: keep no query at all
    return urlunsplit(parts._replace(query=redact_query(parts.query))) if parts.query else url


class RedactingSpanExporter(SpanExporter):
    """Wraps an exporter: spans leave the process with their URL attributes redacted.

    At export rather than at span start: the ASGI instrumentation sets its attributes again
    after starting the span, and an ended span cannot be changed any more."""

    def __init__(self, inner: SpanExporter) -> None:
        self._inner = inner

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self._inner.export([_redacted(span) for span in spans])

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


def _redacted(span: ReadableSpan) -> ReadableSpan:
    attributes = span.attributes or {}
    changed: dict[str, str] = {}
    for key in URL_ATTRIBUTES + QUERY_ATTRIBUTES:
        value = attributes.get(key)
        if isinstance(value, str) and value:
            safe = (redact_query if key in QUERY_ATTRIBUTES else redact_url)(value)
            if safe != value:
                changed[key] = safe
    if not changed:
        return span
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes={**attributes, **changed},
        events=span.events,
        links=span.links,
        kind=span.kind,
        status=span.status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


def configure_tracing(default_service_name: str) -> TracerProvider | None:
    """Install the global tracer provider once per process; later calls return it."""
    global _configured
    if _configured is not None or os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return _configured
    name = os.environ.get("OTEL_SERVICE_NAME", default_service_name)
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: name}))
    for exporter in _exporters_from_env():
        provider.add_span_processor(BatchSpanProcessor(RedactingSpanExporter(exporter)))
    trace.set_tracer_provider(provider)
    _configured = provider
    return provider


def _exporters_from_env() -> list[SpanExporter]:
    has_endpoint = any(
        os.environ.get(v)
        for v in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )
    names = os.environ.get("OTEL_TRACES_EXPORTER", "otlp" if has_endpoint else "none")
    exporters: list[SpanExporter] = []
    for name in (n.strip() for n in names.split(",")):
        if name == "otlp":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            exporters.append(OTLPSpanExporter())
        elif name == "console":
            exporters.append(ConsoleSpanExporter())
        elif name not in ("none", ""):
            log.warning("OTEL_TRACES_EXPORTER=%s is not supported; ignored", name)
    return exporters


def shutdown_tracing() -> None:
    if _configured is not None:
        _configured.shutdown()


def current_carrier() -> dict[str, str]:
    """The active trace context as W3C headers (traceparent, tracestate)."""
    carrier: dict[str, str] = {}
    inject(carrier)
    return carrier


def context_from_carrier(carrier: dict[str, str]) -> Context:
    return extract(carrier)


def trace_id_of(carrier: dict[str, str]) -> str:
    """The 32-hex trace id inside a stored traceparent, or '' when there is none."""
    parts = carrier.get("traceparent", "").split("-")
    return parts[1] if len(parts) == 4 else ""
