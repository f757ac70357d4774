"""Statutory deadlines: a dossier is flagged overdue the moment it passes its appointment.

The state lives in the database, not in timers: each open dossier carries the next instant
the scheduler must look at it (`next_deadline_at`: its appointment or an open step's due
time, whichever comes first; NULL while the clock is stopped or the dossier is finished).
The scheduler sleeps until the earliest of them, or until a commit changes them, then
claims the due rows FOR UPDATE SKIP LOCKED, so replicas never fire the same deadline, and
flags, apologises and re-arms in the same transaction as the events: a crash before the
commit fires again after restart, a crash after it never fires twice.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import cast

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from core.calendar import WorkingCalendar
from core.catalogue import Catalogue
from core.clock import Clock
from core.events import new_event
from core.outbox import Outbox
from core.retry import TRANSIENT_ERRORS
from core.storage import rowcount, supports_skip_locked
from gateway.v1 import events_pb2
from services.routing import queries
from services.routing.lifecycle import SOURCE, State
from services.routing.models import CLOSED_TRANSFERS, apologies, journeys, transfers
from services.routing.rows import JourneyRow, TransferRow

log = logging.getLogger(__name__)

WATCHED_STATES = (State.RECEIVED.value, State.PROCESSING.value, State.FEES_DUE.value)


async def rearm(session: AsyncSession, code: str) -> None:
    """Recompute the dossier's next deadline from its row and its open steps."""
    dossier = (
        await session.execute(
            select(journeys.c.status, journeys.c.paused_at, journeys.c.appointment_at).where(
                journeys.c.code == code
            )
        )
    ).one()
    next_at: datetime | None = None
    if dossier.status in WATCHED_STATES and dossier.paused_at is None:
        step_due = await session.scalar(
            select(func.min(transfers.c.due_at)).where(
                transfers.c.dossier_code == code,
                transfers.c.status.notin_(CLOSED_TRANSFERS),
                transfers.c.overdue_at.is_(None),
            )
        )
        candidates = [t for t in (dossier.appointment_at, step_due) if t is not None]
        next_at = min(candidates) if candidates else None
    await session.execute(
        journeys.update().where(journeys.c.code == code).values(next_deadline_at=next_at)
    )


def apology_reason(agency_name: str) -> str:
    # Form 04 (Circular 01/2018/TT-VPCP): the agency at fault explains the delay.
    return (
        f"{agency_name} chưa hoàn thành giải quyết hồ sơ đúng thời hạn do khối lượng hồ sơ "
        "cần thẩm định, xác minh; chúng tôi xin lỗi ông/bà và hẹn trả kết quả vào ngày mới."
    )


class DeadlineScheduler:
    def __init__(
        self,
        engine: AsyncEngine,
        sessions: async_sessionmaker[AsyncSession],
        outbox: Outbox,
        catalogue: Catalogue,
        calendar: WorkingCalendar,
        clock: Clock,
        *,
        apology_days: int,
        batch_size: int = 200,
        longest_sleep_s: float = 30.0,
    ) -> None:
        self._engine = engine
        self._sessions = sessions
        self._outbox = outbox
        self._catalogue = catalogue
        self._calendar = calendar
        self._clock = clock
        self._apology_days = apology_days
        self._batch_size = batch_size
        # Bounds the sleep so a deadline armed by a peer replica is seen even if that
        # replica dies before its own scheduler fires it.
        self._longest_sleep_s = longest_sleep_s
        # Set after a commit that armed or moved a deadline.
        self.wakeup = asyncio.Event()

    async def run(self) -> None:
        while True:
            self.wakeup.clear()
            try:
                fired = await self.fire_due()
                if fired >= self._batch_size:
                    continue
                earliest = await self.earliest()
            except TRANSIENT_ERRORS as exc:
                log.warning("deadline scheduler waiting for the database: %r", exc)
                await asyncio.sleep(1.0)
                continue
            await self._clock.sleep_until(earliest, self.wakeup, self._longest_sleep_s)

    async def earliest(self) -> datetime | None:
        async with self._sessions() as session:
            value: datetime | None = await session.scalar(
                select(func.min(journeys.c.next_deadline_at))
            )
        return value

    async def fire_due(self) -> int:
        """Flag every deadline that has passed; returns how many dossiers were looked at."""
        now = self._clock.now()
        query = (
            select(journeys)
            .where(journeys.c.next_deadline_at <= now)
            .order_by(journeys.c.next_deadline_at)
            .limit(self._batch_size)
        )
        if supports_skip_locked(self._engine):
            query = query.with_for_update(skip_locked=True)
        async with self._sessions.begin() as session:
            rows = cast("list[JourneyRow]", (await session.execute(query)).all())
            if not rows:
                return 0
            steps = await queries.open_steps(session, [r.code for r in rows])
            for row in rows:
                await self._fire(
                    session, row, [s for s in steps if s.dossier_code == row.code], now
                )
        return len(rows)

    async def _fire(
        self, session: AsyncSession, dossier: JourneyRow, steps: list[TransferRow], now: datetime
    ) -> None:
        late_steps = [s for s in steps if s.overdue_at is None and s.due_at <= now]
        if late_steps:
            # Conditional like every transition: a step closed or flagged since it was read
            # (SQLite reads before the write lock) keeps its state.
            await session.execute(
                transfers.update()
                .where(
                    transfers.c.transfer_id.in_([s.transfer_id for s in late_steps]),
                    transfers.c.overdue_at.is_(None),
                    transfers.c.status.notin_(CLOSED_TRANSFERS),
                )
                .values(overdue_at=now)
            )
        if dossier.appointment_at is not None and dossier.appointment_at <= now:
            await self._apologise(session, dossier, steps, now)
        await rearm(session, dossier.code)

    async def _apologise(
        self, session: AsyncSession, dossier: JourneyRow, steps: list[TransferRow], now: datetime
    ) -> None:
        assert dossier.appointment_at is not None  # _fire apologises only for one passed
        # The agency holding the dossier now answers for the delay; before any step, the desk.
        agency_code = steps[0].agency_code if steps else dossier.receiving_agency_code
        agency = self._catalogue.agencies.get(agency_code)
        reason = apology_reason(agency.name if agency else agency_code)
        new_due_at = self._calendar.add_working_days(now, self._apology_days)
        # The flag first, on the appointment and state read: if the dossier was finished,
        # paused or already apologised for since (SQLite: read before the write lock), no
        # second apology and no apology for a decided dossier.
        flagged = await session.execute(
            journeys.update()
            .where(
                journeys.c.code == dossier.code,
                journeys.c.appointment_at == dossier.appointment_at,
                journeys.c.status.in_(WATCHED_STATES),
                journeys.c.paused_at.is_(None),
            )
            .values(overdue_at=dossier.overdue_at or now, appointment_at=new_due_at)
        )
        if rowcount(flagged) != 1:
            return
        await session.execute(
            apologies.insert().values(
                dossier_code=dossier.code,
                agency_code=agency_code,
                due_at=dossier.appointment_at,
                reason=reason,
                new_due_at=new_due_at,
                issued_at=now,
            )
        )
        overdue = events_pb2.DossierOverdue(
            dossier_code=dossier.code, agency_code=agency_code, reason=reason
        )
        overdue.due_at.FromDatetime(dossier.appointment_at)
        overdue.new_due_at.FromDatetime(new_due_at)
        event = new_event(overdue, source=SOURCE, dossier_code=dossier.code)
        await self._outbox.put(session, event, trace=dossier.trace)
        log.info("dossier %s overdue at %s; apology from %s", dossier.code, now, agency_code)
