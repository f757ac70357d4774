"""Maintenance mode against the real stack. Routing and then intake are put into maintenance
while a desk keeps submitting dossiers. Intake answers 503 with Retry-After to submissions
and goes on answering reads; routing takes the dossiers in but delivers nothing; once both
leave maintenance every accepted dossier completes, each step delivered to its agency
exactly once (the sandbox agencies' ledger counts deliveries that took effect). Notify in
maintenance sends nothing, then every message once."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from devstack.stack import Stack
from tests.integration.test_dossier_journey import AGENCIES
from tests.support.agencies import birth_registration
from tests.support.flows import (
    DESK,
    agency_transfers,
    as_agency,
    as_operator,
    chain_dossier,
    dossier_view,
    eventually,
    mails_to,
    submit,
    wait_completed,
)

ATTEMPTS = 80


def switch(stack: Stack, service: str, on: bool, reason: str = "") -> dict[str, Any]:
    response = httpx.put(
        f"{stack.url(service)}/v1/maintenance",
        json={"on": on, "reason": reason},
        headers=as_operator(stack),
        timeout=10,
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def readiness(stack: Stack, service: str) -> httpx.Response:
    return httpx.get(f"{stack.url(service)}/health/ready", timeout=10)


def metric(stack: Stack, sample: str) -> float | None:
    text = httpx.get(f"{stack.url('routing')}/metrics/", timeout=10).text
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    return None


@dataclass
class Stream:
    """A desk submitting dossiers one after another, recording each answer."""

    stack: Stack
    accepted: list[tuple[float, str]] = field(default_factory=list)
    refused: list[httpx.Response] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        headers = as_agency(self.stack, DESK)
        with httpx.Client(timeout=30) as client:
            for n in range(ATTEMPTS):
                if self.stop.is_set():
                    return
                started = time.monotonic()
                body = chain_dossier(f"maintenance-{n}@example.vn")
                response = client.post(
                    self.stack.url("intake") + "/v1/dossiers", json=body, headers=headers
                )
                if response.status_code == 201:
                    self.accepted.append((started, response.json()["code"]))
                elif response.status_code == 503:
                    self.refused.append(response)
                else:
                    self.unexpected.append(f"{response.status_code} {response.text}")
                time.sleep(0.05)

    def codes_after(self, instant: float) -> list[str]:
        return [code for started, code in self.accepted if started > instant]


@pytest.fixture
def out_of_maintenance(stack: Stack) -> Iterator[Stack]:
    yield stack
    # The switch is kept in the database: leave none on for the next tests.
    for service in ("intake", "routing"):
        switch(stack, service, False)


def taken(stack: Stack, codes: set[str]) -> list[dict[str, Any]]:
    return [
        t | {"agency": agency}
        for agency in AGENCIES
        for t in agency_transfers(stack, agency)
        if t["dossier_code"] in codes
    ]


def test_maintenance_holds_work_and_loses_nothing(out_of_maintenance: Stack) -> None:
    stack = out_of_maintenance
    as_operator(stack)  # the operator's token at hand before the stream starts
    stream = Stream(stack)
    submitter = threading.Thread(target=stream.run, name="desk")
    submitter.start()
    try:
        eventually(lambda: len(stream.accepted) >= 8, timeout=60)
        routing_state = switch(stack, "routing", True, "agency systems upgrade")
        routing_on_at = time.monotonic()
        assert routing_state["on"] is True
        assert routing_state["changed_by"] == "gateway-operator"

        held_before = len(stream.accepted)
        eventually(lambda: len(stream.accepted) >= held_before + 8, timeout=60)
        switch(stack, "intake", True, "database upgrade")
        eventually(lambda: len(stream.refused) >= 5, timeout=60)

        # Reads go on in maintenance, and readiness says why nothing moves.
        code = stream.accepted[0][1]
        assert dossier_view(stack, code)["code"] == code
        ready = readiness(stack, "intake")
        assert ready.status_code == 200
        assert ready.json()["status"] == "maintenance"
        assert ready.json()["maintenance"]["reason"] == "database upgrade"
        assert readiness(stack, "routing").json()["status"] == "maintenance"

        switch(stack, "intake", False)
        resumed = len(stream.accepted)
        eventually(lambda: len(stream.accepted) >= resumed + 8, timeout=60)
    finally:
        stream.stop.set()
        submitter.join(timeout=60)

    assert stream.unexpected == []
    for refusal in stream.refused:
        assert refusal.headers["content-type"] == "application/problem+json"
        assert refusal.json()["type"] == "/problems/maintenance"
        assert int(refusal.headers["retry-after"]) > 0
    assert len(stream.accepted) >= 24, (len(stream.accepted), len(stream.refused))

    # Routing took the later dossiers in but delivered none of their steps.
    held = set(stream.codes_after(routing_on_at))
    assert len(held) >= 16, (len(held), len(stream.accepted), len(stream.refused))
    assert metric(stack, "gateway_maintenance") == 1.0
    eventually(lambda: (metric(stack, 'gateway_queue_depth{queue="delivery"}') or 0) > 0, 30)
    time.sleep(3)  # time enough to deliver, were anything delivering
    assert taken(stack, held) == []

    switch(stack, "routing", False)
    codes = [code for _, code in stream.accepted]
    for code in codes:
        wait_completed(stack, code, timeout=240)

    # 0 lost, 0 duplicated: each step of each dossier taken once, with one effect.
    records = taken(stack, set(codes))
    steps = Counter((t["agency"], t["dossier_code"], t["step_index"]) for t in records)
    assert len(steps) == len(codes) * len(AGENCIES)
    assert set(steps.values()) == {1}
    assert {t["effects"] for t in records} == {1}


@pytest.fixture
def notify_back(stack: Stack) -> Iterator[Stack]:
    yield stack
    switch(stack, "notify", False)


def test_notify_in_maintenance_sends_nothing_then_everything_once(notify_back: Stack) -> None:
    stack = notify_back
    email = "maintenance-notify@example.vn"
    switch(stack, "notify", True, "SMTP relay move")
    code = submit(stack, birth_registration(email))
    # The dossier goes its way meanwhile; notify records what it owes but sends nothing.
    wait_completed(stack, code)
    time.sleep(3)  # time enough to send, were anything sending
    assert mails_to(stack, email) == []

    switch(stack, "notify", False)
    eventually(lambda: len(mails_to(stack, email)) >= 2, timeout=60)
    time.sleep(3)  # any second copy would have come by now
    sent = mails_to(stack, email)
    copies = Counter((m["subject"], m["text"]) for m in sent)
    assert set(copies.values()) == {1}, copies
