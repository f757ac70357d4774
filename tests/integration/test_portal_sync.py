"""Every national status change reaches the national portal once, with the portal's
fields, even when the portal fails for a while; one that keeps failing is dead-lettered."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from core.events import Event, new_event
from devstack.kafka import KafkaBroker
from devstack.stack import Stack
from gateway.v1 import dossier_pb2, events_pb2
from tests.support.flows import eventually, steer_sandbox
from tests.support.kafka import publish, stamp


def status_changed(code: str, status: int, changed_at: datetime) -> Event:
    change = events_pb2.DossierStatusChanged(
        dossier_code=code,
        procedure_code="LT.KS-TT-BHYT",
        status=status,  # type: ignore[arg-type]
        agency_code="000.22.31.H22",
        changed_at=stamp(changed_at),
        received_at=stamp(datetime(2026, 11, 20, 1, 30, tzinfo=UTC)),
        due_at=stamp(datetime(2026, 11, 27, 10, 0, tzinfo=UTC)),
    )
    if status == dossier_pb2.DOSSIER_STATUS_DECIDED:
        change.finished_at.CopyFrom(change.changed_at)
    return new_event(change, source="/tests", dossier_code=code)


def portal(stack: Stack, code: str) -> list[dict[str, Any]]:
    response = httpx.get(
        f"{stack.url('sandbox')}/portal/dossiers", params={"dossier_code": code}, timeout=5
    )
    response.raise_for_status()
    listed: list[dict[str, Any]] = response.json()
    return listed


def portal_behaves(stack: Stack, **behaviour: Any) -> None:
    steer_sandbox(stack, "portal", **behaviour)


async def push_rows(database_url: str, code: str) -> list[dict[str, Any]]:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            result = await conn.execute(
                text("SELECT * FROM routing_portal_push WHERE dossier_code = :code"),
                {"code": code},
            )
            return [dict(row._mapping) for row in result]
    finally:
        await engine.dispose()


@pytest.fixture
def sandbox_portal(stack: Stack) -> Iterator[Stack]:
    yield stack
    portal_behaves(stack, fail_next=0)


def test_status_changes_reach_the_portal_once_even_when_it_fails_for_a_while(
    sandbox_portal: Stack, kafka: KafkaBroker, database_url: str
) -> None:
    code = f"000.00.01.H22-261120-{uuid.uuid4().hex[:6]}"
    portal_behaves(sandbox_portal, fail_next=3, fail_status=503)
    processing = status_changed(
        code, dossier_pb2.DOSSIER_STATUS_PROCESSING, datetime(2026, 11, 20, 2, 0, tzinfo=UTC)
    )
    decided = status_changed(
        code, dossier_pb2.DOSSIER_STATUS_DECIDED, datetime(2026, 11, 24, 9, 15, 30, tzinfo=UTC)
    )
    # The processing change twice, as a redelivery or a replayed producer would send it.
    publish(kafka.bootstrap_servers, [processing, decided, processing])

    pushed = eventually(
        lambda: len(portal(sandbox_portal, code)) == 2 and portal(sandbox_portal, code), 60
    )
    # In the order of the changes, although the first one failed three times.
    assert [p["fields"]["TrangThaiHoSo"] for p in pushed] == [4, 9]
    by_status = {p["fields"]["TrangThaiHoSo"]: p["fields"] for p in pushed}
    assert by_status[4] == {
        "MaHoSo": code,
        "MaTTHC": "LT.KS-TT-BHYT",
        "TrangThaiHoSo": 4,
        "NgayTiepNhan": "20261120083000",
        "NgayHenTra": "20261127170000",
        "NgayKetThucXuLy": "",
        "DonViXuLy": "000.22.31.H22",
        "NgayCapNhat": "20261120090000",
        "LyDo": "",
    }
    assert by_status[9]["NgayKetThucXuLy"] == "20261124161530"
    rows = asyncio.run(push_rows(database_url, code))
    assert sorted(r["status"] for r in rows) == ["sent", "sent"]
    assert sorted(r["attempts"] for r in rows) == [1, 4]


def test_a_portal_that_keeps_failing_leaves_a_dead_letter(
    sandbox_portal: Stack, kafka: KafkaBroker, database_url: str
) -> None:
    code = f"000.00.01.H22-261120-{uuid.uuid4().hex[:6]}"
    portal_behaves(sandbox_portal, fail_next=1000, fail_status=500)
    publish(
        kafka.bootstrap_servers,
        [status_changed(code, dossier_pb2.DOSSIER_STATUS_RECEIVED, datetime.now(UTC))],
    )

    def dead() -> list[dict[str, Any]]:
        rows = asyncio.run(push_rows(database_url, code))
        return [r for r in rows if r["status"] == "dead_lettered"]

    [row] = eventually(dead, 60)
    assert row["attempts"] == 6  # PORTAL_SYNC_MAX_ATTEMPTS
    assert row["last_error"] == "HTTP 500"
    assert portal(sandbox_portal, code) == []
