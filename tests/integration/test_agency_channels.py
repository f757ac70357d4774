"""Transfers reach agencies over each channel, signed, acknowledged, exactly once; an
agency that never acknowledges gets them again and is escalated to operators."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from devstack.kafka import KafkaBroker
from devstack.stack import Stack
from gateway.v1 import agency_pb2
from tests.support.agencies import (
    BIRTH_AGENCY,
    behave,
    birth_registration,
    inbox_records,
    transfer_rows,
)
from tests.support.flows import (
    agency_transfers,
    as_agency,
    as_operator,
    eventually,
    submit,
    wait_completed,
)

DISABILITY = "LT.XDKT-TCXH"
KAFKA_AGENCY = "000.00.15.H22"
GRPC_AGENCY = "000.00.12.H22"
INBOX = "agency.000.00.15.H22.inbox"


@pytest.fixture
def agency(stack: Stack) -> Iterator[Stack]:
    yield stack
    behave(stack, fail_next=0)


def received(stack: Stack, agency_code: str, code: str) -> list[dict[str, Any]]:
    return [t for t in agency_transfers(stack, agency_code) if t["dossier_code"] == code]


def test_https_deliveries_are_signed_verified_and_acknowledged(
    stack: Stack, database_url: str
) -> None:
    code = submit(stack, birth_registration("signed@example.vn"))
    wait_completed(stack, code)
    [record] = received(stack, BIRTH_AGENCY, code)
    # The sandbox checked the signature with the standardwebhooks library and it matched.
    assert record["verified"] is True
    assert record["channel"] == "https"
    assert record["deliveries"] == 1
    [row] = asyncio.run(transfer_rows(database_url, code))
    assert row["acknowledged_at"] is not None
    assert row["redeliveries"] == 0
    assert row["escalated"] is False
    metrics = httpx.get(f"{stack.url('routing')}/metrics/", timeout=5).text
    assert 'gateway_transfer_attempts_total{channel="https",outcome="delivered"}' in metrics


def test_grpc_and_kafka_inbox_agencies_each_receive_the_dossier_once(
    stack: Stack, database_url: str, kafka: KafkaBroker
) -> None:
    body = {
        "procedure_code": DISABILITY,
        "applicant": {"personal_id": "001090012345", "full_name": "Lê Văn Bình"},
        "form_data": {
            "person_full_name": "Lê Văn Bình",
            "person_personal_id": "001090012345",
            "disability_description": "Khuyết tật vận động",
        },
    }
    code = submit(stack, body)
    view = wait_completed(stack, code, 90)
    assert [s["status"] for s in view["steps"]] == ["completed", "completed"]
    for agency_code, channel in [(KAFKA_AGENCY, "kafka"), (GRPC_AGENCY, "grpc")]:
        [record] = received(stack, agency_code, code)
        assert (record["channel"], record["verified"], record["deliveries"]) == (
            channel,
            True,
            1,
        )
    rows = asyncio.run(transfer_rows(database_url, code))
    assert all(row["acknowledged_at"] is not None for row in rows)

    # The inbox record: a CloudEvent in binary mode keyed by the dossier code, carrying the
    # dossier's trace.
    [record] = asyncio.run(inbox_records(kafka.bootstrap_servers, INBOX, code))
    headers = dict(record.headers)
    assert headers["ce_id"].decode() == rows[0]["transfer_id"]
    assert headers["ce_type"] == b"vn.gov.agency.transfer.v1"
    assert headers["content-type"] == b"application/protobuf"
    dossier_trace = rows[0]["trace"]["traceparent"].split("-")[1]
    assert headers["traceparent"].decode().split("-")[1] == dossier_trace
    transfer = agency_pb2.Transfer.FromString(record.value)
    assert transfer.acknowledgement_url.endswith(
        f"/v1/transfers/{transfer.transfer_id}/acknowledgement"
    )


def test_an_agency_that_never_acknowledges_is_escalated(agency: Stack, database_url: str) -> None:
    behave(agency, acknowledge=False)
    code = submit(agency, birth_registration("silent@example.vn"))
    escalations_url = f"{agency.url('routing')}/v1/escalations"

    def escalated() -> dict[str, Any] | None:
        listed = httpx.get(
            escalations_url,
            params={"agency_code": BIRTH_AGENCY},
            headers=as_operator(agency),
            timeout=5,
        )
        return next((e for e in listed.json() if e["dossier_code"] == code), None)

    escalation = eventually(escalated, 60)
    # Delivered once, then sent again twice (DELIVERY_ACK_MAX_REDELIVERIES=2), then escalated.
    assert escalation["redeliveries"] == 2
    assert escalation["escalated_at"] is not None
    [record] = received(agency, BIRTH_AGENCY, code)
    assert record["deliveries"] == 3
    assert record["acknowledged_at"] is None
    [row] = asyncio.run(transfer_rows(database_url, code))
    assert row["escalated"] is True
    assert row["status"] == "delivered"

    # A late acknowledgement still counts and takes it off the operators' list.
    ack_url = f"{agency.url('routing')}/v1/transfers/{row['transfer_id']}/acknowledgement"
    holder = as_agency(agency, BIRTH_AGENCY)
    other = httpx.post(ack_url, headers=as_agency(agency, "000.23.05.H22"))
    assert other.status_code == 403, other.text
    ack = httpx.post(ack_url, headers=holder)
    assert ack.status_code == 200, ack.text
    assert ack.json()["replayed"] is False
    again = httpx.post(ack_url, headers=holder)
    assert again.json()["replayed"] is True
    assert escalated() is None
    unknown = httpx.post(
        f"{agency.url('routing')}/v1/transfers/nope/acknowledgement", headers=holder
    )
    assert unknown.status_code == 404
    assert unknown.headers["content-type"] == "application/problem+json"
