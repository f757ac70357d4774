"""Maintenance mode (core/maintenance.py) on an embedded database: the switch is kept in the
service's table, read by every replica through a short cache, holds the work queues, and
makes intake refuse new dossiers with 503 and Retry-After while reads go on."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import AsyncEngine

from core.audit import AUDIT_LOGGER
from core.maintenance import Maintenance, maintenance_table
from core.storage import create_engine, create_tables, session_factory
from core.workqueue import WorkQueue
from services.intake.main import build_app
from services.intake.settings import IntakeSettings
from tests.support.tokens import TestIssuer
from tests.unit.test_intake_api import DESK, assert_problem, dossier

metadata = MetaData()
table = maintenance_table(metadata, "test")
ISSUER = TestIssuer()
OPERATOR = "GATEWAY"


class Ticks:
    """A monotonic clock a test moves by hand: the cache's age."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'maintenance.db'}")
    await create_tables(engine, metadata)
    yield engine
    await engine.dispose()


async def test_off_until_switched_and_kept_in_the_database(engine: AsyncEngine) -> None:
    maintenance = Maintenance(session_factory(engine), table, service="test")
    assert not await maintenance.held()

    state = await maintenance.switch(True, "PostgreSQL upgrade", "gateway-operator")
    assert state.on
    assert state.reason == "PostgreSQL upgrade"
    assert state.changed_at is not None

    # A restarted process (a new component over the same table) finds it on.
    restarted = Maintenance(session_factory(engine), table, service="test")
    found = await restarted.state()
    assert (found.on, found.reason, found.changed_by) == (
        True,
        "PostgreSQL upgrade",
        "gateway-operator",
    )
    await restarted.switch(False, "", "gateway-operator")
    assert not await restarted.held()


async def test_a_replica_sees_the_switch_once_its_cache_is_stale(engine: AsyncEngine) -> None:
    ticks = Ticks()
    here = Maintenance(session_factory(engine), table, service="test", cache_s=2.0, monotonic=ticks)
    replica = Maintenance(
        session_factory(engine), table, service="test", cache_s=2.0, monotonic=ticks
    )
    assert not await replica.held()  # read now, cached for 2 s

    await here.switch(True, "agency system down", "op")
    assert await here.held()  # the replica that switched knows at once
    assert not await replica.held()  # the other still trusts its cache
    ticks.now += 2.5
    assert await replica.held()
    assert (await replica.state(fresh=True)).reason == "agency system down"


async def test_a_queue_held_by_maintenance_claims_nothing_until_it_ends(
    engine: AsyncEngine,
) -> None:
    maintenance = Maintenance(session_factory(engine), table, service="test", cache_s=0)
    await maintenance.switch(True, "", "op")
    batches = 0

    async def batch() -> int:
        nonlocal batches
        batches += 1
        return 0

    queue = WorkQueue(
        "test", batch, wakeup=asyncio.Event(), poll_interval_s=0.01, hold=maintenance.held
    )
    running = asyncio.create_task(queue.run())
    try:
        await asyncio.sleep(0.2)
        assert batches == 0
        await maintenance.switch(False, "", "op")
        for _ in range(100):
            if batches:
                break
            await asyncio.sleep(0.02)
        assert batches > 0
    finally:
        running.cancel()


@pytest.fixture
def intake(tmp_path: Path, routing_catalogue: str) -> Iterator[TestClient]:
    settings = IntakeSettings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'intake.db'}",
        kafka_bootstrap_servers="127.0.0.1:1",
        routing_grpc_target=routing_catalogue,
        journey_timeout_s=0.2,
        maintenance_cache_s=0,
        maintenance_retry_after_s=120,
        **ISSUER.settings(),
    )
    with TestClient(build_app(settings), raise_server_exceptions=False) as client:
        yield client


def test_switching_needs_the_maintenance_scope(intake: TestClient) -> None:
    refused = intake.put(
        "/v1/maintenance",
        json={"on": True, "reason": "x"},
        headers=ISSUER.headers(DESK, "dossiers:submit dossiers:read"),
    )
    body = assert_problem(refused, 403)
    assert body["required_scope"] == "maintenance:manage"
    assert_problem(intake.get("/v1/maintenance"), 401)
    # Any valid token may read the state.
    shown = intake.get("/v1/maintenance", headers=ISSUER.headers(DESK, "dossiers:read"))
    assert shown.status_code == 200, shown.text
    assert shown.json()["on"] is False
    assert shown.json()["service"] == "intake"


def test_intake_refuses_submissions_in_maintenance_and_answers_reads(
    intake: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    desk = ISSUER.headers(DESK, "dossiers:submit dossiers:read")
    accepted = intake.post("/v1/dossiers", json=dossier(), headers=desk)
    assert accepted.status_code == 201, accepted.text
    code = accepted.json()["code"]

    operator = ISSUER.headers(OPERATOR, "maintenance:manage")
    with caplog.at_level(logging.INFO, logger=AUDIT_LOGGER):
        switched = intake.put(
            "/v1/maintenance", json={"on": True, "reason": "database upgrade"}, headers=operator
        )
    assert switched.status_code == 200, switched.text
    assert switched.json()["on"] is True
    [audited] = [json.loads(r.getMessage()) for r in caplog.records if r.name == AUDIT_LOGGER]
    assert audited["event"] == "maintenance.switched"
    assert (audited["on"], audited["reason"], audited["object"]) == (
        True,
        "database upgrade",
        "intake",
    )

    refused = intake.post("/v1/dossiers", json=dossier(), headers=desk)
    body = assert_problem(refused, 503)
    assert body["type"] == "/problems/maintenance"
    assert body["detail"] == "database upgrade"
    assert refused.headers["retry-after"] == "120"
    assert intake.get(f"/v1/dossiers/{code}", headers=desk).status_code == 200

    ready = intake.get("/health/ready").json()
    assert ready["maintenance"]["reason"] == "database upgrade"

    intake.put("/v1/maintenance", json={"on": False}, headers=operator)
    assert intake.post("/v1/dossiers", json=dossier(), headers=desk).status_code == 201
