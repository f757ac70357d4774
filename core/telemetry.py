"""OpenTelemetry set-up from the standard OTEL_* environment variables.

Honoured: OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER(_ARG) (the SDK's
default is parentbased_always_on), OTEL_PROPAGATORS, OTEL_BSP_*, OTEL_EXPORTER_OTLP_*,
OTEL_TRACES_EXPORTER (otlp, console, none) and OTEL_SDK_DISABLED. When no exporter and no
OTLP endpoint is configured, spans are not exported, so `make run` needs no collector.
"""

from __future__ import annotations

import logging
import os

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagate import extract, inject
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
)

log = logging.getLogger(__name__)
_configured: TracerProvider | None = None


def configure_tracing(default_service_name: str) -> TracerProvider | None:
    """Install the global tracer provider once per process; later calls return it."""
    global _configured
    if _configured is not None or os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return _configured
    name = os.environ.get("OTEL_SERVICE_NAME", default_service_name)
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: name}))
    for exporter in _exporters_from_env():
        provider.add_span_processor(BatchSpanProcessor(exporter))
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
