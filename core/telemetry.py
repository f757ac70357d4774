"""OpenTelemetry set-up by the SDK's own reading of the standard OTEL_* environment variables.

The OpenTelemetry SDK's configurator (`_OTelSDKConfigurator`, the one opentelemetry-distro and
`opentelemetry-instrument` build on) reads every variable an operator knows: OTEL_SERVICE_NAME,
OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER(_ARG), OTEL_PROPAGATORS, OTEL_BSP_*,
OTEL_TRACES_EXPORTER / OTEL_METRICS_EXPORTER / OTEL_LOGS_EXPORTER (otlp, otlp_proto_grpc,
otlp_proto_http, console, none; zipkin_json for traces, to OTEL_EXPORTER_ZIPKIN_ENDPOINT),
OTEL_EXPORTER_OTLP_PROTOCOL (grpc or http/protobuf, also per signal),
OTEL_EXPORTER_OTLP_[SIGNAL_]ENDPOINT, _HEADERS, _COMPRESSION, _TIMEOUT, _INSECURE and the TLS
files, OTEL_METRIC_EXPORT_INTERVAL, OTEL_BLRP_*, OTEL_SDK_DISABLED. We add only two
defaults of our own, because the SDK alone exports nothing unless each signal's exporter is
named:

- a signal whose OTEL_<SIGNAL>_EXPORTER is unset is exported over OTLP when an endpoint for
  it is set; the general OTEL_EXPORTER_OTLP_ENDPOINT counts for traces only, since metrics are
  already served to Prometheus at /metrics and logs go to stdout (name them to export them);
- with no exporter and no endpoint set, nothing is exported, so `make run` needs no collector.

Python log records reach OTEL_LOGS_EXPORTER through opentelemetry-instrumentation-logging's
handler, installed only when a log exporter is configured (it costs a little per record).

URLs in server span attributes keep their shape but not the values of credential-like query
parameters (an OIDC callback's `code` and `state`, a `login_hint` naming a citizen...): the
instrumentations redact only a fixed list of their own, so `redact_request_span` is given to
the ASGI instrumentation as its request hook (core/http.py), which runs after it has set the
request's attributes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry._logs import get_logger_provider
from opentelemetry.context import Context
from opentelemetry.instrumentation.logging import LoggingInstrumentor
from opentelemetry.metrics import get_meter_provider
from opentelemetry.propagate import extract, inject

# Private by name, but it is the SDK's documented hook for distros (opentelemetry-distro
# subclasses it): the one place where the SDK turns OTEL_* variables into providers.
from opentelemetry.sdk._configuration import _OTelSDKConfigurator
from opentelemetry.sdk.resources import SERVICE_NAME, OTELResourceDetector
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.trace import Link, Span

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


def redact_request_span(span: Span, _scope: dict[str, Any]) -> None:
    """ASGI request hook: the server span's URL attributes, redacted in place. The hook runs
    after the instrumentation has set them, while the span still records."""
    if not span.is_recording() or not isinstance(span, ReadableSpan):
        return
    attributes = span.attributes or {}
    for key in URL_ATTRIBUTES + QUERY_ATTRIBUTES:
        value = attributes.get(key)
        if isinstance(value, str) and value:
            safe = (redact_query if key in QUERY_ATTRIBUTES else redact_url)(value)
            if safe != value:
                span.set_attribute(key, safe)


_SIGNALS = ("TRACES", "METRICS", "LOGS")


def configure_tracing(default_service_name: str) -> TracerProvider | None:
    """Install the global tracer, meter and logger providers once per process; later calls
    return the tracer provider. `default_service_name` applies when neither OTEL_SERVICE_NAME
    nor a service.name in OTEL_RESOURCE_ATTRIBUTES names the service."""
    global _configured
    if _configured is not None or _sdk_disabled():
        return _configured
    for signal in _SIGNALS:
        if otlp_implied(signal):
            # As opentelemetry-distro does: the SDK reads the variable, we only default it.
            os.environ.setdefault(f"OTEL_{signal}_EXPORTER", "otlp")
    # The SDK's configurator has no type hints; its keyword is documented in the SDK.
    configurator: Any = cast(Any, _OTelSDKConfigurator)()
    configurator.configure(resource_attributes=_service_name(default_service_name))
    if _exporters_named("LOGS"):
        LoggingInstrumentor().instrument()
    provider = trace.get_tracer_provider()
    _configured = provider if isinstance(provider, TracerProvider) else None
    return _configured


def shutdown_tracing() -> None:
    """Flush and stop every provider the configurator installed (no-op ones have nothing)."""
    if _configured is None:
        return
    _configured.shutdown()
    for provider in (get_meter_provider(), get_logger_provider()):
        shutdown = getattr(provider, "shutdown", None)
        if callable(shutdown):
            shutdown()


def _sdk_disabled() -> bool:
    return os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"


def otlp_implied(signal: str, environ: Mapping[str, str] | None = None) -> bool:
    """Whether `signal` is exported over OTLP though no OTEL_<SIGNAL>_EXPORTER names it: an
    endpoint for it is set (the devstack keeps that so when it names Zipkin's exporter)."""
    env = os.environ if environ is None else environ
    if f"OTEL_{signal}_EXPORTER" in env:
        return False
    endpoints = [f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT"]
    if signal == "TRACES":
        endpoints.append("OTEL_EXPORTER_OTLP_ENDPOINT")
    return any(env.get(name) for name in endpoints)


def _exporters_named(signal: str) -> bool:
    names = os.environ.get(f"OTEL_{signal}_EXPORTER", "").strip().lower()
    return names not in ("", "none")


def _service_name(default: str) -> dict[str, str]:
    # Attributes given to the configurator override the environment's: pass the default only
    # when the operator named no service.
    if os.environ.get("OTEL_SERVICE_NAME") or OTELResourceDetector().detect().attributes.get(
        SERVICE_NAME
    ):
        return {}
    return {SERVICE_NAME: default}


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


def dossier_parent(stored: dict[str, str]) -> tuple[Context, list[Link]]:
    """Where an agency's callback attaches its span: (parent context, links).

    The dossier's trace is the one operators follow, so the span always belongs to it. A
    callback that came with the dossier's own context (an agency propagating what its
    delivery carried) continues from its request span, a plain parent in that trace. One
    that came with a foreign context, or none (its request span then started a trace of its
    own), is continued from the dossier's stored context instead and *linked* to the
    request's span: OTel's spec keeps parent-child within one trace and gives links to
    spans causally related across traces, the case of a request from outside whose context
    is not adopted (a trust boundary; a forged traceparent never re-parents the dossier)."""
    request = trace.get_current_span().get_span_context()
    if request.is_valid and format(request.trace_id, "032x") == trace_id_of(stored):
        return otel_context.get_current(), []
    return context_from_carrier(stored), [Link(request)] if request.is_valid else []
