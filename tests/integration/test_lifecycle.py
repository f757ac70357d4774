"""The dossier lifecycle on the real stack: a supplement round, a refusal, and deadlines
that survive routing being killed."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from core.calendar import VIETNAM
from devstack.kafka import KafkaBroker
from devstack.stack import Stack
from tests.conftest import TOPIC
from tests.support.agencies import behave, birth_registration
from tests.support.flows import (
    DESK,
    agency_transfers,
    as_agency,
    as_operator,
    chain_dossier,
    eventually,
    mails_to,
    submit,
    wait_completed,
)
from tests.support.kafka import Record, read_topic

JUSTICE, POLICE = "000.21.31.H22", "000.22.31.H22"
OVERDUE = b"vn.gov.dossier.overdue.v1"


@pytest.fixture
def slow_justice(stack: Stack) -> Iterator[Stack]:
    """The justice office takes its time, so the test reports its outcomes in its place."""
    behave(stack, JUSTICE, delay_s=120)
    yield stack
    behave(stack, JUSTICE)


def journey(stack: Stack, code: str) -> dict[str, Any] | None:
    answer = httpx.get(
        f"{stack.url('routing')}/v1/dossiers/{code}/journey",
        headers=as_operator(stack),
        timeout=10,
    )
    if answer.status_code == 404:
        return None
    answer.raise_for_status()
    body: dict[str, Any] = answer.json()
    return body


def received_by(stack: Stack, agency: str, code: str) -> list[dict[str, Any]]:
    return [t for t in agency_transfers(stack, agency) if t["dossier_code"] == code]


def outcome(stack: Stack, transfer_id: str, **body: Any) -> dict[str, Any]:
    """Reported as the justice office, which holds the steps these tests report on."""
    answer = httpx.post(
        f"{stack.url('routing')}/v1/transfers/{transfer_id}/outcome",
        json=body,
        headers=as_agency(stack, JUSTICE),
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def test_supplement_round_then_done_completes(slow_justice: Stack) -> None:
    stack = slow_justice
    code = submit(stack, chain_dossier("supplement@example.vn"))
    [first] = eventually(lambda: received_by(stack, JUSTICE, code))
    transfer_id = first["transfer_id"]
    outcome(stack, transfer_id, outcome="supplement", reason="Thiếu bản sao giấy chứng sinh")
    paused = eventually(lambda: (j := journey(stack, code)) and j["status"] == 5 and j)
    assert paused["clock_stopped_since"] is not None

    answer = httpx.post(
        f"{stack.url('routing')}/v1/dossiers/{code}/supplements",
        json={"documents": [{"name": "Giấy chứng sinh", "url": "https://dvc.example/gcs.pdf"}]},
        headers=as_agency(stack, DESK),
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    # Delivered again to the agency that asked, under the next round's idempotency key.
    deliveries = eventually(lambda: len(r := received_by(stack, JUSTICE, code)) == 2 and r)
    assert {d["transfer_id"] for d in deliveries} == {transfer_id, f"{transfer_id}/1"}

    outcome(
        stack, transfer_id, outcome="done", documents=[{"name": "Trích lục", "reference": "KS-1"}]
    )
    view = wait_completed(stack, code)
    assert [s["status"] for s in view["steps"]] == ["completed"] * 3
    final = eventually(lambda: (j := journey(stack, code)) and j["status"] == 9 and j)
    assert [h["status"] for h in final["history"]] == [2, 4, 5, 4, 9]
    assert final["steps"][0]["round"] == 1
    assert final["steps"][0]["waiting_s"]["citizen"] > 0
    assert len(received_by(stack, POLICE, code)) == 1


def test_refused_dossier_ends_with_status_3(slow_justice: Stack) -> None:
    stack = slow_justice
    code = submit(stack, chain_dossier("refused@example.vn"))
    [first] = eventually(lambda: received_by(stack, JUSTICE, code))
    answer = outcome(stack, first["transfer_id"], outcome="refused", reason="Sai thẩm quyền")
    assert answer["status"] == "refused"
    final = journey(stack, code)
    assert final is not None
    assert final["status"] == 3
    assert final["history"][-1]["reason"] == "Sai thẩm quyền"
    assert [s["status"] for s in final["steps"]] == ["refused"]
    assert received_by(stack, POLICE, code) == []


def overdue_event_ids(kafka: KafkaBroker, codes: list[str]) -> dict[str, set[bytes]]:
    """Ids of the DossierOverdue events on the topic per dossier, once each has one and the
    topic has been read to its end."""
    wanted = {code.encode() for code in codes}

    def overdue(record: Record) -> bool:
        return record.key in wanted and dict(record.headers).get("ce_type") == OVERDUE

    def each_has_one(kept: list[Record], caught_up: bool) -> bool:
        return caught_up and {r.key for r in kept} == wanted

    records = asyncio.run(read_topic(kafka.bootstrap_servers, TOPIC, overdue, each_has_one))
    found: dict[str, set[bytes]] = {code: set() for code in codes}
    for record in records:
        found[(record.key or b"").decode()].add(dict(record.headers)["ce_id"])
    return found


def test_deadlines_survive_routing_killed(slow_justice: Stack, kafka: KafkaBroker) -> None:
    """HT.KS falls due 6 s after routing takes it in (tests/conftest.py)."""
    stack = slow_justice
    before = submit(stack, birth_registration("deadline-a@example.vn"))
    taken = eventually(lambda: journey(stack, before))
    due = datetime.fromisoformat(taken["appointment_at"])
    stack.stop_service("routing", signal.SIGKILL)
    # The first deadline passes while routing is dead; the second is armed after restart.
    while (left := (due - datetime.now(UTC)).total_seconds()) > -0.5:
        time.sleep(left + 0.5)
    after = submit(stack, birth_registration("deadline-b@example.vn"))
    stack.start_service("routing")
    stack.wait_ready("routing")

    for code in (before, after):
        late = eventually(lambda c=code: (j := journey(stack, c)) and j["apologies"] and j, 60)
        [apology] = late["apologies"]
        assert late["overdue_at"] is not None
        assert apology["agency_code"] == JUSTICE
        assert apology["new_due_at"] > apology["due_at"]
    ranking = httpx.get(
        f"{stack.url('routing')}/v1/agencies/overdue", headers=as_operator(stack), timeout=10
    ).json()
    assert any(r["agency_code"] == JUSTICE and r["overdue"] >= 2 for r in ranking)
    # Exactly once: one apology and one event each (the outbox may republish an event after
    # a crash, with the same id); nothing fires again before the new appointments.
    events = overdue_event_ids(kafka, [before, after])
    assert {code: len(ids) for code, ids in events.items()} == {before: 1, after: 1}
    for code in (before, after):
        assert len(journey(stack, code)["apologies"]) == 1  # type: ignore[index]

    # Notify turned each DossierOverdue into the citizen's apology (form 04), once.
    for code, address in ((before, "deadline-a@example.vn"), (after, "deadline-b@example.vn")):
        [apology] = journey(stack, code)["apologies"]  # type: ignore[index]
        new_date = datetime.fromisoformat(apology["new_due_at"]).astimezone(VIETNAM)
        letters = eventually(lambda a=address: apology_letters(stack, a) or None, 60)
        [letter] = letters
        assert letter["subject"].endswith(code)
        assert f"Lý do: {apology['reason']}." in letter["text"]
        assert f"trả kết quả là ngày {new_date:%d/%m/%Y}" in letter["text"]


def apology_letters(stack: Stack, address: str) -> list[dict[str, Any]]:
    return [m for m in mails_to(stack, address) if m["subject"].startswith("Phiếu xin lỗi")]
