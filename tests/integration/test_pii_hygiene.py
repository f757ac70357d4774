"""No personal ID number in clear where operators look: after a full e-ID filing, neither
the services' logs, nor the exported spans (names, attributes), nor Kafka keys contain it."""

from __future__ import annotations

import asyncio

import httpx

from core.personal_id import mask
from devstack.kafka import KafkaBroker
from devstack.otlp_sink import SpanCollector
from devstack.stack import Stack
from tests.conftest import TOPIC
from tests.support.eid import consent, log_in
from tests.support.flows import as_agency, eventually, wait_completed
from tests.support.kafka import read_topic
from tests.support.pii import assert_no_personal_data

# Registered in the sandbox registry and used by no other test, so any hit is this flow's.
CITIZEN = "048305654321"
# Applicants of the other end-to-end tests (old path and e-ID): this file runs last in a
# full run, so their traces are on the stack too.
OTHER_APPLICANTS = ("001090012345", "079185000001", "031200123456")


def kafka_keys(kafka: KafkaBroker, until: bytes) -> list[bytes]:
    """Keys of every record on the events topic, read until one keyed `until` shows up."""
    records = asyncio.run(
        read_topic(
            kafka.bootstrap_servers,
            TOPIC,
            keep=lambda _record: True,
            done=lambda kept, _caught_up: any(r.key == until for r in kept),
        )
    )
    return [r.key or b"" for r in records]


def test_an_e_id_filing_leaves_no_personal_id_in_logs_spans_or_keys(
    stack: Stack, spans: SpanCollector, kafka: KafkaBroker
) -> None:
    _, login = log_in(stack, CITIZEN, acr="2")
    granted = consent(stack, login["session"], "HT.XNTTHN", "Đăng ký kết hôn")
    response = httpx.post(
        stack.url("intake") + "/v1/dossiers",
        json={
            "procedure_code": "HT.XNTTHN",
            "applicant": {"email": "hygiene@example.vn"},
            "form_data": {"intended_use": "Đăng ký kết hôn"},
            "residence_consent_id": granted["id"],
        },
        headers={"X-Citizen-Session": login["session"]} | as_agency(stack, "000.21.31.H22"),
        timeout=15,
    )
    assert response.status_code == 201, response.text
    code = response.json()["code"]
    trace_id = wait_completed(stack, code)["trace_id"]
    # Spans are exported in batches: wait until the dossier's mail went out in its trace.
    trace = eventually(
        lambda: (
            (found := spans.spans(trace_id)) and any(s.name == "smtp send" for s in found) and found
        )
    )
    assert {"intake", "identity"} <= {s.service for s in trace}

    logs = sorted((stack.var_dir / "log").glob("*.log"))
    assert {p.stem for p in logs} >= {"intake", "identity", "routing", "notify", "sandbox"}
    for path in logs:
        text = path.read_text(encoding="utf-8", errors="replace")
        assert_no_personal_data(path.name, text, (CITIZEN, *OTHER_APPLICANTS))
    # Not vacuous: identity did log this citizen's login, masked.
    assert mask(CITIZEN) in (stack.var_dir / "log" / "identity.log").read_text(encoding="utf-8")
    for span in spans.spans():
        exported = f"{span.name} {span.attributes} {span.service}"
        assert_no_personal_data(
            f"span {span.name} of {span.service}", exported, (CITIZEN, *OTHER_APPLICANTS)
        )
    keys = kafka_keys(kafka, code.encode())
    for number in (CITIZEN, *OTHER_APPLICANTS):
        assert not [k for k in keys if number.encode() in k]
