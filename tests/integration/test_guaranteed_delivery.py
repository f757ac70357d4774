"""Transfers to a failing agency: retried until it recovers, dead-lettered when it never
does or refuses, and replayed by an operator exactly once."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from devstack.stack import Stack
from tests.support.flows import (
    agency_transfers,
    as_operator,
    eventually,
    submit,
    wait_completed,
)

AGENCY = "000.21.31.H22"  # the commune justice office: the one step of HT.KS


def birth_registration(email: str) -> dict[str, Any]:
    return {
        "procedure_code": "HT.KS",
        "applicant": {"personal_id": "001090012345", "full_name": "Nguyễn Thị Lan", "email": email},
        "form_data": {
            "child_full_name": "Trần Minh Khôi",
            "child_birth_date": "2026-11-01",
            "child_gender": "Nam",
            "mother_full_name": "Nguyễn Thị Lan",
        },
    }


def behave(stack: Stack, **behaviour: Any) -> None:
    url = f"{stack.url('sandbox')}/agencies/{AGENCY}/behaviour"
    httpx.put(url, json=behaviour, timeout=5).raise_for_status()


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
