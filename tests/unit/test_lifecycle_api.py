"""Routing's lifecycle over HTTP on SQLite with a test clock: agency outcomes, the citizen's
supplement, the timeline, overdue agencies and a seeded month of statistics."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from core.auth import TokenVerifier
from core.calendar import VIETNAM
from core.events import new_event
from core.problems import install_problem_handlers
from gateway.v1 import dossier_pb2, events_pb2
from services.routing import api, statistics
from services.routing.deps import install
from tests.support.lifecycle import Lifecycle
from tests.support.tokens import AUDIENCE, ISSUER, TestIssuer

DESK, JUSTICE = "000.00.01.H22", "000.21.31.H22"
TOKENS = TestIssuer()
# The default caller: the justice office, which holds HT.KS's one step, with every scope
# these APIs ask for; reports on other agencies' steps carry those agencies' tokens.
ALL_SCOPES = "transfers:report dossiers:submit reports:read"


def at(*args: int) -> datetime:
    return datetime(*args, tzinfo=VIETNAM)


@pytest.fixture
async def life(tmp_path: Path) -> AsyncIterator[Lifecycle]:
    lifecycle = await Lifecycle.open(
        f"sqlite+aiosqlite:///{tmp_path / 'routing.db'}", at(2026, 11, 20, 10, 0)
    )
    yield lifecycle
    await lifecycle.close()


@pytest.fixture
async def http(life: Lifecycle) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    install_problem_handlers(app)
    install(app, life.deps)
    app.state.token_verifier = TokenVerifier(
        issuer=ISSUER, audience=AUDIENCE, static_jwks=TOKENS.jwks
    )
    api.include(app)
    transport = httpx.ASGITransport(app=app)
    headers = TOKENS.headers(JUSTICE, ALL_SCOPES)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://routing", headers=headers
    ) as client:
        yield client


async def report(
    http: httpx.AsyncClient, life: Lifecycle, code: str, **body: Any
) -> httpx.Response:
    [step] = [s for s in await life.transfers(code) if s.status not in ("completed", "cancelled")][
        :1
    ]
    return await http.post(
        f"/v1/transfers/{step.transfer_id}/outcome",
        json=body,
        headers=TOKENS.headers(step.agency_code, ALL_SCOPES),
    )


DONE = {"outcome": "done", "documents": [{"name": "Giấy khai sinh", "url": "https://kq.example/1"}]}


@pytest.mark.parametrize(
    "body",
    [
        {"outcome": "supplement"},
        {"outcome": "refused", "reason": "  "},
        {
            "outcome": "refused",
            "reason": "Sai thẩm quyền",
            "documents": [{"name": "x", "url": "u"}],
        },
        {"outcome": "done", "documents": [{"name": "Giấy khai sinh"}]},
        {"outcome": "withdrawn", "reason": "?"},
    ],
)
async def test_bad_outcome_combinations_are_422_problems(
    http: httpx.AsyncClient, life: Lifecycle, body: dict[str, Any]
) -> None:
    code = await life.submit("HT.KS")
    answer = await report(http, life, code, **body)
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"] == "application/problem+json"


async def test_supplement_then_done_with_replays_and_conflicts(
    http: httpx.AsyncClient, life: Lifecycle
) -> None:
    code = await life.submit("HT.KS")  # Friday 20 November, 10:00
    [step] = await life.transfers(code)
    await life.delivered(step.transfer_id, at(2026, 11, 20, 10, 5))
    url = f"/v1/transfers/{step.transfer_id}/outcome"
    asked = {"outcome": "supplement", "reason": "Thiếu giấy chứng sinh"}
    life.clock.set(at(2026, 11, 20, 11, 0))
    assert (await http.post(url, json=asked)).json()["replayed"] is False
    again = await http.post(url, json=asked)
    assert (again.status_code, again.json()["replayed"]) == (200, True)
    conflict = await http.post(url, json=DONE)
    assert conflict.status_code == 409
    assert conflict.json()["type"] == "/problems/transfer-already-reported"

    early = await http.post(f"/v1/dossiers/{code}/result-returned")
    assert early.status_code == 409
    assert early.json()["current_status"] == 5
    assert early.json()["requested_status"] == 10

    documents = [{"name": "Giấy chứng sinh", "reference": "GCS-2026-1"}]
    life.clock.set(at(2026, 11, 20, 15, 0))
    resumed = await http.post(f"/v1/dossiers/{code}/supplements", json={"documents": documents})
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["status"] == "processing"
    twice = await http.post(f"/v1/dossiers/{code}/supplements", json={"documents": documents})
    assert twice.status_code == 409

    await life.delivered(step.transfer_id, at(2026, 11, 20, 15, 30))  # the second round
    life.clock.set(at(2026, 11, 20, 16, 0))
    done = await http.post(url, json=DONE)
    assert done.json() == {
        "transfer_id": step.transfer_id,
        "status": "completed",
        "replayed": False,
    }
    assert (await http.post(url, json=DONE)).json()["replayed"] is True
    returned = await http.post(f"/v1/dossiers/{code}/result-returned")
    assert returned.json()["status"] == "result_returned"

    journey = (await http.get(f"/v1/dossiers/{code}/journey")).json()
    assert [h["status"] for h in journey["history"]] == [2, 4, 5, 4, 9, 10]
    assert journey["history"][3]["details"]["documents"] == documents
    assert journey["status"] == 10
    [timeline_step] = journey["steps"]
    assert timeline_step["round"] == 1
    assert timeline_step["outcome"]["documents"] == DONE["documents"]
    # Six hours in all: delivery 5 + 30 minutes, the citizen 11:00-15:00, the agency the rest.
    assert timeline_step["waiting_s"] == {
        "delivery": 35 * 60,
        "citizen": 4 * 3600,
        "agency": 85 * 60,
    }
    assert journey["waiting_s"]["citizen"] == 4 * 3600


async def test_refusal_ends_the_journey_with_status_3(
    http: httpx.AsyncClient, life: Lifecycle
) -> None:
    code = await life.submit("LT.KT-XTT-MTP")
    assert (await report(http, life, code, **DONE)).status_code == 200
    # Stage 2 runs two agencies in parallel; one refuses, the other's step is cancelled.
    refused = await report(http, life, code, outcome="refused", reason="Không đúng thẩm quyền")
    assert refused.json()["status"] == "refused"
    assert [s.status for s in await life.transfers(code)] == ["completed", "refused", "cancelled"]
    journey = (await http.get(f"/v1/dossiers/{code}/journey")).json()
    assert journey["status"] == 3
    assert journey["history"][-1]["reason"] == "Không đúng thẩm quyền"
    assert (await life.dossier(code)).next_deadline_at is None
    cancelled = (await life.transfers(code))[2]
    late = await http.post(
        f"/v1/transfers/{cancelled.transfer_id}/outcome",
        json=DONE,
        headers=TOKENS.headers(cancelled.agency_code, ALL_SCOPES),
    )
    assert late.status_code == 409


async def test_overdue_agencies_and_apology_in_the_timeline(
    http: httpx.AsyncClient, life: Lifecycle
) -> None:
    # Friday 20 November 2026: HT.KS is due Monday 23rd, the 3-procedure chain later.
    late_births = [await life.submit("HT.KS") for _ in range(3)]
    chain = await life.submit("LT.KS-TT-BHYT")
    await report(http, life, late_births[2], **DONE)
    life.clock.set(at(2026, 11, 23, 17, 0))
    assert await life.scheduler.fire_due() >= 2
    ranking = (await http.get("/v1/agencies/overdue")).json()
    assert [(r["agency_code"], r["overdue"]) for r in ranking] == [(JUSTICE, 2)]
    journey = (await http.get(f"/v1/dossiers/{late_births[0]}/journey")).json()
    [apology] = journey["apologies"]
    assert apology["agency_code"] == JUSTICE
    # Two working days later: Tuesday 24th is Vietnam Cultural Day, so Thursday 26th, 17:00.
    assert apology["new_due_at"].startswith("2026-11-26T10:00")
    assert journey["steps"][0]["overdue_at"] is not None
    # The chain's first step is late (its agency is flagged), the dossier is not (yet).
    chain_journey = (await http.get(f"/v1/dossiers/{chain}/journey")).json()
    assert chain_journey["apologies"] == []
    assert chain_journey["overdue_at"] is None
    assert chain_journey["steps"][0]["overdue_at"] is not None


async def test_monthly_statistics_match_a_hand_counted_month(
    http: httpx.AsyncClient, life: Lifecycle
) -> None:
    clock = life.clock

    async def submit(when: datetime, desk: str = JUSTICE) -> str:
        clock.set(when)
        return await life.submit("HT.KS", desk)

    async def outcome(when: datetime, code: str, **body: Any) -> None:
        clock.set(when)
        assert (await report(http, life, code, **body)).status_code == 200

    async def fire(when: datetime) -> None:
        clock.set(when)
        await life.scheduler.fire_due()

    november = await submit(at(2026, 11, 20, 10, 0))  # done on time in November
    await outcome(at(2026, 11, 23, 9, 0), november, **DONE)
    d1 = await submit(at(2026, 11, 30, 10, 0))  # received in November, done on time 1 Dec
    await outcome(at(2026, 12, 1, 9, 0), d1, **DONE)
    d2, d3, d4 = [await submit(at(2026, 12, 2, 10, 0)) for _ in range(3)]  # due 3 Dec 17:00
    d7 = await submit(at(2026, 12, 2, 10, 0), DESK)
    await outcome(at(2026, 12, 2, 15, 0), d4, outcome="refused", reason="Hồ sơ giả mạo")
    await outcome(at(2026, 12, 3, 9, 0), d7, outcome="supplement", reason="Thiếu giấy tờ")
    await outcome(at(2026, 12, 3, 16, 0), d2, **DONE)
    await fire(at(2026, 12, 3, 17, 0))  # d3 overdue; d7's clock is stopped
    await outcome(at(2026, 12, 4, 10, 0), d3, **DONE)  # late
    await submit(at(2026, 12, 30, 10, 0))  # d5: due 31 Dec 17:00, still open on 1 January
    await submit(at(2026, 12, 31, 10, 0))  # d6: due 4 January 2027
    await fire(at(2026, 12, 31, 17, 0))  # d5 overdue
    await submit(at(2027, 1, 4, 10, 0), DESK)  # another month

    answer = await http.get("/v1/statistics", params={"month": "2026-12"})
    assert answer.status_code == 200
    assert answer.json()["rows"] == [
        # Desk: d7 received and waiting for its supplement.
        {"agency_code": DESK, "procedure_code": "HT.KS", "received": 1, "completed_on_time": 0,
         "completed_late": 0, "in_progress": 1, "overdue": 0, "average_hold_s": None},
        # Justice: d2-d6 received; d1, d2 on time; d3 late; d5, d6 open, d5 overdue. Held
        # until decided: d1 23 h, d2 30 h, d3 48 h.
        {"agency_code": JUSTICE, "procedure_code": "HT.KS", "received": 5, "completed_on_time": 2,
         "completed_late": 1, "in_progress": 2, "overdue": 1, "average_hold_s": 101 * 3600 // 3},
    ]  # fmt: skip
    november_rows = (await http.get("/v1/statistics", params={"month": "2026-11"})).json()["rows"]
    assert november_rows == [
        {"agency_code": JUSTICE, "procedure_code": "HT.KS", "received": 2, "completed_on_time": 1,
         "completed_late": 0, "in_progress": 1, "overdue": 0, "average_hold_s": 71 * 3600},
    ]  # fmt: skip

    # Per handling agency: every HT.KS step is the justice office's, d7's included. Routed in
    # December: d2-d7 (6); on time d1, d2; late d3; d4 refused; open d5, d6, d7 (d7 waits
    # for the citizen, so its step never went overdue); overdue d5.
    by_step = await http.get("/v1/statistics", params={"month": "2026-12", "by": "step"})
    assert by_step.json()["rows"] == [
        {"agency_code": JUSTICE, "procedure_code": "HT.KS", "received": 6, "completed_on_time": 2,
         "completed_late": 1, "in_progress": 3, "overdue": 1, "average_hold_s": 101 * 3600 // 3},
    ]  # fmt: skip

    as_csv = await http.get("/v1/statistics", params={"month": "2026-12", "format": "csv"})
    assert as_csv.headers["content-type"] == "text/csv; charset=utf-8"
    rows = list(csv.reader(io.StringIO(as_csv.content.decode("utf-8"))))
    assert rows[0] == list(statistics.COLUMNS)
    assert rows[2] == [JUSTICE, "HT.KS", "5", "2", "1", "2", "1", "121200"]
    assert rows[1][-1] == ""  # nothing decided at the desk: no hold time to average
    bad = await http.get("/v1/statistics", params={"month": "2026-13"})
    assert bad.status_code == 422


async def test_a_batch_is_taken_in_once_with_every_row_and_event(life: Lifecycle) -> None:
    submitted = []
    for number, procedure in enumerate(["HT.KS", "LT.KT-XTT-MTP", "LT.KS-TT-BHYT"]):
        dossier = dossier_pb2.Dossier(
            code=f"B-{number}", procedure_code=procedure, receiving_agency_code=DESK
        )
        dossier.received_at.FromDatetime(life.clock.now())
        dossier.due_at.FromDatetime(at(2026, 11, 30, 17, 0))
        message = events_pb2.DossierSubmitted(dossier=dossier)
        submitted.append(new_event(message, source="/test", dossier_code=dossier.code))
    await life.journeys.take_in(submitted)
    await life.journeys.take_in(submitted)  # redelivered by Kafka: changes nothing

    assert [len(await life.transfers(f"B-{n}")) for n in range(3)] == [1, 1, 1]
    assert [await life.statuses(f"B-{n}") for n in range(3)] == [[2, 4]] * 3
    routed = await life.events(events_pb2.DossierRouted)
    assert [r.dossier_code for r in routed] == ["B-0", "B-1", "B-2"]
    # The next deadline is the earliest of the dossier's and its first step's.
    first = await life.dossier("B-1")
    assert first.next_deadline_at == at(2026, 11, 23, 17, 0)
