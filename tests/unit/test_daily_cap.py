"""The day's count of sends against a provider's cap, kept in notify's database: what a
reservation gets, permits given back, the day turning at midnight in Vietnam, and a sender
that gives rows beyond the cap back until then."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.clock import VIETNAM, TestClock
from core.outbox import Outbox
from services.notify.daily_cap import DailyCap
from services.notify.models import notifications, outbox
from services.notify.sender import ChannelSender, pace_for
from services.notify.settings import NotifySettings
from services.notify.status import StatusLog
from tests.unit.test_notify_sender import FakeChannel, seed, sessions

__all__ = ["sessions"]  # the fixture

LATE = datetime(2026, 12, 3, 23, 59, tzinfo=VIETNAM)


async def test_a_reservation_gets_what_is_left_of_the_day(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    clock = TestClock(LATE)
    cap = DailyCap(sessions, "sms", 5, clock)
    assert await cap.reserve(3) == 3
    assert await cap.reserve(3) == 2
    assert await cap.reserve(1) == 0
    # Two permits were not used after all: someone else may have them today.
    await cap.release(2, cap.today())
    assert await cap.reserve(4) == 2
    clock.advance(timedelta(minutes=1))  # midnight in Vietnam: a new day's cap
    assert cap.tomorrow() == datetime(2026, 12, 5, tzinfo=VIETNAM)
    assert await cap.reserve(9) == 5


async def test_the_cap_is_one_count_for_every_replica(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    clock = TestClock(LATE)
    replicas = [DailyCap(sessions, "sms", 10, clock) for _ in range(3)]
    granted = await asyncio.gather(*(r.reserve(4) for r in replicas for _ in range(2)))
    assert sum(granted) == 10
    # Each channel has its own.
    assert await DailyCap(sessions, "email", 10, clock).reserve(4) == 4


async def test_rows_beyond_the_cap_wait_for_midnight(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await seed(sessions, "sms", 5)
    settings = NotifySettings(send_lease_s=30, sms_rate_per_s=1000, sms_daily_cap=3)
    channel = FakeChannel("sms", idempotent=True)
    clock = TestClock(datetime.now(VIETNAM))
    status_log = StatusLog(Outbox(outbox, "dossier.events"))
    engine = sessions.kw["bind"]
    sender = ChannelSender(
        channel, settings, engine, sessions, asyncio.Event(), status_log, clock=clock
    )
    await sender._send_all(await sender._claim())
    assert len(channel.sent) == 3
    async with sessions() as session:
        waiting = (
            await session.execute(
                select(notifications.c.next_attempt_at, notifications.c.attempts).where(
                    notifications.c.id.not_in(channel.sent)
                )
            )
        ).all()
    midnight = datetime.combine(clock.now().date() + timedelta(days=1), datetime.min.time())
    assert [(row.next_attempt_at, row.attempts) for row in waiting] == [
        (midnight.replace(tzinfo=VIETNAM), 0)
    ] * 2


def test_replicas_share_the_rate_and_burst() -> None:
    settings = NotifySettings(sms_rate_per_s=20, sms_burst=5, send_replicas=2)
    assert pace_for("sms", settings) == (10.0, 2)
