"""Concurrent reports against routing on a SQLite file: each state transition is won by
exactly one writer, the others answer as replays (200) or conflicts (409), never 500.

SQLite ignores SELECT ... FOR UPDATE and pysqlite begins a transaction only at the first
write, so a read-then-write lets every concurrent request pass its check: these tests fire
the requests together, through the real ASGI app, on real aiosqlite connections."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from core.auth import TokenVerifier
from core.calendar import VIETNAM
from core.problems import install_problem_handlers
from gateway.v1 import events_pb2
from services.routing import api
from services.routing.deps import install
from tests.support.lifecycle import Lifecycle
from tests.support.tokens import AUDIENCE, ISSUER, TestIssuer

TOKENS = TestIssuer()
SCOPES = "transfers:report dossiers:submit"
RACERS = 20
DONE = {"outcome": "done", "documents": [{"name": "Giấy khai sinh", "url": "https://kq.example/1"}]}
REFUSED = {"outcome": "refused", "reason": "Sai thẩm quyền"}


@pytest.fixture
async def life(tmp_path: Path) -> AsyncIterator[Lifecycle]:
    lifecycle = await Lifecycle.open(
        f"sqlite+aiosqlite:///{tmp_path / 'routing.db'}", datetime(2026, 11, 20, 10, tzinfo=VIETNAM)
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
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://routing") as client:
        yield client


async def together(
    http: httpx.AsyncClient, url: str, agency: str, bodies: list[dict[str, Any] | None]
) -> list[httpx.Response]:
    headers = TOKENS.headers(agency, SCOPES)
    return list(
        await asyncio.gather(*(http.post(url, json=body, headers=headers) for body in bodies))
    )


async def test_concurrent_reports_of_the_last_step_decide_the_dossier_once(
    http: httpx.AsyncClient, life: Lifecycle
) -> None:
    code = await life.submit("HT.KS")  # one step: its completion decides the dossier
    [step] = await life.transfers(code)
    url = f"/v1/transfers/{step.transfer_id}/outcome"
    answers = await together(http, url, step.agency_code, [DONE] * RACERS)
    assert [a.status_code for a in answers] == [200] * RACERS, [a.text for a in answers]
    assert Counter(a.json()["replayed"] for a in answers) == {True: RACERS - 1, False: 1}
    assert len(await life.events(events_pb2.DossierCompleted, code)) == 1
    assert len(await life.events(events_pb2.StepCompleted, code)) == 1
    assert await life.statuses(code) == [2, 4, 9]


async def test_concurrent_reports_of_a_middle_step_route_the_next_once(
    http: httpx.AsyncClient, life: Lifecycle
) -> None:
    code = await life.submit("LT.KS-TT-BHYT")
    [first] = await life.transfers(code)
    url = f"/v1/transfers/{first.transfer_id}/outcome"
    answers = await together(http, url, first.agency_code, [DONE] * RACERS)
    # Before: the losers inserted the next step again and hit its unique key (500).
    assert [a.status_code for a in answers] == [200] * RACERS, [a.text for a in answers]
    routed = await life.events(events_pb2.DossierRouted, code)
    assert [r.step_index for r in routed] == [0, 1]


async def test_conflicting_concurrent_reports_decide_one_way_only(
    http: httpx.AsyncClient, life: Lifecycle
) -> None:
    code = await life.submit("HT.KS")
    [step] = await life.transfers(code)
    url = f"/v1/transfers/{step.transfer_id}/outcome"
    bodies: list[dict[str, Any] | None] = [DONE, REFUSED] * (RACERS // 2)
    answers = await together(http, url, step.agency_code, bodies)
    assert {a.status_code for a in answers} <= {200, 409}, [a.text for a in answers]
    conflicts = [a.json() for a in answers if a.status_code == 409]
    assert conflicts
    assert {c["type"] for c in conflicts} == {"/problems/transfer-already-reported"}
    completed = await life.events(events_pb2.DossierCompleted, code)
    refused = await life.events(events_pb2.DossierRefused, code)
    assert len(completed) + len(refused) == 1
    assert len(await life.statuses(code)) == 3  # received, processing, one decision


async def test_concurrent_hand_overs_and_supplements_change_the_state_once(
    http: httpx.AsyncClient, life: Lifecycle
) -> None:
    code = await life.submit("HT.KS")
    desk = (await life.dossier(code)).receiving_agency_code
    [step] = await life.transfers(code)
    outcome = f"/v1/transfers/{step.transfer_id}/outcome"
    asked = {"outcome": "supplement", "reason": "Thiếu giấy chứng sinh"}
    assert (await together(http, outcome, step.agency_code, [asked]))[0].status_code == 200

    documents = {"documents": [{"name": "Giấy chứng sinh", "reference": "GCS-1"}]}
    supplied = await together(http, f"/v1/dossiers/{code}/supplements", desk, [documents] * RACERS)
    assert Counter(a.status_code for a in supplied) == {200: 1, 409: RACERS - 1}
    [resumed] = [a.json() for a in supplied if a.status_code == 200]
    # The clock moved forward once, not once per racer.
    assert (await life.dossier(code)).due_at.isoformat() == resumed["due_at"].replace("Z", "+00:00")
    assert [r.round for r in await life.transfers(code)] == [1]

    assert (await together(http, outcome, step.agency_code, [DONE]))[0].status_code == 200
    returned = await together(http, f"/v1/dossiers/{code}/result-returned", desk, [None] * RACERS)
    assert Counter(a.status_code for a in returned) == {200: 1, 409: RACERS - 1}
    assert await life.statuses(code) == [2, 4, 5, 4, 9, 10]


async def test_concurrent_acknowledgements_keep_the_first_time(
    http: httpx.AsyncClient, life: Lifecycle
) -> None:
    code = await life.submit("HT.KS")
    [step] = await life.transfers(code)
    url = f"/v1/transfers/{step.transfer_id}/acknowledgement"
    answers = await together(http, url, step.agency_code, [None] * RACERS)
    assert [a.status_code for a in answers] == [200] * RACERS
    assert Counter(a.json()["replayed"] for a in answers) == {True: RACERS - 1, False: 1}
    assert len({a.json()["acknowledged_at"] for a in answers}) == 1


async def test_concurrent_deadline_sweeps_apologise_once(life: Lifecycle) -> None:
    code = await life.submit("HT.KS")
    life.clock.set((await life.dossier(code)).appointment_at + timedelta(minutes=1))
    # Sweeps at once (replicas on one file): each reads the dossier as due before writing.
    await asyncio.gather(*(life.scheduler.fire_due() for _ in range(RACERS // 4)))
    assert len(await life.events(events_pb2.DossierOverdue, code)) == 1
