"""A multi-agency dossier end to end on real Kafka and PostgreSQL, in one trace."""

from __future__ import annotations

from collections import Counter

from opentelemetry.trace import SpanKind

from devstack.otlp_sink import SpanCollector
from devstack.stack import Stack
from tests.support.flows import (
    agency_transfers,
    chain_dossier,
    eventually,
    mails_to,
    submit,
    wait_completed,
)

AGENCIES = ["000.21.31.H22", "000.22.31.H22", "000.23.05.H22"]
# OTLP's SpanKind numbering is the API's plus one (0 is UNSPECIFIED).
PRODUCER, CONSUMER = SpanKind.PRODUCER.value + 1, SpanKind.CONSUMER.value + 1


def test_chain_dossier_crosses_three_agencies_and_the_citizen_is_told(stack: Stack) -> None:
    email = "journey@example.vn"
    code = submit(stack, chain_dossier(email))

    view = wait_completed(stack, code)
    assert [s["agency_code"] for s in view["steps"]] == AGENCIES
    assert all(s["status"] == "completed" for s in view["steps"])
    assert all(s["delivered_at"] and s["completed_at"] for s in view["steps"])

    for agency in AGENCIES:
        received = [t for t in agency_transfers(stack, agency) if t["dossier_code"] == code]
        assert len(received) == 1, f"{agency} received {received}"
        assert received[0]["deliveries"] == 1

    # Receipt, one message per transfer, completion: five, in that order.
    mails = eventually(lambda: m if len(m := mails_to(stack, email)) >= 5 else None)
    subjects = [m["subject"] for m in sorted(mails, key=lambda m: m["id"])]
    assert len(subjects) == 5, subjects
    assert subjects[0] == f"Hồ sơ {code} đã được tiếp nhận"
    assert [s.startswith(f"Hồ sơ {code} đã được chuyển đến") for s in subjects[1:4]] == [True] * 3
    assert subjects[4] == f"Hồ sơ {code} đã được giải quyết xong"
    assert "Công an xã Tân Phong" in subjects[2]


def test_one_trace_covers_intake_kafka_routing_agencies_and_notify(
    stack: Stack, spans: SpanCollector
) -> None:
    code = submit(stack, chain_dossier("trace@example.vn"))
    trace_id = wait_completed(stack, code)["trace_id"]
    assert len(trace_id) == 32

    def complete_trace() -> list | None:  # type: ignore[type-arg]
        # Each process exports its spans in its own batches: wait for every hop's, not only
        # for the last one's (notify may export before routing does).
        found = spans.spans(trace_id)
        seen = Counter(s.name for s in found)
        expected = {
            "smtp send": 5,
            "transfer deliver": 3,
            "transfer acknowledged": 3,
            "dossier step completed": 3,
        }
        return found if all(seen[n] >= c for n, c in expected.items()) else None

    trace = eventually(complete_trace, timeout=30)
    services = {s.service for s in trace}
    assert {"intake", "routing", "notify"} <= services
    names = Counter((s.service, s.name) for s in trace)
    assert names[("intake", "POST /v1/dossiers")] == 1
    assert names[("routing", "transfer deliver")] == 3
    assert names[("routing", "dossier step completed")] == 3
    # The agencies' callbacks continue the trace their delivery carried (the sandbox agency
    # traces them as a system with OTel would): tests/integration/test_agency_callback_traces.py.
    assert names[("routing", "transfer acknowledged")] == 3
    assert names[("notify", "smtp send")] == 5
    # The trace arrived whole although its services export by different OTLP transports
    # (tests/conftest.py): intake and notify over http/protobuf, routing and the sandbox
    # agencies over gRPC.
    assert {(s.service, s.protocol) for s in trace} == {
        ("intake", "http/protobuf"),
        ("routing", "grpc"),
        ("notify", "http/protobuf"),
        ("sandbox", "grpc"),
    }

    # Kafka hops: every consumer span is the child of a producer span of this trace.
    by_id = {s.span_id: s for s in trace}
    consumers = [s for s in trace if s.kind == CONSUMER]
    assert {s.service for s in consumers} == {"routing", "notify"}
    for consumer in consumers:
        parent = by_id.get(consumer.parent_span_id)
        assert parent is not None, consumer
        assert parent.kind == PRODUCER, consumer
        assert consumer.attributes["messaging.system"] == "kafka"
    # Nothing orphaned: one root (the intake request), every other parent is in the trace.
    roots = [s for s in trace if not s.parent_span_id]
    assert [(r.service, r.name) for r in roots] == [("intake", "POST /v1/dossiers")]
    assert all(s.parent_span_id in by_id for s in trace if s.parent_span_id)
