"""One slow counterpart holds up no other (core/lanes.py), on the real stack: while the
birth registration office hangs on a transfer until routing's timeout, another agency's
transfer goes out at once; while one webhook receiver holds its callbacks open (a tarpit),
another subscription's callbacks arrive at once."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest

from devstack.kafka import KafkaBroker
from devstack.stack import Stack
from tests.support.agencies import behave, birth_registration, transfer_rows
from tests.support.flows import DESK, eventually, submit
from tests.support.notify import (
    callbacks_at,
    publish,
    submitted,
    subscribe,
    unsubscribe,
    webhook_receiver,
)

DISABILITY = "LT.XDKT-TCXH"  # its first step goes to an agency's Kafka inbox
# Routing's delivery timeout in the test stack (tests/conftest.py): how long a hung
# transfer held up every other one before lanes.
DELIVERY_TIMEOUT_S = 3.0
TARPIT_S = 8.0


@pytest.fixture
def hanging_birth_office(stack: Stack) -> Iterator[Stack]:
    # Two attempts in a row answered only after the client gave up: about 6 s stuck.
    behave(stack, hang_next=2, hang_s=DELIVERY_TIMEOUT_S + 1)
    yield stack
    behave(stack, hang_next=0)


def disability_claim() -> dict[str, object]:
    return {
        "procedure_code": DISABILITY,
        "applicant": {"personal_id": "001090012345", "full_name": "Lê Văn Bình"},
        "form_data": {
            "person_full_name": "Lê Văn Bình",
            "person_personal_id": "001090012345",
            "disability_description": "Khuyết tật vận động",
        },
    }


def test_a_hanging_agency_holds_up_no_other_agency(
    hanging_birth_office: Stack, database_url: str
) -> None:
    stack = hanging_birth_office
    birth = submit(stack, birth_registration("hung@example.vn"))
    # Its first delivery is out (claimed) and hanging.
    eventually(
        lambda: [r for r in asyncio.run(transfer_rows(database_url, birth)) if r["attempts"]]
    )

    started = datetime.now(UTC)
    other = submit(stack, disability_claim())
    [first, *_] = eventually(
        lambda: [r for r in asyncio.run(transfer_rows(database_url, other)) if r["delivered_at"]],
        timeout=30,
    )
    [hung] = asyncio.run(transfer_rows(database_url, birth))
    # Delivered long before the hung transfer's call could have timed out (the queue used to
    # wait for it: 2 to 3 s), and while the birth office still has not taken its transfer.
    taken_s = (first["delivered_at"] - started).total_seconds()
    assert taken_s < DELIVERY_TIMEOUT_S / 2, f"delivered {taken_s:.2f} s after submission"
    assert hung["delivered_at"] is None or hung["delivered_at"] > first["delivered_at"]


@pytest.fixture
def tarpit_and_prompt(stack: Stack) -> Iterator[tuple[str, str]]:
    """Two subscriptions of one agency: a receiver that holds each call open, and a prompt one."""
    tarpit, prompt = webhook_receiver(stack, "tarpit"), webhook_receiver(stack, "prompt")
    httpx.put(tarpit + "/behaviour", json={"delay_s": TARPIT_S}, timeout=10).raise_for_status()
    made = []
    for url in (tarpit, prompt):
        response = subscribe(stack, DESK, url, "vn.gov.dossier.submitted.v1")
        assert response.status_code == 201, response.text
        made.append(response.json()["id"])
    yield tarpit, prompt
    for subscription_id in made:
        unsubscribe(stack, DESK, subscription_id)
    httpx.put(tarpit + "/behaviour", json={}, timeout=10).raise_for_status()


def test_a_tarpit_webhook_receiver_holds_up_no_other_subscription(
    kafka: KafkaBroker, tarpit_and_prompt: tuple[str, str]
) -> None:
    tarpit, prompt = tarpit_and_prompt
    first, second = (f"T-lane-{uuid.uuid4().hex[:8]}" for _ in range(2))
    publish(kafka.bootstrap_servers, [submitted(first)])
    # The tarpit has the first callback and holds the call open.
    eventually(lambda: [c for c in callbacks_at(tarpit) if first in c["body"]], timeout=30)

    started = time.monotonic()
    publish(kafka.bootstrap_servers, [submitted(second)])
    eventually(lambda: [c for c in callbacks_at(prompt) if second in c["body"]], timeout=30)
    taken_s = time.monotonic() - started
    # Before lanes it waited for the tarpit's call (8 s) to end.
    assert taken_s < TARPIT_S / 2, f"called back {taken_s:.2f} s after the event"
