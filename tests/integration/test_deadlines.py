"""Deadlines on PostgreSQL with a test clock: overdue the moment a dossier passes due (across
a weekend and Tết), the apology of form 04, and a supplement stopping the clock."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta

import pytest

from core.auth import AgencyPrincipal
from core.calendar import VIETNAM
from devstack.postgres import ensure_postgres
from gateway.v1 import events_pb2
from services.routing.outcomes import supplement
from tests.support.lifecycle import Lifecycle, instant, until

ONE_STEP = "HT.KS"  # birth registration: one step, one working day
SECOND = timedelta(seconds=1)
Opener = Callable[[datetime], Awaitable[Lifecycle]]


def at(*args: int) -> datetime:
    return datetime(*args, tzinfo=VIETNAM)


@pytest.fixture
async def open_lifecycle(database_url: str) -> AsyncIterator[Opener]:
    """Opens Lifecycles on a fresh database of the session's PostgreSQL server."""
    url = ensure_postgres(f"lifecycle_{uuid.uuid4().hex[:12]}")
    opened: list[Lifecycle] = []

    async def open_at(now: datetime) -> Lifecycle:
        lifecycle = await Lifecycle.open(url, now)
        opened.append(lifecycle)
        return lifecycle

    yield open_at
    for lifecycle in opened:
        await lifecycle.close()


async def overdue_events(lifecycle: Lifecycle, code: str) -> list[events_pb2.DossierOverdue]:
    return await lifecycle.events(events_pb2.DossierOverdue, code)


async def test_due_across_a_weekend_fires_at_office_close_on_monday(open_lifecycle: Opener) -> None:
    life = await open_lifecycle(at(2026, 11, 27, 10, 0))  # Friday
    code = await life.submit(ONE_STEP)
    due = at(2026, 11, 30, 17, 0)  # Monday, office close
    assert (await life.dossier(code)).due_at == due
    assert await life.statuses(code) == [2, 4]

    runner = asyncio.create_task(life.scheduler.run())
    try:
        life.clock.set(due - SECOND)
        assert await life.scheduler.fire_due() == 0
        assert await overdue_events(life, code) == []

        life.clock.set(due)  # wakes the sleeping scheduler
        [overdue] = await until(lambda: overdue_events(life, code))
    finally:
        runner.cancel()
    assert instant(overdue, "due_at") == due
    # The new appointment: two working days after the lapse (Tue 1, Wed 2 December).
    assert instant(overdue, "new_due_at") == at(2026, 12, 2, 17, 0)
    assert overdue.agency_code == "000.21.31.H22"
    assert "UBND xã Tân Phong" in overdue.reason
    assert "xin lỗi" in overdue.reason
    dossier = await life.dossier(code)
    assert dossier.overdue_at == due
    assert dossier.appointment_at == at(2026, 12, 2, 17, 0)
    [step] = await life.transfers(code)
    assert step.overdue_at == due

    # Exactly once: nothing fires again until the new appointment passes.
    life.clock.set(at(2026, 12, 2, 16, 59))
    assert await life.scheduler.fire_due() == 0
    assert len(await overdue_events(life, code)) == 1


async def test_due_across_tet_2027(open_lifecycle: Opener) -> None:
    # Tết 2027 (holidays package): Thu 4 to Wed 10 February are days off.
    life = await open_lifecycle(at(2027, 2, 3, 9, 30))
    code = await life.submit(ONE_STEP)
    due = at(2027, 2, 11, 17, 0)
    assert (await life.dossier(code)).due_at == due

    life.clock.set(at(2027, 2, 10, 23, 59))
    assert await life.scheduler.fire_due() == 0
    life.clock.set(due - SECOND)
    assert await life.scheduler.fire_due() == 0
    assert await overdue_events(life, code) == []
    life.clock.set(due)
    assert await life.scheduler.fire_due() == 1
    [overdue] = await overdue_events(life, code)
    assert instant(overdue, "due_at") == due
    assert instant(overdue, "new_due_at") == at(2027, 2, 15, 17, 0)  # Fri 12, Mon 15


async def test_supplement_stops_the_clock_and_moves_the_due_time(open_lifecycle: Opener) -> None:
    life = await open_lifecycle(at(2026, 11, 30, 10, 0))  # Monday
    code = await life.submit(ONE_STEP)
    assert (await life.dossier(code)).due_at == at(2026, 12, 1, 17, 0)
    [step] = await life.transfers(code)

    life.clock.set(at(2026, 12, 1, 10, 0))  # Tuesday: 7 office hours left
    holder = AgencyPrincipal("client-of-holder", step.agency_code, frozenset())
    answer = await life.journeys.report_outcome(
        step.transfer_id, "supplement", "Thiếu bản sao giấy chứng sinh", holder
    )
    assert answer["status"] == "supplement_requested"
    [requested] = await life.events(events_pb2.SupplementRequested, code)
    assert requested.reason == "Thiếu bản sao giấy chứng sinh"

    # Long past the original due time, but the clock stands still: no overdue.
    life.clock.set(at(2026, 12, 3, 12, 0))
    assert await life.scheduler.fire_due() == 0
    assert await overdue_events(life, code) == []
    assert (await life.dossier(code)).next_deadline_at is None

    desk = (await life.dossier(code)).receiving_agency_code
    resumed = await supplement(
        life.journeys,
        code,
        [{"name": "Giấy chứng sinh", "reference": "GCS-1"}],
        "",
        AgencyPrincipal("client-of-desk", desk, frozenset()),
    )
    # Stopped Tue 10:00 → Thu 12:00 = 7 + 9 + 4 office hours; 7 hours remain from Thu 12:00.
    new_due = at(2026, 12, 4, 10, 0)
    assert resumed["due_at"] == new_due
    assert await life.statuses(code) == [2, 4, 5, 4]
    [step] = await life.transfers(code)
    assert (step.status, step.round, step.attempts) == ("pending", 1, 0)
    assert step.due_at == new_due
    assert step.supplement_s == (at(2026, 12, 3, 12, 0) - at(2026, 12, 1, 10, 0)).total_seconds()

    life.clock.set(new_due - SECOND)
    assert await life.scheduler.fire_due() == 0
    life.clock.set(new_due)
    assert await life.scheduler.fire_due() == 1
    [overdue] = await overdue_events(life, code)
    assert instant(overdue, "due_at") == new_due


async def test_two_schedulers_fire_a_deadline_once(open_lifecycle: Opener) -> None:
    first = await open_lifecycle(at(2026, 11, 27, 10, 0))
    codes = [await first.submit(ONE_STEP) for _ in range(20)]
    second = await open_lifecycle(at(2026, 11, 30, 17, 0))
    first.clock.set(at(2026, 11, 30, 17, 0))
    fired = await asyncio.gather(first.scheduler.fire_due(), second.scheduler.fire_due())
    assert sum(fired) == 20
    for code in codes:
        assert len(await overdue_events(first, code)) == 1
