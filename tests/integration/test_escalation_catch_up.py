"""An escalated transfer is not the end of it: once its agency is back, the stack catches
up by itself at the escalated pace, and an operator can also send it again at once
(issue F, item 4)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from devstack.stack import Stack
from tests.support.agencies import BIRTH_AGENCY, behave, birth_registration
from tests.support.flows import as_agency, as_operator, eventually, submit, wait_completed


@pytest.fixture
def agency(stack: Stack) -> Iterator[Stack]:
    yield stack
    behave(stack, fail_next=0)


def escalation_of(stack: Stack, code: str) -> dict[str, Any] | None:
    listed = httpx.get(
        f"{stack.url('routing')}/v1/escalations",
        params={"agency_code": BIRTH_AGENCY},
        headers=as_operator(stack),
        timeout=5,
    )
    return next((e for e in listed.json() if e["dossier_code"] == code), None)


def test_an_agency_back_from_silence_gets_its_escalated_transfer_again(agency: Stack) -> None:
    behave(agency, acknowledge=False)
    code = submit(agency, birth_registration("back-again@example.vn"))
    eventually(lambda: escalation_of(agency, code), 60)

    # The agency is back: without anyone's action the escalated transfer goes again
    # (DELIVERY_ESCALATED_REDELIVERY_S in the test stack), is acknowledged and reported.
    behave(agency, acknowledge=True)
    assert wait_completed(agency, code, timeout=90)["status"] == "completed"
    assert escalation_of(agency, code) is None


def test_an_operator_sends_an_escalated_transfer_again_at_once(agency: Stack) -> None:
    behave(agency, acknowledge=False)
    code = submit(agency, birth_registration("nudged@example.vn"))
    escalation = eventually(lambda: escalation_of(agency, code), 60)
    behave(agency, acknowledge=True)

    url = f"{agency.url('routing')}/v1/escalations/{escalation['transfer_id']}/redeliver"
    refused = httpx.post(url, headers=as_agency(agency, BIRTH_AGENCY), timeout=10)
    assert refused.status_code == 403
    nudged = httpx.post(url, headers=as_operator(agency), timeout=10)
    assert nudged.status_code == 200, nudged.text
    assert wait_completed(agency, code, timeout=30)["status"] == "completed"
    gone = httpx.post(url, headers=as_operator(agency), timeout=10)
    assert gone.status_code == 404
    assert gone.headers["content-type"] == "application/problem+json"
