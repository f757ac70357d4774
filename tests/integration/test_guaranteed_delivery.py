"""Transfers to a failing agency: retried until it recovers (5xx, timeouts), dead-lettered
when it never does (connection refused) or refuses, in the table and as an event, and
replayed by an operator exactly once."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from devstack.kafka import KafkaBroker
from devstack.stack import Stack
from gateway.v1 import events_pb2
from sandbox.runner import bind_socket
from tests.conftest import TOPIC
from tests.support.agencies import behave, birth_registration, events_of, transfer_rows
from tests.support.flows import (
    agency_transfers,
    as_operator,
    eventually,
    submit,
    wait_completed,
)

AGENCY = "000.21.31.H22"  # the commune justice office: the one step of HT.KS


@pytest.fixture
def agency(stack: Stack) -> Iterator[Stack]:
    yield stack
    behave(stack, fail_next=0)


def dead_letter_of(stack: Stack, code: str) -> dict[str, Any] | None:
    letters = httpx.get(
        f"{stack.url('routing')}/v1/dead-letters", headers=as_operator(stack), timeout=5
    ).json()
    return next((d for d in letters if d["dossier_code"] == code), None)


def received(stack: Stack, code: str) -> list[dict[str, Any]]:
    return [t for t in agency_transfers(stack, AGENCY) if t["dossier_code"] == code]


def test_agency_down_for_a_while_gets_the_dossier_once_it_recovers(agency: Stack) -> None:
    behave(agency, fail_next=2, fail_status=503)
    code = submit(agency, birth_registration("retry@example.vn"))
    view = wait_completed(agency, code)
    assert view["steps"][0]["attempts"] == 3
    assert len(received(agency, code)) == 1


def test_refusal_is_dead_lettered_at_once_with_its_reason(agency: Stack) -> None:
    behave(agency, fail_next=1, fail_status=400)
    code = submit(agency, birth_registration("refused@example.vn"))
    letter = eventually(lambda: dead_letter_of(agency, code))
    assert letter["attempts"] == 1  # a 4xx is not retried
    assert letter["reason"] == "HTTP 400"
    assert received(agency, code) == []


def test_agency_that_never_recovers_is_dead_lettered_then_replayed_once(agency: Stack) -> None:
    behave(agency, fail_next=1000, fail_status=503)
    code = submit(agency, birth_registration("never@example.vn"))
    letter = eventually(lambda: dead_letter_of(agency, code), timeout=30)
    assert letter["attempts"] == 4
    assert letter["reason"] == "HTTP 503"

    behave(agency, fail_next=0)
    replay_url = f"{agency.url('routing')}/v1/dead-letters/{letter['transfer_id']}/replay"
    replay = httpx.post(replay_url, headers=as_operator(agency))
    assert replay.status_code == 200, replay.text
    assert replay.json()["replays"] == 1
    view = wait_completed(agency, code)
    assert view["steps"][0]["status"] == "completed"
    assert len(received(agency, code)) == 1
    assert received(agency, code)[0]["deliveries"] == 1
    assert dead_letter_of(agency, code) is None

    again = httpx.post(replay_url, headers=as_operator(agency))
    assert again.status_code == 409
    assert again.headers["content-type"] == "application/problem+json"


def test_agency_stuck_then_failing_gets_the_dossier_once_it_recovers(agency: Stack) -> None:
    # First attempt: no answer within DELIVERY_TIMEOUT_S (3 s); second: 503; third: taken.
    behave(agency, hang_next=1, hang_s=4, fail_next=1, fail_status=503)
    code = submit(agency, birth_registration("stuck@example.vn"))
    view = wait_completed(agency, code)
    assert view["steps"][0]["attempts"] == 3
    [record] = received(agency, code)
    assert record["deliveries"] == 1


@pytest.fixture
def catalogue_file(stack: Stack) -> Iterator[Path]:
    """The agencies file routing reads (a copy per test session), restored afterwards."""
    path = stack.var_dir / "catalogue" / "agencies.yaml"
    original = path.read_text()
    yield path
    path.write_text(original)
    reloaded = httpx.post(
        f"{stack.url('routing')}/v1/catalogue/reload", headers=as_operator(stack), timeout=10
    )
    assert reloaded.status_code == 200, reloaded.text


def test_agency_endpoint_down_is_dead_lettered_as_an_event_and_replayed_once(
    agency: Stack, catalogue_file: Path, kafka: KafkaBroker, database_url: str
) -> None:
    routing = agency.url("routing")
    # Bound but not listening: every connection is refused, as when the agency is down.
    closed = bind_socket("127.0.0.1", 0)
    try:
        port = closed.getsockname()[1]
        original = catalogue_file.read_text()
        down = original.replace(
            f"${{DEMO_AGENCY_BASE_URL}}/agencies/{AGENCY}/transfers",
            f"http://127.0.0.1:{port}/agencies/{AGENCY}/transfers",
        )
        assert down != original
        catalogue_file.write_text(down)
        assert httpx.post(
            f"{routing}/v1/catalogue/reload", headers=as_operator(agency), timeout=10
        ).json()["changed"]

        code = submit(agency, birth_registration("down@example.vn"))
        letter = eventually(lambda: dead_letter_of(agency, code), 30)
    finally:
        closed.close()
    assert letter["attempts"] == 4
    assert "Cannot connect" in letter["reason"]
    [row] = asyncio.run(transfer_rows(database_url, code))
    assert row["status"] == "dead_lettered"
    [event] = asyncio.run(
        events_of(kafka.bootstrap_servers, TOPIC, code, "vn.gov.transfer.dead_lettered.v1")
    )
    assert isinstance(event.data, events_pb2.TransferDeadLettered)
    assert (event.data.transfer_id, event.data.attempts) == (letter["transfer_id"], 4)
    assert event.data.reason == letter["reason"]

    # The agency is back where the catalogue says; an operator replays the transfer.
    catalogue_file.write_text(original)
    assert httpx.post(
        f"{routing}/v1/catalogue/reload", headers=as_operator(agency), timeout=10
    ).json()["changed"]
    replay = httpx.post(
        f"{routing}/v1/dead-letters/{letter['transfer_id']}/replay", headers=as_operator(agency)
    )
    assert replay.status_code == 200, replay.text
    wait_completed(agency, code)
    [record] = received(agency, code)
    assert record["deliveries"] == 1
