"""An agency's acknowledgement and outcome report are part of the dossier's trace: the sandbox
agency continues the trace context its delivery carried (as an agency system with OTel
would), and routing attaches its spans to the dossier's trace even when a callback comes
with a foreign context or none, linking the request's span instead."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from opentelemetry.trace import SpanKind

from devstack.otlp_sink import ReceivedSpan, SpanCollector
from devstack.stack import Stack
from tests.support.agencies import BIRTH_AGENCY, behave, birth_registration, transfer_rows
from tests.support.flows import agency_transfers, as_agency, eventually, submit, wait_completed

# OTLP's SpanKind numbering is the API's plus one (0 is UNSPECIFIED).
SERVER, CLIENT = SpanKind.SERVER.value + 1, SpanKind.CLIENT.value + 1
ACK_ROUTE = "POST /v1/transfers/{transfer_id}/acknowledgement"
OUTCOME_ROUTE = "POST /v1/transfers/{transfer_id}/outcome"


@pytest.fixture
def silent_agency(stack: Stack) -> Iterator[None]:
    behave(stack, BIRTH_AGENCY, acknowledge=False)
    yield
    behave(stack, BIRTH_AGENCY)


def url_of(span: ReceivedSpan) -> str:
    value = span.attributes.get("url.full") or span.attributes.get("http.url") or ""
    return str(value)


def one(spans: list[ReceivedSpan], description: str) -> ReceivedSpan:
    assert len(spans) == 1, f"{description}: {spans}"
    return spans[0]


def test_the_agency_callbacks_continue_the_trace_of_the_delivery(
    stack: Stack, spans: SpanCollector
) -> None:
    code = submit(stack, birth_registration("callback-trace@example.vn"))
    trace_id = wait_completed(stack, code)["trace_id"]

    def complete() -> list[ReceivedSpan] | None:
        found = spans.spans(trace_id)
        names = [s.name for s in found]
        done = "transfer acknowledged" in names and "dossier step completed" in names
        callbacks = [s for s in found if s.service == "sandbox" and s.kind == CLIENT]
        return found if done and len(callbacks) >= 2 else None

    trace = eventually(complete, timeout=30)
    by_id = {s.span_id: s for s in trace}
    # The sandbox agency's own client spans, one per callback (each answered at once), each
    # the child of the routing span that delivered the transfer.
    sandbox = [s for s in trace if s.service == "sandbox"]
    ack_call = one([s for s in sandbox if url_of(s).endswith("/acknowledgement")], "ack calls")
    outcome_call = one([s for s in sandbox if url_of(s).endswith("/outcome")], "outcome calls")
    for call in (ack_call, outcome_call):
        assert call.kind == CLIENT
        delivery = by_id[call.parent_span_id]
        assert delivery.service == "routing", delivery

    # Routing's request spans continue the agency's context: the same trace, no new one.
    ack_request = one(
        [s for s in trace if s.name == ACK_ROUTE and s.kind == SERVER], "ack requests"
    )
    outcome_request = one(
        [s for s in trace if s.name == OUTCOME_ROUTE and s.kind == SERVER], "outcome requests"
    )
    assert ack_request.parent_span_id == ack_call.span_id
    assert outcome_request.parent_span_id == outcome_call.span_id
    # ...and what routing makes of them is their child: no link is needed within one trace.
    acknowledged = one([s for s in trace if s.name == "transfer acknowledged"], "acknowledged")
    completed = one([s for s in trace if s.name == "dossier step completed"], "completed")
    assert acknowledged.parent_span_id == ack_request.span_id
    assert completed.parent_span_id == outcome_request.span_id
    assert acknowledged.links == ()
    assert completed.links == ()

    # Nothing orphaned: one root (the intake request), every other parent is in the trace.
    assert [(s.service, s.name) for s in trace if not s.parent_span_id] == [
        ("intake", "POST /v1/dossiers")
    ]
    assert all(s.parent_span_id in by_id for s in trace if s.parent_span_id)


def test_callbacks_with_a_foreign_or_no_trace_context_are_linked_into_the_dossiers_trace(
    stack: Stack, spans: SpanCollector, database_url: str, silent_agency: None
) -> None:
    code = submit(stack, birth_registration("foreign-trace@example.vn"))
    # The silent agency takes the transfer and says nothing: this test is the agency.
    eventually(
        lambda: [t for t in agency_transfers(stack, BIRTH_AGENCY) if t["dossier_code"] == code]
    )
    [row] = asyncio.run(transfer_rows(database_url, code))
    transfer_id = row["transfer_id"]
    dossier_trace = row["trace"]["traceparent"].split("-")[1]
    routing = f"{stack.url('routing')}/v1/transfers/{transfer_id}"
    holder = as_agency(stack, BIRTH_AGENCY, "transfers:report")

    # An acknowledgement with no trace context at all: its request starts a trace of its own.
    ack = httpx.post(f"{routing}/acknowledgement", headers=holder, timeout=10)
    assert ack.status_code == 200, ack.text
    # An outcome from an agency tracing on its own: a context of a trace unknown here.
    foreign_trace, foreign_parent = secrets.token_hex(16), secrets.token_hex(8)
    traceparent = f"00-{foreign_trace}-{foreign_parent}-01"
    body: dict[str, Any] = {"outcome": "done", "note": "Đã cấp giấy khai sinh"}
    outcome = httpx.post(
        f"{routing}/outcome",
        json=body,
        headers=holder | {"traceparent": traceparent},
        timeout=10,
    )
    assert outcome.status_code == 200, outcome.text
    wait_completed(stack, code)

    def marked() -> tuple[ReceivedSpan, ReceivedSpan] | None:
        found = spans.spans(dossier_trace)
        acknowledged = [s for s in found if s.name == "transfer acknowledged"]
        completed = [s for s in found if s.name == "dossier step completed"]
        return (acknowledged[0], completed[0]) if acknowledged and completed else None

    acknowledged, completed = eventually(marked, timeout=30)
    # Both are in the dossier's trace, under the transfer's own spans...
    by_id = {s.span_id: s for s in spans.spans(dossier_trace)}
    assert acknowledged.parent_span_id in by_id
    assert completed.parent_span_id in by_id

    # ...each linked to the request span it came with, which stayed in its own trace.
    def request_span(link: tuple[str, str]) -> ReceivedSpan | None:
        trace_id, span_id = link
        return next((s for s in spans.spans(trace_id) if s.span_id == span_id), None)

    [ack_link] = acknowledged.links
    assert ack_link[0] != dossier_trace
    ack_request = eventually(lambda: request_span(ack_link), timeout=30)
    assert (ack_request.name, ack_request.kind) == (ACK_ROUTE, SERVER)
    assert ack_request.parent_span_id == ""  # no context came with it: a root

    [outcome_link] = completed.links
    assert outcome_link[0] == foreign_trace
    outcome_request = eventually(lambda: request_span(outcome_link), timeout=30)
    assert (outcome_request.name, outcome_request.kind) == (OUTCOME_ROUTE, SERVER)
    assert outcome_request.parent_span_id == foreign_parent
    # The foreign trace keeps none of the dossier's spans.
    assert not [s for s in spans.spans(foreign_trace) if s.name == "dossier step completed"]
