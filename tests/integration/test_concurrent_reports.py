"""Concurrent reports of one step on the real stack (PostgreSQL): the step is decided once,
every identical report answers 200, a contradicting one 409, and one completion reaches the
topic (hence one email, SMS and webhook per channel)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from devstack.kafka import KafkaBroker
from devstack.stack import Stack
from tests.support.agencies import BIRTH_AGENCY, behave, birth_registration
from tests.support.flows import agency_transfers, as_agency, eventually, submit
from tests.support.kafka import TOPIC, Record, keyed, read_topic

RACERS = 20
COMPLETED = "vn.gov.dossier.completed.v1"
DONE = {"outcome": "done", "documents": [{"name": "Trích lục khai sinh", "reference": "KS-9"}]}


@pytest.fixture
def slow_justice(stack: Stack) -> Iterator[Stack]:
    """The justice office takes its time, so the test reports in its place."""
    behave(stack, BIRTH_AGENCY, delay_s=120)
    yield stack
    behave(stack, BIRTH_AGENCY)


async def race(url: str, headers: dict[str, str], bodies: list[dict[str, Any]]) -> list[Any]:
    async with httpx.AsyncClient(headers=headers, timeout=60) as client:
        return list(await asyncio.gather(*(client.post(url, json=body) for body in bodies)))


def test_concurrent_reports_of_the_last_step_complete_the_dossier_once(
    slow_justice: Stack, kafka: KafkaBroker
) -> None:
    stack = slow_justice
    code = submit(stack, birth_registration("race@example.vn"))  # one step: the last
    [transfer] = eventually(
        lambda: [t for t in agency_transfers(stack, BIRTH_AGENCY) if t["dossier_code"] == code]
    )
    url = f"{stack.url('routing')}/v1/transfers/{transfer['transfer_id']}/outcome"
    headers = as_agency(stack, BIRTH_AGENCY)

    answers = asyncio.run(race(url, headers, [DONE] * RACERS))
    assert [a.status_code for a in answers] == [200] * RACERS, [a.text for a in answers]
    assert Counter(a.json()["replayed"] for a in answers) == {False: 1, True: RACERS - 1}
    conflict = httpx.post(url, json={"outcome": "refused", "reason": "Sai"}, headers=headers)
    assert conflict.status_code == 409, conflict.text
    assert conflict.json()["type"] == "/problems/transfer-already-reported"

    # A second completion would have been committed before the last answer; the relay
    # publishes it within moments: give it those before reading the topic to its end.
    time.sleep(2)

    def settled(kept: list[Record], caught_up: bool) -> bool:
        return caught_up and len(kept) >= 1

    completions = asyncio.run(
        read_topic(kafka.bootstrap_servers, TOPIC, keyed(code, COMPLETED), settled)
    )
    assert len(completions) == 1
