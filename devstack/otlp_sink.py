"""An OTLP receiver of traces, metrics and logs over both OTLP transports, gRPC and HTTP
(http/protobuf): the services export to it exactly as they would to a collector or Jaeger;
tests read back what arrived and by which transport, the benchmark counts the spans."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Callable, Mapping
from concurrent import futures
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal, cast

import grpc
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

Protocol = Literal["grpc", "http/protobuf"]


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, object]
    protocol: Protocol = "grpc"
    # Spans this one is linked to, as (trace id, span id).
    links: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class ReceivedMetric:
    service: str
    name: str
    protocol: Protocol


@dataclass(frozen=True)
class ReceivedLog:
    service: str
    body: str
    trace_id: str
    protocol: Protocol


class SpanCollector:
    """Both transports on two loopback ports, one store. `exporter_env(protocol)` gives the
    standard OTEL_* variables that make a process export here by that transport."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spans: list[ReceivedSpan] = []
        self._metrics: list[ReceivedMetric] = []
        self._logs: list[ReceivedLog] = []
        self._headers: list[dict[str, str]] = []
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        servicers = _GrpcServicers(self)
        # The OTLP stubs have no type hints: each add_*_to_server takes a servicer and a server.
        for add, servicer in [
            (trace_service_pb2_grpc.add_TraceServiceServicer_to_server, servicers.traces),
            (metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server, servicers.metrics),
            (logs_service_pb2_grpc.add_LogsServiceServicer_to_server, servicers.logs),
        ]:
            cast(Callable[[object, grpc.Server], None], add)(servicer, self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _http_handler(self))
        self._http.daemon_threads = True
        self.http_port = self._http.server_address[1]
        self._http_thread = threading.Thread(
            target=self._http.serve_forever, name="otlp-http", daemon=True
        )

    def start(self) -> None:
        self._server.start()
        self._http_thread.start()

    def stop(self) -> None:
        self._server.stop(grace=1)
        self._http.shutdown()
        self._http.server_close()

    @property
    def endpoint(self) -> str:
        """The gRPC endpoint (OTLP's default transport)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def http_endpoint(self) -> str:
        """The base URL of OTLP/HTTP: exporters append /v1/traces, /v1/metrics, /v1/logs."""
        return f"http://127.0.0.1:{self.http_port}"

    def exporter_env(self, protocol: Protocol = "grpc") -> dict[str, str]:
        """The standard OTEL_* variables that make a service export its spans here."""
        endpoint = self.endpoint if protocol == "grpc" else self.http_endpoint
        return {
            "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
            "OTEL_BSP_SCHEDULE_DELAY": "200",
        }

    def spans(self, trace_id: str | None = None) -> list[ReceivedSpan]:
        with self._lock:
            return [s for s in self._spans if trace_id is None or s.trace_id == trace_id]

    def metrics(self) -> list[ReceivedMetric]:
        with self._lock:
            return list(self._metrics)

    def logs(self) -> list[ReceivedLog]:
        with self._lock:
            return list(self._logs)

    def headers(self) -> list[dict[str, str]]:
        """Each export request's headers (gRPC metadata), names in lower case."""
        with self._lock:
            return list(self._headers)

    def receive_traces(
        self,
        request: trace_service_pb2.ExportTraceServiceRequest,
        protocol: Protocol,
        headers: Mapping[str, str],
    ) -> None:
        received = [
            ReceivedSpan(
                service=_service_of(resource_spans.resource),
                name=span.name,
                kind=span.kind,
                trace_id=span.trace_id.hex(),
                span_id=span.span_id.hex(),
                parent_span_id=span.parent_span_id.hex(),
                attributes={a.key: _value(a.value) for a in span.attributes},
                protocol=protocol,
                links=tuple((link.trace_id.hex(), link.span_id.hex()) for link in span.links),
            )
            for resource_spans in request.resource_spans
            for scope_spans in resource_spans.scope_spans
            for span in scope_spans.spans
        ]
        with self._lock:
            self._spans.extend(received)
            self._headers.append({k.lower(): v for k, v in headers.items()})

    def receive_metrics(
        self,
        request: metrics_service_pb2.ExportMetricsServiceRequest,
        protocol: Protocol,
        headers: Mapping[str, str],
    ) -> None:
        received = [
            ReceivedMetric(_service_of(rm.resource), metric.name, protocol)
            for rm in request.resource_metrics
            for scope_metrics in rm.scope_metrics
            for metric in scope_metrics.metrics
        ]
        with self._lock:
            self._metrics.extend(received)
            self._headers.append({k.lower(): v for k, v in headers.items()})

    def receive_logs(
        self,
        request: logs_service_pb2.ExportLogsServiceRequest,
        protocol: Protocol,
        headers: Mapping[str, str],
    ) -> None:
        received = [
            ReceivedLog(
                _service_of(rl.resource), str(_value(record.body)), record.trace_id.hex(), protocol
            )
            for rl in request.resource_logs
            for scope_logs in rl.scope_logs
            for record in scope_logs.log_records
        ]
        with self._lock:
            self._logs.extend(received)
            self._headers.append({k.lower(): v for k, v in headers.items()})


