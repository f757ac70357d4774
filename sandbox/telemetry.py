"""The demo agencies' back-office traces its calls to the gateway as any agency system with
the OpenTelemetry SDK would: the W3C trace context that came with a delivery (HTTP or Kafka
headers, gRPC metadata) is kept with what the agency owes for it, and its acknowledgement
and outcome report continue that trace, so they show in the dossier's trace.

The stand-ins keep no dependency on the product (not core/telemetry.py): the SDK, set up
from the standard variables the stack hands every process (OTEL_TRACES_EXPORTER,
OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT and _PROTOCOL, OTEL_EXPORTER_ZIPKIN_ENDPOINT,
OTEL_SERVICE_NAME, OTEL_BSP_*, OTEL_TRACES_SAMPLER...). Without an exporter or an endpoint
nothing is exported, yet the context is still passed on: a trace the agency does
not record stays whole at the gateway, one span less deep.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from importlib.metadata import entry_points

from opentelemetry.propagate import extract, inject
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

# The agency's calls to the gateway are traced with it, and nothing else of the stand-ins:
# it is not the global provider, so a library tracing by itself (the stand-ins' FastAPI
# requests, whose query strings hold test phones and emails) exports nothing.
_provider: TracerProvider | None = None


def carrier_of(headers: Mapping[str, str]) -> dict[str, str]:
    """The W3C trace context among a delivery's headers, to keep (empty when none)."""
    carrier: dict[str, str] = {}
    inject(carrier, context=extract({k.lower(): v for k, v in headers.items()}))
    return carrier


def configure_tracing() -> TracerProvider | None:
    """Export the sandbox's spans where OTEL_TRACES_EXPORTER says (else over OTLP when an
    endpoint is set); None when they go nowhere."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    exporters = _exporters()
    if not exporters:
        return None
    global _provider
    name = os.environ.get("OTEL_SERVICE_NAME") or "sandbox"
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: name}))
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    _provider = provider
    return provider


def callback_tracer_provider() -> TracerProvider | None:
    """The provider of the agency's callback spans (None: not exported)."""
    return _provider


def _exporters() -> list[SpanExporter]:
    named = os.environ.get("OTEL_TRACES_EXPORTER", "")
    names = [n.strip().lower() for n in named.split(",") if n.strip()]
    if not names and (
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    ):
        names = ["otlp"]
    return [_otlp_exporter() if n == "otlp" else _named_exporter(n) for n in names if n != "none"]


def _named_exporter(name: str) -> SpanExporter:
    """An exporter by the name its package registers for the SDK (zipkin_json, console...)."""
    found = entry_points(group="opentelemetry_traces_exporter", name=name)
    if not found:
        raise RuntimeError(
            f"OTEL_TRACES_EXPORTER names {name!r}, which no installed package provides"
        )
    exporter: SpanExporter = next(iter(found)).load()()
    return exporter


def _otlp_exporter() -> SpanExporter:
    protocol = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"
    )
    # Each exporter reads its endpoint, headers, TLS and timeout from the environment.
    if protocol.strip() == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
        OTLPSpanExporter as GrpcSpanExporter,
    )

    return GrpcSpanExporter()