class _GrpcServicers:
    """The three OTLP gRPC services, each handing its request to the collector."""

    def __init__(self, collector: SpanCollector) -> None:
        self.traces = _TraceService(collector)
        self.metrics = _MetricsService(collector)
        self.logs = _LogsService(collector)


def _metadata(context: grpc.ServicerContext) -> dict[str, str]:
    return {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, collector: SpanCollector) -> None:
        self._collector = collector

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self._collector.receive_traces(request, "grpc", _metadata(context))
        return trace_service_pb2.ExportTraceServiceResponse()


class _MetricsService(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, collector: SpanCollector) -> None:
        self._collector = collector

    def Export(
        self,
        request: metrics_service_pb2.ExportMetricsServiceRequest,
        context: grpc.ServicerContext,
    ) -> metrics_service_pb2.ExportMetricsServiceResponse:
        self._collector.receive_metrics(request, "grpc", _metadata(context))
        return metrics_service_pb2.ExportMetricsServiceResponse()


class _LogsService(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self, collector: SpanCollector) -> None:
        self._collector = collector

    def Export(
        self, request: logs_service_pb2.ExportLogsServiceRequest, context: grpc.ServicerContext
    ) -> logs_service_pb2.ExportLogsServiceResponse:
        self._collector.receive_logs(request, "grpc", _metadata(context))
        return logs_service_pb2.ExportLogsServiceResponse()


# OTLP/HTTP: one path per signal, the request and response messages of the gRPC service.
_HttpRoute = tuple[type[Message], Message, Callable[[Any, Protocol, Mapping[str, str]], None]]


def _http_handler(collector: SpanCollector) -> type[BaseHTTPRequestHandler]:
    routes: dict[str, _HttpRoute] = {
        "/v1/traces": (
            trace_service_pb2.ExportTraceServiceRequest,
            trace_service_pb2.ExportTraceServiceResponse(),
            collector.receive_traces,
        ),
        "/v1/metrics": (
            metrics_service_pb2.ExportMetricsServiceRequest,
            metrics_service_pb2.ExportMetricsServiceResponse(),
            collector.receive_metrics,
        ),
        "/v1/logs": (
            logs_service_pb2.ExportLogsServiceRequest,
            logs_service_pb2.ExportLogsServiceResponse(),
            collector.receive_logs,
        ),
    }

    class OtlpHttpHandler(BaseHTTPRequestHandler):
        # Keep-alive, as exporters reuse their connection between batches.
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            route = routes.get(self.path)
            if route is None:
                self._answer(404, b"", "text/plain")
                return
            if self.headers.get("Content-Type") != "application/x-protobuf":
                # OTLP/HTTP's JSON encoding is not what the Python exporters send.
                self._answer(415, b"", "text/plain")
                return
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            request_type, response, receive = route
            request = request_type()
            try:
                request.ParseFromString(body)
            except DecodeError:
                self._answer(400, b"", "text/plain")
                return
            receive(request, "http/protobuf", dict(self.headers.items()))
            self._answer(200, response.SerializeToString(), "application/x-protobuf")

        def _answer(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """One line per export batch on stderr is noise in test output."""

    return OtlpHttpHandler


def _service_of(resource: Resource) -> str:
    return next((a.value.string_value for a in resource.attributes if a.key == "service.name"), "")


def _value(value: AnyValue) -> object:
    field = value.WhichOneof("value")
    return getattr(value, field) if field else None
